"""One-minute frames of flushed aggregates for the load sink (pure, clock injected).

Strategy: time is cut into frames of ``frame_length`` seconds aligned to
the epoch, so with the default of 60 s a frame is a calendar minute.  Each
flush's :class:`.Snapshot` is merged into the frame in which the flush
happened: counters summed, timers reduced to sum, upper, lower, count and
the number of values, gauges overwritten, set members united (up to a cap).
Only the newest :data:`FRAME_COUNT` frames are kept.  A query selects frames
by their index, so minutes in which nothing was flushed count as empty
frames and a query never has to move the store forward.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterable

from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.server._countersums import KeptSums
from sprockets_statsd.server._finite import saturated, total
from sprockets_statsd.server._window import TimerSummary, Window, merge_timer
from sprockets_statsd.server.aggregator import Snapshot
from sprockets_statsd.server.config import DEFAULT_FRAME_LENGTH

__all__ = [
    'DEFAULT_FRAME_LENGTH',
    'FRAME_COUNT',
    'MAX_SET_MEMBERS',
    'Frame',
    'FrameStore',
    'Listing',
    'Series',
    'TimerSummary',
    'Window',
]

#: Frames kept, so that ``/15`` covers a quarter of an hour.
FRAME_COUNT = 15

#: Members remembered per set and frame.  Sets are meant for unique users
#: and the like; the cap keeps fifteen frames of a busy set to a few MB.
#: Beyond it the distinct count is a lower bound (see :meth:`.Window.sets`).
MAX_SET_MEMBERS = 1000


class Frame:
    """The aggregates of the flushes made during one frame.

    :param index: the frame's number: its start time / frame length
    :param max_set_members: members kept per set
    """

    def __init__(self, index: int, max_set_members: int = MAX_SET_MEMBERS) -> None:
        self.index = index
        self.flushes = 0
        self.counters: dict[str, float] = {}
        #: ``[sum, upper, lower, count, values]`` per timer.
        self.timers: dict[str, list[float]] = {}
        self.gauges: dict[str, float] = {}
        self.sets: dict[str, set[str]] = {}
        #: The largest distinct count one flush reported for each set: a
        #: lower bound of the frame's distinct count when the cap was hit.
        self.set_peaks: dict[str, int] = {}
        self._max_set_members = max_set_members

    def add(self, snapshot: Snapshot) -> None:
        """Merge one flush into this frame.

        :param snapshot: the flush, from :meth:`.Aggregator.flush`
        """
        # Copy on write: every dictionary (and every timer's list or set
        # changed) is replaced, never changed, so that a view taken before
        # (a query answered in a thread) stays whole and consistent.
        self.flushes += 1
        counters = dict(self.counters)
        get = counters.get
        for key, value in snapshot.counters.items():
            counters[key] = get(key, 0.0) + value
        # Sums over flushes can overflow (see _finite).
        counters.update(saturated(counters))
        timers = dict(self.timers)
        for key, values in snapshot.timers.items():
            if values:  # an idle timer says nothing about extremes
                # Sorted by the aggregator; fsum keeps long sums exact.
                merge_timer(
                    timers, key, total(values), values[-1], values[0],
                    snapshot.timer_counters[key], len(values),
                )
        gauges = dict(self.gauges)
        gauges.update(snapshot.gauges)
        cap = self._max_set_members
        sets = dict(self.sets)
        peaks = dict(self.set_peaks)
        for key, members in snapshot.sets.items():
            held = set(sets.get(key, ()))
            for member in members:
                if len(held) >= cap:
                    break
                held.add(member)
            sets[key] = held
            peaks[key] = max(peaks.get(key, 0), len(members))
        self.counters, self.timers, self.gauges = counters, timers, gauges
        self.sets, self.set_peaks = sets, peaks

    def view(self) -> Frame:
        """This frame as it is now, unchanged by later flushes."""
        return copy.copy(self)  # shares the dictionaries, which add() replaces


@dataclasses.dataclass
class Listing:
    """Some of the series of the kept frames.

    :param series: the series built, in order
    :param matched: the keys that matched, built or not
    :param total: every key of the kept frames
    """

    series: list[Series]
    matched: int
    total: int


@dataclasses.dataclass(frozen=True)
class Series:
    """One metric's value in each of the newest frames, oldest first.

    :param kind: ``counter``, ``timer`` (the mean), ``gauge`` or ``set``
        (distinct members)
    :param key: the metric's key
    :param points: one value per frame; ``None`` where it had none
    """

    kind: str
    key: str
    points: tuple[float | None, ...]

    @property
    def current(self) -> float | None:
        """The newest value there is."""
        for point in reversed(self.points):
            if point is not None:
                return point
        return None


class FrameStore:
    """The newest :data:`FRAME_COUNT` frames, fed by every flush.

    Feed and query it from one thread (the event loop); :meth:`merged`
    and the windows it hands out may be used from others.

    :param frame_length: seconds per frame (tests use a fraction)
    :param frame_count: frames kept
    :param clock: the wall clock, in seconds since the epoch
    :param max_set_members: members kept per set and frame
    :raises ConfigurationError: for a frame length or count that cannot
        be used
    """

    def __init__(
        self,
        frame_length: float = DEFAULT_FRAME_LENGTH,
        *,
        frame_count: int = FRAME_COUNT,
        clock: Callable[[], float] = time.time,
        max_set_members: int = MAX_SET_MEMBERS,
    ) -> None:
        if not (isinstance(frame_length, (int, float)) and math.isfinite(frame_length)
                and frame_length > 0):
            raise ConfigurationError(
                f'frame_length={frame_length!r}: use a positive number of seconds'
            )
        if frame_count < 1:
            raise ConfigurationError(f'frame_count={frame_count!r}: use 1 or more')
        self.frame_length = float(frame_length)
        self.frame_count = frame_count
        self._clock = clock
        self._max_set_members = max_set_members
        self._frames: collections.deque[Frame] = collections.deque(maxlen=frame_count)
        #: The counter sums of complete frames, kept from one window to the
        #: next (see :meth:`Window.counter_totals`).
        self.sums = KeptSums()
        #: Flushes taken in: a query's answer changes only when it does (or
        #: when the clock moves to a new frame).
        self.generation = 0

    def current_index(self) -> int:
        """The index of the frame the clock is in now."""
        return math.floor(self._clock() / self.frame_length)

    def frame_start(self, index: int) -> float:
        """Start of frame `index`, in seconds since the epoch."""
        return index * self.frame_length

    def add(self, snapshot: Snapshot) -> None:
        """Merge a flush into the current frame, starting it if need be.

        :param snapshot: the flush, from :meth:`.Aggregator.flush`
        """
        self.commit(self.merged(snapshot, self.current_index(), self.newest()))

    def newest(self) -> Frame | None:
        """The newest frame kept, if any."""
        return self._frames[-1] if self._frames else None

    def merged(self, snapshot: Snapshot, index: int, newest: Frame | None) -> Frame:
        """A flush merged into a new copy of the frame it belongs to.

        Changes nothing in the store, so it may run in a thread while the
        store is read; :meth:`commit` then takes the copy in.

        :param snapshot: the flush, from :meth:`.Aggregator.flush`
        :param index: the frame the flush happened in
        :param newest: the store's newest frame when the copy is committed
        """
        if newest is None or newest.index < index:
            if newest is not None:
                # Complete now: learnt once here, in the thread, whether
                # its counters let kept sums roll on (tens of ms at 500k).
                self.sums.is_exact((newest.index, newest.flushes), newest.counters.values())
            frame = Frame(index, self._max_set_members)
        else:  # the same frame (or a clock set back: the newest one)
            frame = newest.view()
        frame.add(snapshot)
        return frame

    def commit(self, frame: Frame) -> None:
        """Take in a frame from :meth:`merged`, in the order they were made.

        :param frame: replaces the newest frame when it has its index
        """
        if self._frames and self._frames[-1].index == frame.index:
            self._frames[-1] = frame
        else:
            self._frames.append(frame)
        self.generation += 1

    def frames(self) -> tuple[Frame, ...]:
        """The frames kept, oldest first (for tests and the overview)."""
        return tuple(self._frames)

    def window(self, count: int, *, full: bool = False) -> Window:
        """The last `count` frames, the current partial one included.

        :param count: frames, from 1 to the frame count
        :param full: leave out the current frame, taking the `count`
            complete frames before it (``/N/full``)
        :raises ValueError: when `count` is out of range
        """
        if not 1 <= count <= self.frame_count:
            raise ValueError(f'count must be from 1 to {self.frame_count}')
        last = self.current_index() - (1 if full else 0)
        first = last - count + 1
        # Views: the window may be read in a thread while flushes go on.
        return Window(
            tuple(f.view() for f in self._frames if first <= f.index <= last), self.sums
        )

    def series(
        self,
        match: Callable[[str], bool] | None = None,
        limit: int | None = None,
    ) -> Listing:
        """The metrics of the kept frames, with one point per frame.

        The points cover the :attr:`frame_count` frames up to and including
        the current one.  Ordered by kind (counters, timers, gauges, sets),
        then by key.  Only the series returned are built, so a page of a
        few hundred costs little however many keys there are.

        :param match: keep only the keys it accepts
        :param limit: build at most this many series
        """
        current = self.current_index()
        first = current - self.frame_count + 1
        slots: list[Frame | None] = [None] * self.frame_count
        for frame in self._frames:
            if first <= frame.index <= current:
                slots[frame.index - first] = frame
        frames = [f for f in slots if f is not None]
        listing = Listing([], 0, 0)
        for kind, mapping, value in _KINDS:
            keys: set[str] = set()
            for frame in frames:
                keys.update(mapping(frame))
            chosen = sorted(filter(match, keys) if match else keys)
            listing.total += len(keys)
            listing.matched += len(chosen)
            room = len(chosen) if limit is None else limit - len(listing.series)
            listing.series.extend(
                Series(kind, key, tuple(
                    value(f, key) if f is not None else None for f in slots
                ))
                for key in chosen[:max(room, 0)]
            )
        return listing


def _timer_mean(frame: Frame, key: str) -> float | None:
    held = frame.timers.get(key)
    return held[0] / held[4] if held else None


def _set_size(frame: Frame, key: str) -> float | None:
    held = frame.sets.get(key)
    return max(len(held), frame.set_peaks[key]) if held is not None else None


#: Each kind's name, its keys in a frame, and its value in a frame.
_KINDS: tuple[tuple[
    str, Callable[[Frame], Iterable[str]], Callable[[Frame, str], float | None]
], ...] = (
    ('counter', lambda f: f.counters, lambda f, k: f.counters.get(k)),
    ('timer', lambda f: f.timers, _timer_mean),
    ('gauge', lambda f: f.gauges, lambda f, k: f.gauges.get(k)),
    ('set', lambda f: f.sets, _set_size),
)
