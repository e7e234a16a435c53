"""Graphite plaintext rendering of a flush, as the reference's graphite backend."""

# Strategy: a flush of 100k names is ~440k lines, rendered in a sink's
# thread that holds the GIL (and so slows the receive loop) while it works,
# so the work per line is a few list appends: the payload is one join of
# pieces (namespace, key, statistic, suffix and tags, value) and nothing is
# concatenated per line.  A key without tags is used as it is; a timer's
# name is built once, not once per statistic.  Each distinct value is
# formatted once per flush, together with the timestamp and newline after
# it.  Where the backend must clean names (key_name_sanitize off), the
# cleaned names are kept between flushes, since keys mostly persist.
# Keeping every key's finished names instead was measured slower: a lookup
# in a dictionary of 100k names costs more than the appends it saves.

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from sprockets_statsd.server._jsnumber import format_js_number, js_round
from sprockets_statsd.server.aggregator import Snapshot
from sprockets_statsd.server.config import AggregatorConfig
from sprockets_statsd.server.parser import sanitize_key

__all__ = ['GraphiteStats', 'format_js_number', 'render']

# Distinct values whose text is kept during one flush: the common ones
# (0, 1, counts, rates) repeat; unique ones beyond this are formatted each
# time rather than held.
_MAX_VALUES = 50_000
# The cleaned names are dropped when there are more of them than twice the
# keys of the flush being rendered, plus this: names that are gone stop
# holding memory, and one flush's worth is rebuilt.
_SANITIZED_SLACK = 4096

# Name part of a key -> sanitize_key(name part), shared by every render
# (it depends on nothing else).  Threads only add entries or clear it.
_sanitized: dict[str, str] = {}


@dataclasses.dataclass
class GraphiteStats:
    """What one sink's *previous* send looked like (``graphiteStats``).

    The reference starts with `last_flush` and `last_exception` set to its
    startup time; pass that to reproduce it, ``None`` renders as ``0``.

    :param last_flush: unix seconds of the last successful send
    :param last_exception: unix seconds of the last failed send
    :param flush_time: milliseconds the last send took
    :param flush_length: bytes of the last send
    """

    last_flush: int | None = None
    last_exception: int | None = None
    flush_time: float = 0
    flush_length: int = 0


@dataclasses.dataclass(frozen=True)
class _Names:
    """The namespaces of the reference backend's ``init``."""

    global_ns: tuple[str, ...]
    counter: tuple[str, ...]
    timer: tuple[str, ...]
    gauge: tuple[str, ...]
    set: tuple[str, ...]
    suffix: str
    sanitize: bool

    @classmethod
    def of(cls, config: AggregatorConfig) -> _Names:
        if config.legacy_namespace:
            base: tuple[str, ...] = ('stats',)
            parts = ('', 'timers', 'gauges', 'sets')
        else:
            base = (config.global_prefix,) if config.global_prefix else ()
            parts = (
                config.prefix_counter,
                config.prefix_timer,
                config.prefix_gauge,
                config.prefix_set,
            )
        counter, timer, gauge, set_ = (base + ((p,) if p else ()) for p in parts)
        suffix = '.' + config.global_suffix if config.global_suffix else ''
        return cls(
            base, counter, timer, gauge, set_, suffix, not config.key_name_sanitize
        )

    def format(self, namespace: Sequence[str], key: str, *extra: str) -> str:
        """Join namespace, name and `extra`, then the suffix, then the tags."""
        name, semicolon, tags = key.partition(';')
        if self.sanitize:
            # With key_name_sanitize off the backend cleans the name part.
            name = sanitize_key(name)
        return (
            '.'.join((*namespace, name, *extra))
            + self.suffix
            + semicolon
            + tags
        )

    def split(self, key: str) -> tuple[str, str]:
        """The name part of `key` as sent, and what follows it: suffix, tags."""
        name, semicolon, tags = key.partition(';')
        if self.sanitize:
            # With key_name_sanitize off the backend cleans the name part.
            clean = _sanitized.get(name)
            if clean is None:
                clean = _sanitized[name] = sanitize_key(name)
            name = clean
        return name, self.suffix + semicolon + tags


def _dotted(namespace: Sequence[str]) -> str:
    """A namespace as a name prefix: ``stats.timers.``, or ``''``."""
    return ''.join(part + '.' for part in namespace)


class _Values(dict[float, str]):
    """One flush's values, each as ``' <value> <timestamp>\\n'``.

    :param end: the timestamp and newline, with the space before them
    """

    def __init__(self, end: str) -> None:
        super().__init__()
        self._end = end

    def __missing__(self, value: float) -> str:
        # Equal numbers (1 and 1.0, 0.0 and -0.0) have the same text, so
        # they may share an entry.
        text = ' ' + format_js_number(value) + self._end
        if len(self) < _MAX_VALUES:
            self[value] = text
        return text


def render(
    snapshot: Snapshot,
    config: AggregatorConfig,
    stats: GraphiteStats,
    *,
    timer: Callable[[], float] = time.perf_counter,
) -> bytes:
    """Render one flush as the Graphite plaintext payload.

    The lines, their names, values and order are those of etsy statsd's
    graphite backend: counters, timers, gauges, sets, then ``numStats``,
    ``graphiteStats.calculationtime``, ``processing_time`` and the
    ``graphiteStats`` of the previous send.  Every line carries the
    snapshot's timestamp.  Does no I/O, and may run in several threads at
    once.  The snapshot's timer statistics are computed here if no one has
    read them yet; that time is ``processing_time``, not
    ``calculationtime``.

    :param snapshot: the flush to render
    :param config: the settings (namespaces, suffix, flush_counts)
    :param stats: the previous send of the sink this payload is for
    :param timer: monotonic clock in seconds, for ``calculationtime``
    :returns: ``name value timestamp\\n`` lines, UTF-8 encoded
    """
    timer_data = snapshot.timer_data
    start = timer()
    names = _Names.of(config)
    split = names.split
    suffix = names.suffix
    # Keys without tags need no work unless the backend cleans names.
    plain = not names.sanitize
    ts = f' {snapshot.timestamp}'
    values = _Values(ts + '\n')
    pieces: list[str] = []
    add = pieces.append

    if config.legacy_namespace:
        rate_head, rate_extra = _dotted(names.counter), ''
        count_head, count_extra = 'stats_counts.', ''
    else:
        rate_head = count_head = _dotted(names.counter)
        rate_extra, count_extra = '.rate', '.count'
    rate_end = rate_extra + suffix
    count_end = count_extra + suffix
    flush_counts = config.flush_counts
    # The snapshot's counter_rates, computed rather than looked up (a
    # lookup per key costs more than the division it saves).
    interval = snapshot.flush_interval
    for key, value in snapshot.counters.items():
        if plain and ';' not in key:
            add(rate_head)
            add(key)
            add(rate_end)
            add(values[value / interval])
            if flush_counts:
                add(count_head)
                add(key)
                add(count_end)
                add(values[value])
        else:
            name, tail = split(key)
            add(rate_head)
            add(name)
            add(rate_extra + tail)
            add(values[value / interval])
            if flush_counts:
                add(count_head)
                add(name)
                add(count_extra + tail)
                add(values[value])

    timer_ns = _dotted(names.timer)
    for key, data in timer_data.items():
        if plain and ';' not in key:
            head = timer_ns + key + '.'
            tail = suffix
        else:
            name, tail = split(key)
            head = timer_ns + name + '.'
        if tail:
            for stat, value in data.items():
                add(head)
                add(stat)
                add(tail)
                add(values[value])
        else:
            for stat, value in data.items():
                add(head)
                add(stat)
                add(values[value])

    gauge_ns = _dotted(names.gauge)
    for key, value in snapshot.gauges.items():
        add(gauge_ns)
        if plain and ';' not in key:
            add(key)
            add(suffix)
        else:
            name, tail = split(key)
            add(name)
            add(tail)
        add(values[value])

    set_ns = _dotted(names.set)
    set_end = '.count' + suffix
    for key, members in snapshot.sets.items():
        add(set_ns)
        if plain and ';' not in key:
            add(key)
            add(set_end)
        else:
            name, tail = split(key)
            add(name)
            add('.count' + tail)
        add(values[len(members)])

    if len(_sanitized) > 2 * snapshot.num_stats + _SANITIZED_SLACK:
        _sanitized.clear()

    fmt = names.format
    prefix_stats = config.prefix_stats
    end = ts + '\n'
    elapsed = str(js_round((timer() - start) * 1000))
    if config.legacy_namespace:
        add(f'{prefix_stats}.numStats{suffix} {snapshot.num_stats}{end}')
        add(f'stats.{prefix_stats}.graphiteStats.calculationtime{suffix} {elapsed}{end}')
        add(
            f'stats.{prefix_stats}.processing_time{suffix} '
            f'{snapshot.processing_time}{end}'
        )
    else:
        add(f'{fmt(names.global_ns, prefix_stats, "numStats")} {snapshot.num_stats}{end}')
        calculation = fmt(names.global_ns, prefix_stats, 'graphiteStats', 'calculationtime')
        add(f'{calculation} {elapsed}{end}')
        processing = fmt(names.global_ns, prefix_stats, 'processing_time')
        add(f'{processing} {snapshot.processing_time}{end}')
    namespace = '.'.join((*names.global_ns, prefix_stats)) + '.graphiteStats.'
    for stat, value in (
        ('last_exception', stats.last_exception or 0),
        ('last_flush', stats.last_flush or 0),
        ('flush_time', stats.flush_time),
        ('flush_length', stats.flush_length),
    ):
        add(f'{namespace}{stat}{suffix} {format_js_number(value)}{end}')
    return ''.join(pieces).encode()
