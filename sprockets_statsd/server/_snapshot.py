"""The data of one flush interval, as every sink receives it (read-only).

The aggregator hands its interval's dictionaries over as they are; what
costs time per key (counter rates, the timer statistics) is computed on
first read, which is a sink's render thread, not the event loop.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Mapping

from sprockets_statsd.server import _timerstats
from sprockets_statsd.server._finite import saturated

__all__ = ['Snapshot']


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Everything one flush interval produced, read-only.

    Mappings keep the reference's order: first-seen keys first, internal
    counters before all others.

    :param timestamp: the flush time in whole seconds (JavaScript rounding)
    :param flush_interval: seconds
    :param counters: rate-scaled counts, the internal counters included
    :param timers: the raw values of each timer, sorted; empty for an idle
        timer that is still kept
    :param timer_counters: rate-scaled sample counts of each timer
    :param gauges: current gauge values, ``<prefix_stats>.timestamp_lag``
        included from the second flush on
    :param sets: the distinct members of each set
    :param timestamp_lag: this flush's spacing minus the expected one, in
        seconds; ``None`` on the first flush
    :param bad_lines_seen: the ``<prefix_stats>.bad_lines_seen`` counter
    :param packets_received: the ``<prefix_stats>.packets_received`` counter
    :param metrics_received: the ``<prefix_stats>.metrics_received`` counter
    :param timer_statistics: computes :attr:`timer_data` and
        :attr:`processing_time` when first read
    :param names_dropped: samples dropped in the interval because their
        name was new and ``max_names`` names were held
    :param bad_line_example: the interval's first bad line (cut to 200
        characters), for the log; ``None`` when there was none
    """

    timestamp: int
    flush_interval: float
    counters: Mapping[str, float]
    timers: Mapping[str, tuple[float, ...]]
    timer_counters: Mapping[str, float]
    gauges: Mapping[str, float]
    sets: Mapping[str, frozenset[str]]
    timestamp_lag: float | None
    bad_lines_seen: float
    packets_received: float
    metrics_received: float
    timer_statistics: _timerstats.TimerStatistics = dataclasses.field(
        repr=False, compare=False
    )
    names_dropped: int = 0
    bad_line_example: str | None = None

    # The statistics are computed on first read, which is a sink's render
    # thread: flush() on the event loop only swaps dictionaries.

    @functools.cached_property
    def counter_rates(self) -> Mapping[str, float]:
        """Counts per second, computed on first read."""
        interval = self.flush_interval
        return types.MappingProxyType(saturated(
            {key: value / interval for key, value in self.counters.items()}
        ))

    @property
    def timer_data(self) -> Mapping[str, Mapping[str, float]]:
        """The computed statistics of each timer, in emission order.

        ``count_90`` ... ``median``, ``histogram.bin_*``, filtered by
        ``calculated_timer_metrics``.  The first read computes them (once,
        whichever thread reads), so it may take a while for many timers.
        """
        return self.timer_statistics.data

    @property
    def processing_time(self) -> int:
        """Whole milliseconds spent computing :attr:`timer_data`.

        Reading it computes :attr:`timer_data` if no one has yet.
        """
        return self.timer_statistics.processing_time

    @property
    def num_stats(self) -> int:
        """Keys flushed: counters, timers, gauges and sets (``numStats``)."""
        # timer_data has the keys of timers; reading it would compute it.
        return (
            len(self.counters)
            + len(self.timers)
            + len(self.gauges)
            + len(self.sets)
        )

