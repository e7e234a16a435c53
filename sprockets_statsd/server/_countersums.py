"""Counter totals over frames: sums by column, and sums kept for later windows.

Strategy: a window's counter total is each key's values summed over the
frames oldest first (float addition is not associative, so that order is
part of the answer).  A server's frames usually list their counters in one
order, each frame's keys the first keys of the newest frame's (the
aggregator keeps its keys in the order they were first seen and appends
new ones), so the totals are made column by column over the frames'
values with ``map(operator.add)``, in C, never looking a key up.  Frames
in another order are merged key by key.

Only the newest frame of a window still changes; the frames before it are
complete.  Their sum is kept (:class:`KeptSums`), so that the next answer
for the same window adds only the newest frame to it: summing oldest first,
the sum of all frames is the sum of the frames before the newest, plus the
newest.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Sequence

from sprockets_statsd.server._recent import Recent

__all__ = ['MAX_KEPT_SUMS', 'Column', 'KeptSums', 'sum_columns']

#: Sums of complete frames kept.  Each holds one float per counter (some
#: 20 MB at 500k counters); a dashboard asks for one or two windows, in
#: full or not.
MAX_KEPT_SUMS = 4

#: A frame's counters as their keys and values, in the same order.
Column = tuple[list[str], list[float]]

#: What a frame is, within one store: its index and how many flushes it took.
FrameId = tuple[int, int]


def sum_columns(columns: Sequence[Column]) -> Column:
    """Each key's values summed over `columns`, the first column first.

    A key's sum starts from its value in the first column, or from ``0.0``
    where the first column lacks it, and adds the values of the later
    columns in order, as a merge key by key does.  Not saturated.

    :param columns: keys and values of each frame, oldest first; not
        changed, and the result may be one of them
    """
    if len(columns) == 1:
        return columns[0]
    keys = max((column[0] for column in columns), key=len)
    if all(column[0] == keys[:len(column[0])] for column in columns):
        return keys, _by_position([column[1] for column in columns])
    merged = dict(zip(*columns[0], strict=True))
    get = merged.get
    for column_keys, values in columns[1:]:
        for key, value in zip(column_keys, values, strict=True):
            merged[key] = get(key, 0.0) + value
    return list(merged), list(merged.values())


def _by_position(values: list[list[float]]) -> list[float]:
    """Sum lists of values position by position, the first list first.

    A position is summed over the lists long enough to have it; the sum
    starts from the first list's value, or from ``0.0`` where the first
    list is too short.

    :param values: the values of each frame, oldest first
    """
    totals: list[float] = []
    start = 0
    for end in sorted({len(column) for column in values}):
        parts = [column[start:end] for column in values if len(column) >= end]
        summed: Iterable[float] = parts[0]
        if len(values[0]) < end:
            summed = map(operator.add, itertools.repeat(0.0), summed)
        for part in parts[1:]:
            summed = map(operator.add, summed, part)
        totals.extend(summed)
        start = end
    return totals


class KeptSums(Recent[tuple[FrameId, ...], Column]):
    """The latest :data:`MAX_KEPT_SUMS` sums of complete frames, by the
    frames summed (oldest first)."""

    def __init__(self) -> None:
        super().__init__(MAX_KEPT_SUMS)
