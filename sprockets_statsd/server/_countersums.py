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

When a frame begins, a window's complete frames are those of the window
before, less its oldest frame, plus the frame just completed.  The kept sum
is then *rolled on* (:func:`roll`): the oldest frame's values taken off, the
new frame's added, instead of summing every frame again.  That gives the
floats of the oldest-first sum only where every sum is exact, which
:func:`exact` decides for each frame's values (whole numbers well below
2**53, no ``-0.0``: counts, as counters mostly are); anything else is summed
again, oldest first.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import operator
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Protocol

from sprockets_statsd.server._recent import Recent

__all__ = [
    'EXACT_BELOW',
    'MAX_KEPT_SUMS',
    'MAX_KNOWN_FRAMES',
    'Column',
    'Counted',
    'HeadSum',
    'KeptSums',
    'exact',
    'roll',
    'sum_columns',
]

#: Sums of complete frames kept.  Each holds one float per counter (some
#: 20 MB at 500k counters) and the oldest frame's values (4 MB more, and
#: up to 12 MB of floats once that frame has left the store); a dashboard
#: asks for one or two windows, in full or not.
MAX_KEPT_SUMS = 4

#: Frames whose :func:`exact` answer is remembered (one bool each): the
#: frames a store keeps and the few before them that kept sums still hold.
MAX_KNOWN_FRAMES = 64

#: Whole numbers below this magnitude sum exactly in any order as long as
#: fewer than ``2**53 / EXACT_BELOW`` (32) of them are added: every partial
#: sum stays below 2**53, where doubles hold every whole number.
EXACT_BELOW = 2.0**48

# Values of one key a rolled sum may involve: the kept frames and those added.
_MAX_ROLLED = int(2.0**53 / EXACT_BELOW)

#: A frame's counters as their keys and values, in the same order.
Column = tuple[list[str], list[float]]

#: What a frame is, within one store: its index and how many flushes it took.
FrameId = tuple[int, int]


class Counted(Protocol):
    """A complete frame, as far as its counters go (:class:`.Frame`)."""

    index: int
    flushes: int
    counters: dict[str, float]


def sum_columns(columns: Sequence[Column]) -> Column:
    """Each key's values summed over `columns`, the first column first.

    A key's sum starts from its value in the first column, or from ``0.0``
    where the first column lacks it, and adds the values of the later
    columns in order, as a merge key by key does.  Not saturated.

    :param columns: keys and values of each frame, oldest first; not
        changed, and the result may be one of them
    """
    return _summed(columns)[0]


def _summed(columns: Sequence[Column]) -> tuple[Column, bool]:
    """:func:`sum_columns`, and whether the columns were in one order."""
    if len(columns) == 1:
        return columns[0], True
    keys = max((column[0] for column in columns), key=len)
    if all(column[0] == keys[:len(column[0])] for column in columns):
        return (keys, _by_position([column[1] for column in columns])), True
    merged = dict(zip(*columns[0], strict=True))
    get = merged.get
    for column_keys, values in columns[1:]:
        for key, value in zip(column_keys, values, strict=True):
            merged[key] = get(key, 0.0) + value
    return (list(merged), list(merged.values())), False


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


def exact(values: Collection[float]) -> bool:
    """Whether a frame's values may be summed, and taken off sums, in any order.

    True when every value is a whole number of magnitude below
    :data:`EXACT_BELOW` and none is ``-0.0``.  Sums of fewer than 32 such
    values are then exact whatever their order, so taking a frame off a sum
    gives the very floats of summing the others; and since no such sum is
    ``-0.0`` (only ``-0.0 + -0.0`` is), a sum of zero is ``0.0`` however
    it was made, as summing oldest first gives it.  NaN, infinities and
    fractions make it false (the sums then depend on their order).

    :param values: one frame's counter values
    """
    try:
        if not all(map(float.is_integer, values)):  # false for NaN and inf
            return False
    except TypeError:  # not a float: not a frame's value
        return False
    if not values:
        return True
    low = min(values)
    if not (low > -EXACT_BELOW and max(values) < EXACT_BELOW):
        return False
    if low > 0.0:
        return True  # no zero, so no -0.0
    # v + copysign(1, v) is -1.0 only for -0.0 among whole numbers.
    signs = map(math.copysign, itertools.repeat(1.0), values)
    return -1.0 not in map(operator.add, signs, values)


@dataclasses.dataclass(frozen=True)
class HeadSum:
    """The counters of some complete frames summed oldest first, kept.

    :param column: the sum, as :func:`sum_columns` makes it
    :param lengths: each frame's number of keys, oldest first, when each
        frame's keys are the first keys of the sum's; ``None`` otherwise
        (the sum cannot be rolled on)
    :param oldest: the oldest frame's values, to take off when it leaves
    """

    column: Column
    lengths: tuple[int, ...] | None
    oldest: list[float]


def roll(
    kept_ids: tuple[FrameId, ...],
    kept: HeadSum,
    frames: Sequence[Counted],
    is_exact: Callable[[FrameId, Collection[float]], bool],
) -> HeadSum | None:
    """`kept` rolled on to the sum of `frames`, if that is exactly their sum.

    The one rule of rolling: the result is the sum of `frames` oldest
    first, float for float, or ``None``.  It is made when `frames` are the
    kept frames, with or without the oldest, followed by newer frames; when
    the keys of all are in one order (each frame's keys the first keys of
    the longest's); when fewer than 32 frames are involved; and when every
    frame involved (the kept ones and the new ones) holds :func:`exact`
    values.

    :param kept_ids: the frames summed in `kept`, oldest first
    :param kept: their sum
    :param frames: the complete frames to sum, oldest first
    :param is_exact: :func:`exact` of a frame's values (perhaps remembered)
    """
    ids = [(frame.index, frame.flushes) for frame in frames]
    if kept.lengths is None or not frames:
        return None
    for drop in (0, 1):
        remaining = kept_ids[drop:]
        if tuple(ids[:len(remaining)]) == remaining:
            break
    else:
        return None
    added = frames[len(remaining):]
    if len(kept_ids) + len(added) >= _MAX_ROLLED:
        return None
    if drop and not is_exact(kept_ids[0], kept.oldest):
        return None
    if not all(is_exact(i, frame.counters.values()) for i, frame in zip(ids, frames, strict=True)):
        return None
    lengths = kept.lengths[drop:]
    keys, totals = kept.column
    # The keys of the frames that remain; those after them were the oldest
    # frame's alone, and their sums less its values are exactly 0.0.
    keys = keys[:max(lengths, default=0)]
    if drop:
        totals = _combined(operator.sub, totals, kept.oldest)
    for frame in added:
        frame_keys = list(frame.counters)
        if len(frame_keys) >= len(keys):
            if frame_keys[:len(keys)] != keys:
                return None
            keys = frame_keys
        elif frame_keys != keys[:len(frame_keys)]:
            return None
        # 0.0 + v is v for any v but -0.0, which exact() rules out.
        totals = _combined(operator.add, totals, list(frame.counters.values()))
        lengths += (len(frame_keys),)
    oldest = list(frames[0].counters.values()) if drop else kept.oldest
    return HeadSum((keys, totals[:len(keys)]), lengths, oldest)


def _combined(
    op: Callable[[float, float], float], values: list[float], other: list[float],
) -> list[float]:
    """`op` of the two lists position by position, the longer one's rest kept."""
    combined = list(map(op, values, other))
    combined.extend(values[len(other):] if len(values) > len(other) else other[len(values):])
    return combined


class KeptSums:
    """The latest :data:`MAX_KEPT_SUMS` sums of complete frames, by the
    frames summed (oldest first), and which frames are :func:`exact`.

    Safe to use from threads: what is kept is replaced, never changed.
    """

    def __init__(self) -> None:
        self._heads: Recent[tuple[FrameId, ...], HeadSum] = Recent(MAX_KEPT_SUMS)
        self._exact: Recent[FrameId, bool] = Recent(MAX_KNOWN_FRAMES)

    def get(self, ids: tuple[FrameId, ...]) -> Column | None:
        """The sum kept for these frames, if any.

        :param ids: the frames, oldest first
        """
        kept = self._heads.get(ids)
        return None if kept is None else kept.column

    def keep(self, ids: tuple[FrameId, ...], column: Column) -> None:
        """Keep a sum of these frames, one that is not rolled on.

        :param ids: the frames, oldest first
        :param column: their sum
        """
        self._heads.keep(ids, HeadSum(column, None, []))

    def sum_of(self, frames: Sequence[Counted]) -> Column:
        """The counters of complete `frames` summed oldest first; kept.

        The sum kept for these frames, or one kept rolled on to them
        (:func:`roll`), or else the frames summed.  Blocks for as long as
        that takes (most of a second at 500k counters in 14 frames).

        :param frames: complete frames (that take no more flushes), oldest
            first
        """
        ids = tuple((frame.index, frame.flushes) for frame in frames)
        made = self._heads.get(ids)
        if made is not None:
            return made.column
        for kept_ids, kept in self._heads.items():
            made = roll(kept_ids, kept, frames, self.is_exact)
            if made is not None:
                break
        else:
            columns = [(list(frame.counters), list(frame.counters.values()))
                       for frame in frames]
            column, one_order = _summed(columns)
            lengths = tuple(len(keys) for keys, _ in columns) if one_order else None
            made = HeadSum(column, lengths, columns[0][1] if columns else [])
        self._heads.keep(ids, made)
        return made.column

    def forget_before(self, index: int) -> None:
        """Drop the sums that hold a frame older than frame `index`.

        Once the store no longer holds such a frame, no window takes it in
        again, and no sum is rolled on from one (a roll drops one frame,
        the frame that just left): each holds tens of MB at 500k counters.

        :param index: the oldest frame that windows may still hold
        """
        self._heads.keep_only(lambda ids: not ids or ids[0][0] >= index)

    def is_exact(self, frame: FrameId, values: Collection[float]) -> bool:
        """:func:`exact` of a complete frame's values, remembered.

        :param frame: the frame's index and flushes
        :param values: its counter values
        """
        known = self._exact.get(frame)
        if known is None:
            known = exact(values)
            self._exact.keep(frame, known)
        return known
