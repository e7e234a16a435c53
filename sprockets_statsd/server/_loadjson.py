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
"""

from __future__ import annotations

import array
import itertools
import json
import math
import operator
from collections.abc import Sequence
from json.encoder import encode_basestring_ascii

from sprockets_statsd.server._recent import Recent
from sprockets_statsd.server._window import Window

__all__ = ['MAX_LAYOUTS', 'Layout', 'Layouts', 'number', 'render']

#: Layouts kept.  Each holds the text of every name (about 40 MB for 500k
#: names); windows of different length usually show the same names, and a
#: dashboard asks for one or two.
MAX_LAYOUTS = 2

# Whole numbers below this are exact in a double and written as integers.
_EXACT = 2.0**53
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

    def __init__(self, keys: list[str], others: list[str]) -> None:
        # Each name's place in the counters' totals followed by the others'
        # values; a later name wins, as in Window.stat.
        places = dict(zip(keys, range(len(keys)), strict=True))
        places.update(zip(others, itertools.count(len(keys))))
        names = sorted(places)
        self.places = array.array('q', map(places.__getitem__, names))
        # json.dumps writes keys with this same function (ensure_ascii).
        self.texts = list(map(operator.add, map(encode_basestring_ascii, names),
                              itertools.repeat(':')))


class Layouts:
    """The latest :data:`MAX_LAYOUTS` layouts; safe to use from threads."""

    def __init__(self) -> None:
        # By the names laid out: the others first, fewer to compare.
        self._kept: Recent[tuple[list[str], list[str]], Layout] = Recent(MAX_LAYOUTS)

    def get(self, keys: list[str], others: list[str]) -> Layout:
        """The layout of these names, made anew if none kept fits.

        :param keys: the counters' keys
        :param others: the other names
        """
        layout = self._kept.get((others, keys))
        if layout is None:
            layout = Layout(keys, others)
            self._kept.keep((others, keys), layout)
        return layout


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
