"""Aggregates over consecutive frames: the window a load report reads.

A :class:`Window` holds views of the frames (:meth:`.Frame.view`) of the
last few minutes and reduces them: counters summed oldest first (the sums
of its complete frames kept, see :mod:`._countersums`), timers to true
extremes and a count-weighted mean, the last value of each gauge and the
distinct members of each set.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from sprockets_statsd.server._countersums import Column, KeptSums, sum_columns
from sprockets_statsd.server._finite import saturate, saturated_list

if TYPE_CHECKING:
    from sprockets_statsd.server.frames import Frame

__all__ = ['TimerSummary', 'Window', 'merge_timer']


@dataclasses.dataclass(frozen=True)
class TimerSummary:
    """A timer over some frames: true extremes and a count-weighted mean.

    :param sum: the sum of all values (milliseconds)
    :param upper: the largest value
    :param lower: the smallest value
    :param count: the rate-scaled number of samples, as Graphite's ``count``
    :param values: how many values were received (not rate-scaled)
    """

    sum: float
    upper: float
    lower: float
    count: float
    values: int

    @property
    def mean(self) -> float:
        """The mean of every value received: ``sum / values``."""
        return self.sum / self.values


def merge_timer(
    timers: dict[str, list[float]], key: str, total: float, upper: float,
    lower: float, count: float, values: float,
) -> None:
    """Fold one timer aggregate into `timers` (``[sum, upper, lower, count, n]``)."""
    held = timers.get(key)
    if held is None:
        timers[key] = [total, upper, lower, count, values]
        return
    # A new list, never a change to the old one: see frames.Frame.add.
    timers[key] = [
        saturate(held[0] + total), max(held[1], upper), min(held[2], lower),
        saturate(held[3] + count), held[4] + values,
    ]


@dataclasses.dataclass(frozen=True)
class Window:
    """Aggregates over consecutive frames, oldest first.

    :param frames: the frames in the window that received flushes; views
        (:meth:`.Frame.view`), so that reading the window in a thread is safe
    :param sums: see :attr:`sums`
    """

    frames: tuple[Frame, ...]
    #: Where the sums of complete frames are kept from one window to the
    #: next (the store's); none for a window made by hand.
    sums: KeptSums | None = dataclasses.field(default=None, compare=False)

    def counters(self) -> dict[str, float]:
        """Each counter summed over the window."""
        return dict(zip(*self.counter_totals(), strict=True))

    def counter_totals(self) -> tuple[list[str], list[float]]:
        """Each counter summed over the window, as keys and their totals.

        Each total is the sum of the frames' values oldest first, then
        saturated (see :mod:`._countersums`).  With :attr:`sums`, the sum
        of the frames before the newest is kept for the next window.
        """
        if not self.frames:
            return [], []
        before = self.keep_sums()
        if before is not None:
            keys, totals = sum_columns([before, _column(self.frames[-1])])
        else:
            keys, totals = sum_columns([_column(frame) for frame in self.frames])
        return keys, saturated_list(totals)

    def keep_sums(self) -> Column | None:
        """The counters summed over the frames before the newest, kept.

        Made once (or rolled on from the sum kept for the window a frame
        before, see :meth:`.KeptSums.sum_of`) and kept in :attr:`sums` for
        the windows to come; none without :attr:`sums` or with fewer than
        two such frames (one frame is its own sum).
        """
        head = self.frames[:-1]
        if self.sums is None or len(head) < 2:
            return None
        return self.sums.sum_of(head)

    def timers(self) -> dict[str, TimerSummary]:
        """Each timer that received values in the window."""
        merged: dict[str, list[float]] = {}
        for frame in self.frames:
            for key, held in frame.timers.items():
                merge_timer(merged, key, *held)
        return {
            key: TimerSummary(total, upper, lower, count, int(values))
            for key, (total, upper, lower, count, values) in merged.items()
        }

    def gauges(self) -> dict[str, float]:
        """Each gauge's last value in the window."""
        last: dict[str, float] = {}
        for frame in self.frames:
            last.update(frame.gauges)
        return last

    def sets(self) -> dict[str, int]:
        """Each set's distinct members over the window.

        Exact while no frame reached :data:`.MAX_SET_MEMBERS` for the set;
        otherwise a lower bound: the larger of the members remembered and
        the largest count of a single flush.
        """
        members: dict[str, set[str]] = {}
        peaks: dict[str, int] = {}
        for frame in self.frames:
            for key, held in frame.sets.items():
                members.setdefault(key, set()).update(held)
                peaks[key] = max(peaks.get(key, 0), frame.set_peaks[key])
        return {key: max(len(held), peaks[key]) for key, held in members.items()}

    def stat(self) -> dict[str, float]:
        """The flat ``Stat`` object of gstatsd's load sink.

        Counters under their own key; timers as
        ``stats.timers.<key>.{sum,upper,lower,count,mean}``; gauges as
        ``stats.gauges.<key>``; sets as ``stats.sets.<key>.count``.
        """
        stat: dict[str, float] = self.counters()
        stat.update(self.other_stat())
        return stat

    def other_stat(self) -> dict[str, float]:
        """The timers, gauges and sets of :meth:`stat`, named likewise.

        Where a name is also a counter's, this value is the one shown.
        """
        stat: dict[str, float] = {}
        for key, timer in self.timers().items():
            base = f'stats.timers.{key}.'
            stat[base + 'sum'] = timer.sum
            stat[base + 'upper'] = timer.upper
            stat[base + 'lower'] = timer.lower
            stat[base + 'count'] = timer.count
            stat[base + 'mean'] = timer.mean
        for key, value in self.gauges().items():
            stat[f'stats.gauges.{key}'] = value
        for key, count in self.sets().items():
            stat[f'stats.sets.{key}.count'] = count
        return stat


def _column(frame: Frame) -> Column:
    return list(frame.counters), list(frame.counters.values())
