"""Graphite plaintext rendering of a flush, as the reference's graphite backend."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from sprockets_statsd.server._jsnumber import format_js_number, js_round
from sprockets_statsd.server.aggregator import Snapshot
from sprockets_statsd.server.config import AggregatorConfig
from sprockets_statsd.server.parser import sanitize_key

__all__ = ['GraphiteStats', 'format_js_number', 'render']



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
    snapshot's timestamp.  Pure: does no I/O.

    :param snapshot: the flush to render
    :param config: the settings (namespaces, suffix, flush_counts)
    :param stats: the previous send of the sink this payload is for
    :param timer: monotonic clock in seconds, for ``calculationtime``
    :returns: ``name value timestamp\\n`` lines, UTF-8 encoded
    """
    start = timer()
    names = _Names.of(config)
    fmt = names.format
    ts = f' {snapshot.timestamp}'
    lines: list[str] = []
    add = lines.append
    num = format_js_number
    rates = snapshot.counter_rates
    for key, value in snapshot.counters.items():
        if config.legacy_namespace:
            add(fmt(names.counter, key) + ' ' + num(rates[key]) + ts)
            if config.flush_counts:
                add(fmt(('stats_counts',), key) + ' ' + num(value) + ts)
        else:
            add(fmt(names.counter, key, 'rate') + ' ' + num(rates[key]) + ts)
            if config.flush_counts:
                add(fmt(names.counter, key, 'count') + ' ' + num(value) + ts)
    for key, data in snapshot.timer_data.items():
        for stat, value in data.items():
            add(fmt(names.timer, key, stat) + ' ' + num(value) + ts)
    for key, value in snapshot.gauges.items():
        add(fmt(names.gauge, key) + ' ' + num(value) + ts)
    for key, members in snapshot.sets.items():
        add(fmt(names.set, key, 'count') + ' ' + str(len(members)) + ts)

    prefix_stats = config.prefix_stats
    suffix = names.suffix
    elapsed = str(js_round((timer() - start) * 1000))
    if config.legacy_namespace:
        add(f'{prefix_stats}.numStats{suffix} {snapshot.num_stats}{ts}')
        add(f'stats.{prefix_stats}.graphiteStats.calculationtime{suffix} {elapsed}{ts}')
        add(
            f'stats.{prefix_stats}.processing_time{suffix} '
            f'{snapshot.processing_time}{ts}'
        )
    else:
        add(f'{fmt(names.global_ns, prefix_stats, "numStats")} {snapshot.num_stats}{ts}')
        calculation = fmt(names.global_ns, prefix_stats, 'graphiteStats', 'calculationtime')
        add(f'{calculation} {elapsed}{ts}')
        processing = fmt(names.global_ns, prefix_stats, 'processing_time')
        add(f'{processing} {snapshot.processing_time}{ts}')
    namespace = '.'.join((*names.global_ns, prefix_stats)) + '.graphiteStats.'
    for stat, value in (
        ('last_exception', stats.last_exception or 0),
        ('last_flush', stats.last_flush or 0),
        ('flush_time', stats.flush_time),
        ('flush_length', stats.flush_length),
    ):
        add(f'{namespace}{stat}{suffix} {num(value)}{ts}')
    lines.append('')
    return '\n'.join(lines).encode()
