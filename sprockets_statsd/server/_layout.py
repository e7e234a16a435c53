"""The names of a load report, sorted and written as JSON once, then changed.

Strategy: sorting hundreds of thousands of names and writing each as JSON
costs more than a report's values do, and depends only on which names
there are.  A :class:`Layout` keeps, for one list of names, their sorted
order, where each one's value is, and their JSON text (``"name":``).

When the names do change, they mostly change by a few: counters first seen
are appended to the aggregator's keys, a key leaves once no frame of the
window has it, a timer or gauge comes or goes.  A new layout is then made
from the latest one kept (:meth:`Layout.changed`): the names that changed
are taken out and put back where they sort, only the new ones get their
text written, and the keys after those that left move down a place each,
all in C; the same layout as sorting every name again.  With many changes,
or keys in another order, every name is laid out anew.
"""

from __future__ import annotations

import array
import bisect
import functools
import itertools
import operator
from json.encoder import encode_basestring_ascii

from sprockets_statsd.server._recent import Recent

__all__ = ['MAX_LAYOUTS', 'Layout', 'Layouts', 'Order', 'sort_places']

#: Layouts kept.  Each holds the text of every name (about 40 MB for 500k
#: names); windows of different length usually show the same names, and a
#: dashboard asks for one or two.
MAX_LAYOUTS = 2

# A layout is changed into another (Layout.changed) while the names that
# change are at most this fraction of those kept, or _CHANGED_LEAST names
# in a small layout; beyond that, moving them one by one costs about what
# sorting every name does.
_CHANGED_SHARE = 8
_CHANGED_LEAST = 64


#: A report's names sorted, each one's place (see :attr:`Layout.places`),
#: and those shadowed: a layout without the text of its names, which costs
#: most of the time and little of the memory of one.
Order = tuple[list[str], 'array.array[int]', frozenset[str]]


def sort_places(keys: list[str], others: list[str]) -> Order:
    """The names of `keys` and `others` sorted, with their places.

    :param keys: the counters' keys, in the order of their totals
    :param others: the other names, in the order of their values
    """
    # Every name found by its place: ``keys + others`` indexed by a place
    # gives a key's name for 0 and up, another name's for the negative
    # places (counted from the end).  Sorting the places by their names
    # sorts the names, with no dictionary of 500k names; the sort is
    # stable and the other names' places come first, so a name that is a
    # key and another name too has its two places side by side, the other
    # name's (which shows) first.
    named = keys + others
    places = sorted(range(-len(others), len(keys)), key=named.__getitem__)
    names = list(map(named.__getitem__, places))
    twice = list(itertools.compress(
        itertools.count(1), map(operator.eq, itertools.islice(names, 1, None), names)))
    shadowed = frozenset(map(names.__getitem__, twice))
    names, kept_places, _ = _without(names, array.array('q', places), names, twice)
    return names, kept_places, shadowed


class Layout:
    """How the names of one report are shown: sorted, as JSON text.

    :param keys: the counters' keys, in the order of their totals
    :param others: the other names (timers, gauges, sets), in the order of
        their values; a name that is also a counter's shows this value
    :param order: their :func:`sort_places`, if made already
    """

    #: The names, sorted.
    names: list[str]
    #: Where each name's value is in ``totals + other values``: a key's
    #: counted from the start, another name's from the end (so that keys
    #: appended move no other name).
    places: array.array[int]
    #: Each name's JSON text and a colon.
    texts: list[str]
    #: The names that are a key and another name too (which shows).
    shadowed: frozenset[str]

    def __init__(self, keys: list[str], others: list[str], order: Order | None = None) -> None:
        self._lay_out(sort_places(keys, others) if order is None else order)

    def _lay_out(self, order: Order) -> None:
        self.names, self.places, self.shadowed = order
        self.texts = _texts(self.names)

    @classmethod
    def changed(
        cls, base: Layout, base_keys: list[str], base_others: list[str],
        keys: list[str], others: list[str],
    ) -> Layout:
        """The layout of `keys` and `others`, made from that of other names.

        The same as ``Layout(keys, others)``; made from `base` when `keys`
        are `base_keys` less a few, in the same order, with a few appended,
        and few other names changed, for a fraction of the cost.

        :param base: the layout of `base_keys` and `base_others`
        :param base_keys: the counters' keys that `base` lays out
        :param base_others: the other names that `base` lays out
        :param keys: the counters' keys to lay out
        :param others: the other names to lay out
        """
        layout = cls.__new__(cls)
        bound = len(base.names) // _CHANGED_SHARE + _CHANGED_LEAST
        if others == base_others and keys[:len(base_keys)] == base_keys:
            # Keys appended: no place moves.  A new key that is another
            # name already shows that name's value, as it did.
            new = sorted(zip(keys[len(base_keys):], itertools.count(len(base_keys))))
            held = {name for name, _ in new if _find(base.names, name) >= 0}
            if len(new) - len(held) <= bound:
                layout.names, layout.places, layout.texts = _inserted(
                    base.names, base.places, base.texts,
                    [entry for entry in new if entry[0] not in held])
                layout.shadowed = base.shadowed | held
                return layout
        else:
            moved = _moved(base, base_keys, base_others, keys, others, bound)
            if moved is not None:
                layout.names, layout.places, layout.texts, layout.shadowed = moved
                return layout
        layout._lay_out(sort_places(keys, others))
        return layout


def _moved(
    base: Layout, base_keys: list[str], base_others: list[str],
    keys: list[str], others: list[str], bound: int,
) -> tuple[list[str], array.array[int], list[str], frozenset[str]] | None:
    """:meth:`Layout.changed` beyond keys appended; none when more than
    `bound` names change or `keys` are not `base_keys` less some plus some."""
    walked = _walk(base_keys, keys, bound)
    if walked is None:
        return None
    gone, appended = walked
    gone_names = {base_keys[i] for i in gone}
    changing = gone_names.union(appended, base_others, others)
    if len(changing) > bound:
        return None
    # Every name that may change is taken out, then put back where it sorts.
    at = sorted(i for i in map(functools.partial(_find, base.names), changing) if i >= 0)
    old_places = {base.names[i]: base.places[i] for i in at}
    names, places, texts = _without(base.names, base.places, base.texts, at)
    if gone:  # the keys after those gone move down (other names are < 0)
        places = array.array('q', map(
            operator.sub, places, map(bisect.bisect_right, itertools.repeat(gone), places)))
    other_places = dict(zip(others, itertools.count(-len(others))))
    appended_places = dict(zip(appended, itertools.count(len(keys) - len(appended))))
    new = []
    shadowed = []
    for name in sorted(changing):
        key = _key_place(name, base, old_places, gone, gone_names, appended_places)
        place = other_places.get(name)
        if place is not None:
            new.append((name, place))
            if key is not None:
                shadowed.append(name)
        elif key is not None:
            new.append((name, key if key >= 0 else keys.index(name)))
    names, places, texts = _inserted(names, places, texts, new)
    return names, places, texts, frozenset(shadowed)


def _key_place(
    name: str, base: Layout, old_places: dict[str, int], gone: list[int],
    gone_names: set[str], appended_places: dict[str, int],
) -> int | None:
    """The place of `name` among the keys now, none if it is no key, or -1
    if it is one but its place is not known (it was shadowed)."""
    place = appended_places.get(name)
    if place is not None or name in gone_names:
        return place
    old = old_places.get(name, -1)
    if old >= 0:
        return old - bisect.bisect_right(gone, old)
    return -1 if name in base.shadowed else None


def _walk(
    base_keys: list[str], keys: list[str], bound: int,
) -> tuple[list[int], list[str]] | None:
    """`keys` as `base_keys` less some, in the same order, then some appended.

    Any two lists of distinct keys can be so read; when `keys` are in
    another order, many of `base_keys` are left out.

    :returns: the places in `base_keys` of those left out, ascending, and
        those appended; none when more than `bound` were left out
    """
    gone: list[int] = []
    rest_base, rest_keys = iter(base_keys), iter(keys)
    i = j = 0  # read of each
    while True:
        # How far the lists go on alike, compared in C.
        pairs = min(len(base_keys) - i, len(keys) - j)
        differ = map(operator.ne, itertools.islice(rest_base, pairs),
                     itertools.islice(rest_keys, pairs))
        alike = next(itertools.compress(itertools.count(), differ), pairs)
        if alike == pairs:
            i, j = i + pairs, j + pairs
            if len(gone) + len(base_keys) - i > bound:
                return None
            gone.extend(range(i, len(base_keys)))
            return gone, keys[j:]
        i, j = i + alike + 1, j + alike + 1
        gone.append(i - 1)
        # The key that differed is the next one of base_keys it meets, or
        # the first appended.
        key = keys[j - 1]
        while True:
            if len(gone) > bound:
                return None
            if i == len(base_keys):
                return gone, keys[j - 1:]
            i += 1
            if next(rest_base) == key:
                break
            gone.append(i - 1)


def _find(names: list[str], name: str) -> int:
    """Where sorted `names` holds `name`, or -1."""
    at = bisect.bisect_left(names, name)
    return at if at < len(names) and names[at] == name else -1


def _texts(names: list[str]) -> list[str]:
    # json.dumps writes keys with this same function (ensure_ascii).
    return list(map(operator.add, map(encode_basestring_ascii, names), itertools.repeat(':')))


def _without(
    names: list[str], places: array.array[int], texts: list[str], at: list[int],
) -> tuple[list[str], array.array[int], list[str]]:
    """The names, places and texts but those `at` (ascending places)."""
    if not at:
        return names, places, texts
    out_names: list[str] = []
    out_places = array.array('q')
    out_texts: list[str] = []
    start = 0
    for end in [*at, len(names)]:
        out_names += names[start:end]
        out_places += places[start:end]
        out_texts += texts[start:end]
        start = end + 1
    return out_names, out_places, out_texts


def _inserted(
    names: list[str], places: array.array[int], texts: list[str],
    new: list[tuple[str, int]],
) -> tuple[list[str], array.array[int], list[str]]:
    """Sorted `names` with their places and texts, and `new` names (sorted,
    none of `names`) with their places inserted where they sort."""
    if not new:
        return names, places, texts
    new_texts = _texts([name for name, _ in new])
    out_names: list[str] = []
    out_places = array.array('q')
    out_texts: list[str] = []
    start = 0
    for (name, place), text in zip(new, new_texts, strict=True):
        at = bisect.bisect_left(names, name, start)
        out_names += names[start:at]
        out_names.append(name)
        out_places += places[start:at]
        out_places.append(place)
        out_texts += texts[start:at]
        out_texts.append(text)
        start = at
    out_names += names[start:]
    out_places += places[start:]
    out_texts += texts[start:]
    return out_names, out_places, out_texts


class Layouts:
    """The latest :data:`MAX_LAYOUTS` layouts; safe to use from threads."""

    def __init__(self) -> None:
        # By the names laid out: the others first, fewer to compare.
        self._kept: Recent[tuple[list[str], list[str]], Layout] = Recent(MAX_LAYOUTS)
        # Names sorted before any layout was made (see sort_ahead).
        self._ahead: Recent[tuple[list[str], list[str]], Order] = Recent(1)

    def get(self, keys: list[str], others: list[str]) -> Layout:
        """The layout of these names, made anew if none kept fits.

        Made from the latest layout kept (:meth:`Layout.changed`) when
        there is one, else from the names sorted ahead (:meth:`sort_ahead`)
        likewise, else by sorting every name.

        :param keys: the counters' keys
        :param others: the other names
        """
        layout = self._kept.get((others, keys))
        if layout is None:
            kept = self._kept.items()
            ahead = self._ahead.items()
            if kept:
                (base_others, base_keys), base = kept[0]
                layout = Layout.changed(base, base_keys, base_others, keys, others)
            elif ahead:  # names that arrived since are moved in, as for a kept layout
                (base_others, base_keys), order = ahead[0]
                base = Layout(base_keys, base_others, order)
                layout = base if (base_others, base_keys) == (others, keys) else (
                    Layout.changed(base, base_keys, base_others, keys, others))
                self._ahead.keep_only(lambda names: False)  # later ones come from this
            else:
                layout = Layout(keys, others)
            self._kept.keep((others, keys), layout)
        return layout

    def sort_ahead(self, keys: list[str], others: list[str]) -> None:
        """Sort these names for the first layout, without their text.

        Sorting is most of a first layout's time (0.1 s at 500k names in
        their order of arrival, ~0.5 s shuffled) and the text most of its
        memory (~40 MB at 500k names, against ~8 MB for the order).  Does
        nothing once a layout is kept: later ones are made from it.

        :param keys: the counters' keys
        :param others: the other names
        """
        if not self._kept.items() and self._ahead.get((others, keys)) is None:
            self._ahead.keep((others, keys), sort_places(keys, others))
