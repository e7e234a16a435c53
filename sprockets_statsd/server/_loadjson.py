"""The load sink's JSON answer, rendered with the text of each name kept.

Strategy: ``/N`` answers ``{"last_frame_time":T,"Stat":{name:value,…}}``
with the names sorted and whole numbers written without ``.0``.  With
hundreds of thousands of counters, sorting the names and writing them as
JSON cost more than the values do, and both depend only on which names
there are, which seldom changes from one flush to the next.  A
:class:`Layout` keeps, for one list of names, the order in which they are
shown and their JSON text (``"name":``); each answer for the same names
then only writes the values, in C (``float.__repr__`` without a trailing
``.0``), and writes the rare values whose JSON is not that (``-0.0``, huge
whole numbers, non-finite values) one by one, as :func:`number` says.

When the names do change, they mostly change by a few: counters first seen
are appended to the aggregator's keys, and a name leaves once no frame of
the window has it.  A new layout is then made from the latest one kept
(:meth:`Layout.changed`): the names that left are taken out, the new ones
inserted where they sort, and only those get their JSON text written; the
same bytes as laying every name out again.
"""

from __future__ import annotations

import array
import bisect
import itertools
import json
import math
import operator
from collections.abc import Sequence
from json.encoder import encode_basestring_ascii

from sprockets_statsd.server._recent import Recent
from sprockets_statsd.server._window import Window

__all__ = ['MAX_LAYOUTS', 'Layout', 'Layouts', 'number', 'prepare', 'render']

#: Layouts kept.  Each holds the text of every name (about 40 MB for 500k
#: names); windows of different length usually show the same names, and a
#: dashboard asks for one or two.
MAX_LAYOUTS = 2

# Whole numbers below this are exact in a double and written as integers.
_EXACT = 2.0**53
# A layout is changed into another (Layout.changed) while the names
# inserted are at most this fraction of those kept; beyond it, inserting
# them one by one costs about what sorting every name does.
_INSERTED_SHARE = 8
# Entries written at a time: the pieces of a chunk are short-lived, so the
# memory a report needs beyond its result stays a few MB.
_CHUNK = 65_536


def number(value: float) -> float | int | None:
    """JSON for a value: whole numbers without ``.0``, no NaN or infinity.

    :param value: a float, or an int (a set's size)
    """
    value = float(value)
    if not math.isfinite(value):
        return None
    if value.is_integer() and abs(value) < _EXACT:
        return int(value)
    return value


class Layout:
    """How the names of one report are shown: sorted, as JSON text.

    :param keys: the counters' keys, in the order of their totals
    :param others: the other names (timers, gauges, sets), in the order of
        their values; a name that is also a counter's shows this value
    """

    #: The names, sorted.
    names: list[str]
    #: Where each name's value is in ``totals + other values``: a key's
    #: counted from the start, another name's from the end (so that keys
    #: appended move no other name).
    places: array.array[int]
    #: Each name's JSON text and a colon.
    texts: list[str]

    def __init__(self, keys: list[str], others: list[str]) -> None:
        self._lay_out(_places(keys, others))

    def _lay_out(self, places: dict[str, int]) -> None:
        self.names = sorted(places)
        self.places = array.array('q', map(places.__getitem__, self.names))
        self.texts = _texts(self.names)

    @classmethod
    def changed(
        cls, base: Layout, base_keys: list[str], base_others: list[str],
        keys: list[str], others: list[str],
    ) -> Layout:
        """The layout of `keys` and `others`, made from that of other names.

        The same as ``Layout(keys, others)``, made by taking the names that
        left out of `base` and inserting the new ones where they sort (only
        they get their text written), which costs a fraction of sorting
        them all when few changed.  Keys appended to `base_keys`, the
        others the same, are placed without looking any other name up.

        :param base: the layout of `base_keys` and `base_others`
        :param base_keys: the counters' keys that `base` lays out
        :param base_others: the other names that `base` lays out
        :param keys: the counters' keys to lay out
        :param others: the other names to lay out
        """
        layout = cls.__new__(cls)
        names = base.names
        if others == base_others and keys[:len(base_keys)] == base_keys:
            # New keys; one that is another name's already shows that.
            new = [(name, place) for name, place
                   in sorted(zip(keys[len(base_keys):], itertools.count(len(base_keys))))
                   if not _holds(names, name)]
            if len(new) > len(names) // _INSERTED_SHARE:
                layout._lay_out(_places(keys, others))
            else:
                layout.names, layout.places, layout.texts = _inserted(
                    names, base.places, base.texts, new)
            return layout
        places = _places(keys, others)
        there = list(map(places.__contains__, names))
        texts = base.texts
        if not all(there):  # names that left
            names = list(itertools.compress(names, there))
            texts = list(itertools.compress(texts, there))
        if len(places) - len(names) > len(names) // _INSERTED_SHARE:
            layout._lay_out(places)
            return layout
        new = []
        if len(places) > len(names):
            old = set(names)
            new = sorted((name, 0) for name in places if name not in old)
        # The places, all looked up again: keys that left move the others.
        layout.names, _, layout.texts = _inserted(names, None, texts, new)
        layout.places = array.array('q', map(places.__getitem__, layout.names))
        return layout


def _places(keys: list[str], others: list[str]) -> dict[str, int]:
    """Each name's place in ``totals + other values``, others counted from
    the end; a later name wins, as in Window.stat."""
    places = dict(zip(keys, range(len(keys)), strict=True))
    places.update(zip(others, itertools.count(-len(others))))
    return places


def _texts(names: list[str]) -> list[str]:
    # json.dumps writes keys with this same function (ensure_ascii).
    return list(map(operator.add, map(encode_basestring_ascii, names), itertools.repeat(':')))


def _holds(names: list[str], name: str) -> bool:
    """Whether sorted `names` holds `name`."""
    at = bisect.bisect_left(names, name)
    return at < len(names) and names[at] == name


def _inserted(
    names: list[str], places: array.array[int] | None, texts: list[str],
    new: list[tuple[str, int]],
) -> tuple[list[str], array.array[int], list[str]]:
    """Sorted `names` with their places and texts, and `new` names (sorted,
    none of `names`) with their places inserted where they sort.

    :param places: none to leave the places out (an empty array back)
    """
    out_places = array.array('q')
    if not new:
        return names, places if places is not None else out_places, texts
    new_texts = _texts([name for name, _ in new])
    out_names: list[str] = []
    out_texts: list[str] = []
    start = 0
    for (name, place), text in zip(new, new_texts, strict=True):
        at = bisect.bisect_left(names, name, start)
        out_names += names[start:at]
        out_names.append(name)
        out_texts += texts[start:at]
        out_texts.append(text)
        if places is not None:
            out_places += places[start:at]
            out_places.append(place)
        start = at
    out_names += names[start:]
    out_texts += texts[start:]
    if places is not None:
        out_places += places[start:]
    return out_names, out_places, out_texts


class Layouts:
    """The latest :data:`MAX_LAYOUTS` layouts; safe to use from threads."""

    def __init__(self) -> None:
        # By the names laid out: the others first, fewer to compare.
        self._kept: Recent[tuple[list[str], list[str]], Layout] = Recent(MAX_LAYOUTS)

    def get(self, keys: list[str], others: list[str]) -> Layout:
        """The layout of these names, made anew if none kept fits.

        Made from the latest layout kept (:meth:`Layout.changed`) when
        there is one, else by sorting every name.

        :param keys: the counters' keys
        :param others: the other names
        """
        layout = self._kept.get((others, keys))
        if layout is None:
            kept = self._kept.items()
            if kept:
                (base_others, base_keys), base = kept[0]
                layout = Layout.changed(base, base_keys, base_others, keys, others)
            else:
                layout = Layout(keys, others)
            self._kept.keep((others, keys), layout)
        return layout


def prepare(window: Window, layouts: Layouts) -> None:
    """Make and keep what the answers for `window` share; for a worker thread.

    The sum of its complete frames (see :meth:`.Window.keep_sums`) and the
    layout of its names, so that a first answer later in the same frame
    only adds the newest frame and writes the values.

    :param window: the frames to report
    :param layouts: where the layout is kept
    """
    keys, _ = window.counter_totals()
    layouts.get(keys, list(window.other_stat()))


def render(window: Window, last_frame_time: int, layouts: Layouts) -> bytes:
    """The load report of `window` as compact JSON; for a worker thread.

    The same bytes as ``json.dumps`` with ``separators=(',', ':')`` of
    ``{"last_frame_time": …, "Stat": {name: number(value) …}}``, names
    sorted.

    :param window: the frames to report
    :param last_frame_time: the start of the current frame
    :param layouts: layouts kept from earlier reports, and for later ones
    """
    keys, totals = window.counter_totals()
    others = window.other_stat()
    layout = layouts.get(keys, list(others))
    values = totals + list(others.values())
    chunks = []
    for start in range(0, len(layout.places), _CHUNK):
        shown = list(map(values.__getitem__, layout.places[start:start + _CHUNK]))
        chunks.append(','.join(map(operator.add, layout.texts[start:start + _CHUNK],
                                   _value_texts(shown))))
    return ''.join(
        ['{"last_frame_time":', str(last_frame_time), ',"Stat":{', ','.join(chunks), '}}']
    ).encode('ascii')


def _value_texts(values: Sequence[float]) -> list[str]:
    """The JSON of :func:`number` for each value."""
    texts = list(map(str.removesuffix, map(repr, values), itertools.repeat('.0')))
    whole = sum(values)
    # Finite, every whole number exact, and no -0.0 (whose sign was lost).
    if (whole - whole == 0 and max(map(abs, values), default=0.0) < _EXACT
            and '-0' not in texts):
        return texts
    for i, value in enumerate(values):
        if not -_EXACT < value < _EXACT or texts[i] == '-0':
            texts[i] = json.dumps(number(value))
    return texts
