"""The Graphite backend's own lines, after a flush's metrics.

``numStats``, the time the rendering took (``calculationtime``), the
time the timer statistics took (``processing_time``), and the
``graphiteStats`` of the sink's previous send, as etsy statsd's graphite
backend writes them, in the legacy namespace or the configured one.
"""

from __future__ import annotations

import dataclasses

from sprockets_statsd.server._aggregatorconfig import AggregatorConfig
from sprockets_statsd.server._graphitenames import Names
from sprockets_statsd.server._jsnumber import format_js_number, js_round
from sprockets_statsd.server._snapshot import Snapshot

__all__ = ['GraphiteStats', 'own_lines']


@dataclasses.dataclass
class GraphiteStats:
    """What one sink's *previous* send looked like (``graphiteStats``).

    The reference starts with `last_flush` set to its startup time and
    `last_exception` at 0; ``None`` renders as ``0``.

    :param last_flush: unix seconds of the last successful send
    :param last_exception: unix seconds of the last failed send
    :param flush_time: whole milliseconds the last send took
    :param flush_length: bytes of the last send
    """

    last_flush: int | None = None
    last_exception: int | None = None
    flush_time: float = 0
    flush_length: int = 0


def own_lines(
    snapshot: Snapshot,
    config: AggregatorConfig,
    stats: GraphiteStats,
    names: Names,
    end: str,
    busy: float,
) -> str:
    """``numStats``, the timings and the ``graphiteStats`` lines."""
    suffix = names.suffix
    fmt = names.format
    prefix_stats = config.prefix_stats
    elapsed = str(js_round(busy * 1000))
    lines: list[str] = []
    add = lines.append
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
    return ''.join(lines)
