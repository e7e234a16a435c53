"""Aggregation of statsd samples into flush intervals (pure, clock injected).

Strategy: :meth:`Aggregator.receive` is the server's hot path.  It parses
straight into the aggregation dictionaries with the helpers of
:mod:`.parser` (the one copy of the grammar), through the bounded memos of
:mod:`._linememo`, so a repeated ``1|c`` is parsed once.
:meth:`Aggregator.flush` then reproduces the reference's ``flushMetrics``:
the lag gauge, ``process_metrics``, a snapshot for the sinks, and the idle
rules.  The timer statistics of ``process_metrics``
are computed by the snapshot's first reader (a sink's render thread), not
on the event loop.
"""

from __future__ import annotations

import random
import re
import time
import types
import typing
from collections.abc import Callable, Mapping
from typing import TypeVar

from sprockets_statsd.server import _timerstats
from sprockets_statsd.server._aggregatorconfig import AggregatorConfig
from sprockets_statsd.server._body import Body, ParsedValue
from sprockets_statsd.server._finite import saturated
from sprockets_statsd.server._intervalview import IntervalView, MetricKind
from sprockets_statsd.server._jsnumber import js_round
from sprockets_statsd.server._linememo import LineMemo
from sprockets_statsd.server._snapshot import Snapshot
from sprockets_statsd.server._timertotals import TimerTotals
from sprockets_statsd.server.parser import (
    LINE_EVENT,
    LINE_SERVICE_CHECK,
    is_blank,
    other_line,
)

__all__ = ['Aggregator', 'MetricKind', 'Snapshot']


# How much of a bad line is kept for the log message.
_MAX_LOGGED = 200

_V = TypeVar('_V')
# These counters are zeroed, never deleted; the reference matches them by
# substring, so a user counter containing one of them is kept too.
_INTERNAL_COUNTER_MARKS = ('packets_received', 'metrics_received', 'bad_lines_seen')
_INTERNAL_COUNTER = re.compile('|'.join(_INTERNAL_COUNTER_MARKS))
# An idle timer's values: shared, and falsy like an empty list.
_NO_VALUES: tuple[float, ...] = ()


def _frozen(mapping: Mapping[str, _V]) -> Mapping[str, _V]:
    """A read-only copy, detached from the aggregator's live dictionaries."""
    return types.MappingProxyType(dict(mapping))


class Aggregator(IntervalView):
    """Aggregate received packets and compute each flush interval.

    Not thread-safe: call it from one thread (the event loop).  The admin
    console's methods (``current_*`` and ``delete``) are those of
    :class:`._intervalview.IntervalView`.

    :param config: the settings
    :param timer: monotonic clock in seconds, used only to measure
        ``processing_time``
    :param chooser: the random source that picks which values a timer
        past ``max_timer_values`` keeps; inject a seeded one in tests
    """

    def __init__(
        self,
        config: AggregatorConfig,
        *,
        timer: Callable[[], float] = time.perf_counter,
        chooser: random.Random | None = None,
    ) -> None:
        self._config = config
        self._timer = timer
        self._chooser = chooser if chooser is not None else random.Random()
        self._names_dropped_key = f'{config.prefix_stats}.names_dropped'
        self._names_dropped = 0
        # Exact totals of the timers that outgrew max_timer_values.
        self._totals: dict[str, TimerTotals] = {}
        stats = config.prefix_stats
        self._bad_key = f'{stats}.bad_lines_seen'
        self._packets_key = f'{stats}.packets_received'
        self._metrics_key = f'{stats}.metrics_received'
        self._lag_key = f'{stats}.timestamp_lag'
        self._unknown_key = f'{stats}.unknown_fields_seen'
        self._events_key = f'{stats}.events_seen'
        self._checks_key = f'{stats}.service_checks_seen'
        self._counters: dict[str, float] = {
            self._bad_key: 0.0,
            self._packets_key: 0.0,
            self._metrics_key: 0.0,
        }
        # Every counter key at 0.0, in the same order: copying it (a copy of
        # the table, in C) starts the next interval ten times faster than
        # dict.fromkeys, which hashes and inserts every key anew.
        self._zeros = dict(self._counters)
        # The values of each timer; _NO_VALUES for one idle so far.
        self._timers: dict[str, list[float] | tuple[float, ...]] = {}
        #: The timers that got a second value this interval: only they hold
        #: a list, for flush() to sort and freeze.
        self._several: list[str] = []
        self._timer_counters: dict[str, float] = {}
        self._gauges: dict[str, float] = {}
        self._gauge_ttl: dict[str, int] = {}
        self._sets: dict[str, set[str]] = {}
        self._memo = LineMemo(config)
        # 0 when gauges persist, so the hot path tests one integer.
        self._gauge_max_ttl = config.gauges_max_ttl if config.deletes_gauges else 0
        self._old_timestamp = 0
        self._bad_example: str | None = None
        # How many more names may be created: one integer on the hot path.
        self._room = 0
        self._measure_room()

    @property
    def config(self) -> AggregatorConfig:
        """The settings this aggregator was built with."""
        return self._config

    def receive(self, packet: bytes) -> None:
        """Aggregate one UDP datagram or one chunk of complete TCP lines.

        Counts the packet, its non-empty lines and its bad pieces.  Never
        blocks; bad input never raises (the listeners log what a bug
        would raise, and carry on).

        :param packet: the raw bytes
        """
        counters = self._counters
        zeros = self._zeros
        timers = self._timers
        timer_counters = self._timer_counters
        gauges = self._gauges
        sets = self._sets
        memo = self._memo
        keys = memo.keys
        bodies = memo.bodies
        ttl = self._gauge_max_ttl
        room = self._room
        kept = self._config.max_timer_values
        several = self._several
        lines = bad = dropped = unknown = 0
        for line in packet.decode('utf-8', 'replace').split('\n'):
            if not line:
                continue
            name, colon, body = line.partition(':')
            if not colon:
                if is_blank(line):
                    continue
                lines += 1
                # Events and service checks are looked for only where a
                # metric line fails: make_key() refuses their names.
                if not self._other_line(line):
                    bad += 1
                    self._note_bad(line)
                continue
            lines += 1
            parsed = bodies.get(body)
            if parsed is None:
                parsed = memo.body(body)
            counts: Body | None = None
            if len(parsed) == 5:  # one sample and nothing else: LineMemo.body
                values: tuple[ParsedValue, ...] = (parsed,)
            else:
                counts = parsed
                values, tags, _, _ = counts
                if tags:
                    # '\n' never occurs in a name: the memo key is unambiguous.
                    name = f'{name}\n{tags}'
            key = keys.get(name)
            if key is None:
                key = memo.key(name)
            if not key:
                if not self._other_line(line):
                    bad += 1
                    self._note_bad(line)
                continue
            if counts is not None:
                _, _, bad_pieces, unknown_fields = counts
                if bad_pieces:
                    bad += bad_pieces
                    self._note_bad(line)
                unknown += unknown_fields
            for parsed_value in values:
                kind, number, rate, delta, member = parsed_value
                # A new name takes one unit of room; with none left its
                # samples are dropped and counted, never an unbounded dict.
                if kind == 'c':
                    count = counters.get(key)
                    if count is not None:
                        counters[key] = count + number * (1 / rate)
                    elif room > 0:
                        room -= 1
                        counters[key] = number * (1 / rate)
                        zeros[key] = 0.0
                    else:
                        dropped += 1
                elif kind == 'ms':
                    samples = timers.get(key)
                    if samples:
                        if samples.__class__ is not list:
                            # A second value: the first was kept as a
                            # tuple of one, which flush() takes as it is.
                            samples = timers[key] = [samples[0]]
                            several.append(key)
                        if len(samples) < kept:
                            samples.append(number)
                        else:
                            self._sample(key, samples, number)
                        timer_counters[key] += 1 / rate
                    elif samples is not None:  # idle so far: _NO_VALUES
                        timers[key] = (number,)
                        timer_counters[key] += 1 / rate
                    elif room > 0:
                        room -= 1
                        timers[key] = (number,)
                        timer_counters[key] = 1 / rate
                    else:
                        dropped += 1
                elif kind == 'g':
                    old = gauges.get(key)
                    if old is None:
                        if room <= 0:
                            dropped += 1
                            continue
                        room -= 1
                    if ttl:
                        self._gauge_ttl[key] = ttl
                    gauges[key] = old + number if old and delta else number
                elif kind == 's':
                    members = sets.get(key)
                    if members is not None:
                        members.add(member)
                    elif room > 0:
                        room -= 1
                        sets[key] = {member}
                    else:
                        dropped += 1
        counters[self._packets_key] += 1
        counters[self._metrics_key] += lines
        if bad:
            counters[self._bad_key] += bad
        self._room = room
        if dropped:
            self._names_dropped += dropped
            # An internal counter: created outside the cap, on first use, so
            # the output matches the reference until the cap is reached.
            key = self._names_dropped_key
            counters[key] = counters.get(key, 0.0) + dropped
            zeros[key] = 0.0
        if unknown:
            self._count(self._unknown_key, unknown)

    def _count(self, key: str, count: int) -> None:
        """Add to an internal counter that is created on first use."""
        self._counters[key] = self._counters.get(key, 0.0) + count
        self._zeros[key] = 0.0

    def _other_line(self, line: str) -> bool:
        """Count `line` if it is an event or a service check."""
        other = other_line(line)
        if other == LINE_EVENT:
            self._count(self._events_key, 1)
        elif other == LINE_SERVICE_CHECK:
            self._count(self._checks_key, 1)
        else:
            return False
        return True

    def _sample(self, key: str, samples: list[float] | tuple[float, ...],
                value: float) -> None:
        """Take `value` into a timer that holds ``max_timer_values`` values."""
        assert isinstance(samples, list)  # full, so not _NO_VALUES
        totals = self._totals.get(key)
        if totals is None:
            totals = self._totals[key] = TimerTotals.of(samples)
        totals.add(value, samples, self._chooser)

    def _measure_room(self) -> None:
        """Recompute how many names may still be created."""
        held = len(self._counters) + len(self._timers) + len(self._gauges) + len(self._sets)
        self._room = self._config.max_names - held

    def _note_bad(self, line: str) -> None:
        # Logged once per interval at flush time, never per line: a
        # misbehaving client must not be able to flood the log.
        if self._bad_example is None:
            self._bad_example = line[:_MAX_LOGGED]

    def flush(self, now: float) -> Snapshot:
        """Close the current interval and take its data for the sinks.

        Afterwards counters are zeroed, timers and sets emptied, and idle
        keys deleted as configured; gauges persist.  The timer statistics
        are left to the snapshot's first reader of
        :attr:`Snapshot.timer_data`, so this costs a copy of each
        dictionary and a sort of each timer's values.

        :param now: wall-clock time of this flush, seconds since the epoch
        :returns: the interval's data for the sinks; its timestamp is
            `now` rounded, but always at least one second after the
            previous flush's, since Graphite keeps only the last value
            written for a timestamp: two flushes in one second (jitter, a
            final flush right after a regular one) must not overwrite one
            another
        """
        config = self._config
        timestamp = js_round(now)
        if self._old_timestamp > 0 and timestamp <= self._old_timestamp:
            timestamp = self._old_timestamp + 1
        lag: float | None = None
        if self._old_timestamp > 0:
            lag = timestamp - self._old_timestamp - config.flush_interval
            self._gauges[self._lag_key] = lag
        self._old_timestamp = timestamp
        bad_line_example, self._bad_example = self._bad_example, None
        names_dropped, self._names_dropped = self._names_dropped, 0

        # The interval's dictionaries go to the snapshot as they are (the
        # aggregator starts new ones), so the event loop copies nothing
        # per name but the gauges, which persist.  Sums of finite samples
        # can overflow: saturated here, once, for every output (see
        # _finite); a mapping without overflow is returned as it is.
        counters = saturated(self._counters)
        # Only a timer with several values holds a list (see receive):
        # most timers of a big flush have one value, and cost nothing here.
        timers = self._timers
        for key in self._several:
            values = timers.get(key)
            if values.__class__ is list:  # not deleted, nor frozen already
                values.sort()
                timers[key] = tuple(values)
        self._several = []
        frozen_timers = typing.cast(
            Mapping[str, tuple[float, ...]], types.MappingProxyType(timers))
        timer_counters = types.MappingProxyType(saturated(self._timer_counters))
        gauges = saturated(self._gauges)
        if gauges is not self._gauges:
            self._gauges.update(gauges)
        snapshot = Snapshot(
            timestamp=timestamp,
            flush_interval=config.flush_interval,
            counters=types.MappingProxyType(counters),
            timers=frozen_timers,
            timer_counters=timer_counters,
            gauges=_frozen(self._gauges),
            sets=types.MappingProxyType(
                {k: frozenset(v) for k, v in self._sets.items()}
            ),
            timestamp_lag=lag,
            bad_lines_seen=counters[self._bad_key],
            packets_received=counters[self._packets_key],
            metrics_received=counters[self._metrics_key],
            timer_statistics=_timerstats.TimerStatistics(
                frozen_timers, timer_counters, config, self._timer, self._totals
            ),
            names_dropped=names_dropped,
            bad_line_example=bad_line_example,
        )
        self._totals = {}
        self._reset()
        self._measure_room()
        return snapshot

    def _reset(self) -> None:
        """Apply the reference's ``clear_metrics`` rules."""
        config = self._config
        if config.deletes_counters:
            # The reference matches the internal counters by substring.
            self._zeros = dict.fromkeys(
                filter(_INTERNAL_COUNTER.search, self._counters), 0.0)
        self._counters = self._zeros.copy()
        if config.deletes_timers:
            self._timers = {}
            self._timer_counters = {}
        else:
            self._timers = dict.fromkeys(self._timers, _NO_VALUES)
            self._timer_counters = dict.fromkeys(self._timer_counters, 0.0)
        if config.deletes_sets:
            self._sets = {}
        else:
            self._sets = {key: set() for key in self._sets}
        if config.deletes_gauges:
            for key in list(self._gauge_ttl):
                self._gauge_ttl[key] -= 1
                if self._gauge_ttl[key] < 1:
                    self._gauges.pop(key, None)
                    del self._gauge_ttl[key]
