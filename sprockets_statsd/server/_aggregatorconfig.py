"""How the server aggregates and names metrics: :class:`AggregatorConfig`.

The defaults reproduce etsy statsd v0.10 with its Graphite backend; every
field is checked when the configuration is made, so a mistake is a
:class:`.ConfigurationError` that says what to change, never a bad flush.
"""

from __future__ import annotations

import dataclasses
import math
import re

from sprockets_statsd.errors import ConfigurationError

__all__ = [
    'DEFAULT_MAX_NAMES',
    'DEFAULT_MAX_TIMER_VALUES',
    'TIMER_METRIC_NAMES',
    'AggregatorConfig',
]

#: Names accepted in :attr:`AggregatorConfig.calculated_timer_metrics`; the
#: ``_percent`` forms select every threshold (``upper_90``, ``upper_top5``...).
TIMER_METRIC_NAMES = frozenset(
    {
        'count',
        'count_ps',
        'histogram',
        'lower',
        'mean',
        'median',
        'std',
        'sum',
        'sum_squares',
        'upper',
        'count_percent',
        'lower_percent',
        'mean_percent',
        'sum_percent',
        'sum_squares_percent',
        'upper_percent',
    }
)

# A name segment that Graphite can carry: no whitespace (it separates the
# fields of a plaintext line) and nothing the protocol treats specially.
_SEGMENT = re.compile(r'[A-Za-z0-9_.\-]+')


def _check_segment(field: str, value: str, *, allow_empty: bool) -> None:
    if value == '' and allow_empty:
        return
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value):
        raise ConfigurationError(
            f'{field}={value!r} is not usable in a metric name: use letters, '
            f'digits, "_", "-" and "." only'
            + ('' if not allow_empty else ', or "" to leave it out')
        )
    if value.startswith('.') or value.endswith('.') or '..' in value:
        raise ConfigurationError(
            f'{field}={value!r} must not start or end with "." or contain ".."'
        )


#: Names held at once.  A counter costs 200-300 bytes (plus about 1 KB in
#: the load sink's frames), so half a million names stay well under a
#: gigabyte, while a client that invents names per request cannot exhaust
#: the machine.
DEFAULT_MAX_NAMES = 500_000

#: Values kept per timer per interval: exact statistics for a timer hit
#: 10,000 times a second at the default interval; a sample beyond that keeps
#: a hot timer to about 3 MB.
DEFAULT_MAX_TIMER_VALUES = 100_000


@dataclasses.dataclass(frozen=True)
class AggregatorConfig:
    """How the server aggregates and names metrics.

    The defaults reproduce etsy statsd v0.10 with its Graphite backend.
    Every field is checked at construction time.

    :param flush_interval: seconds between flushes (``flushInterval`` / 1000)
    :param percent_thresholds: timer percentiles; a negative value selects
        the *top* values (``percentThreshold``)
    :param key_prefix: prepended with a ``.`` to every received key
        (gstatsd ``-x``); internal ``statsd.*`` metrics are not prefixed
    :param legacy_namespace: ``graphite.legacyNamespace``
    :param global_prefix: ``graphite.globalPrefix`` (non-legacy only)
    :param prefix_counter: ``graphite.prefixCounter`` (non-legacy only)
    :param prefix_timer: ``graphite.prefixTimer`` (non-legacy only)
    :param prefix_gauge: ``graphite.prefixGauge`` (non-legacy only)
    :param prefix_set: ``graphite.prefixSet`` (non-legacy only)
    :param global_suffix: ``graphite.globalSuffix``; empty for none
    :param prefix_stats: namespace of the internal metrics (``prefixStats``)
    :param flush_counts: also send raw counter counts (``flush_counts``)
    :param key_name_sanitize: clean received names (``keyNameSanitize``)
    :param delete_idle_stats: default of the four ``delete_*`` switches
    :param delete_counters: drop idle counters instead of sending 0;
        ``None`` follows `delete_idle_stats`
    :param delete_timers: drop idle timers; ``None`` follows
        `delete_idle_stats`
    :param delete_sets: drop idle sets; ``None`` follows `delete_idle_stats`
    :param delete_gauges: drop idle gauges after `gauges_max_ttl` flushes;
        ``None`` follows `delete_idle_stats`
    :param gauges_max_ttl: flushes a gauge survives without updates when
        gauges are deleted (``gaugesMaxTTL``)
    :param histograms: ``(metric, bins)`` pairs; the first pair whose
        metric occurs in a timer's key applies, or, for a metric ending with
        ``*``, whose key starts with the text before the ``*``; ``math.inf``
        is the catch-all bin (``histogram``).  Such timers are Prometheus
        histograms on ``/metrics``
    :param calculated_timer_metrics: timer statistics to send; ``None``
        sends all (``calculatedTimerMetrics``)
    :param max_names: counter, timer, gauge and set names held at once;
        samples for further new names are dropped and counted in
        ``<prefix_stats>.names_dropped`` (not in the reference)
    :param max_timer_values: values kept per timer per interval; beyond it
        a uniform sample is kept and the percentile statistics become
        estimates (not in the reference)
    :param keep_container_id: turn the DogStatsD container id field
        (``|c:<id>``) into a ``container_id`` tag; by default it is dropped,
        since a series per container would multiply the series in Graphite
    :raises ConfigurationError: when a value cannot be used
    """

    flush_interval: float = 10.0
    percent_thresholds: tuple[float, ...] = (90.0,)
    key_prefix: str = ''
    legacy_namespace: bool = True
    global_prefix: str = 'stats'
    prefix_counter: str = 'counters'
    prefix_timer: str = 'timers'
    prefix_gauge: str = 'gauges'
    prefix_set: str = 'sets'
    global_suffix: str = ''
    prefix_stats: str = 'statsd'
    flush_counts: bool = True
    key_name_sanitize: bool = True
    delete_idle_stats: bool = False
    delete_counters: bool | None = None
    delete_timers: bool | None = None
    delete_sets: bool | None = None
    delete_gauges: bool | None = None
    gauges_max_ttl: int = 1
    histograms: tuple[tuple[str, tuple[float, ...]], ...] = ()
    calculated_timer_metrics: tuple[str, ...] | None = None
    max_names: int = DEFAULT_MAX_NAMES
    max_timer_values: int = DEFAULT_MAX_TIMER_VALUES
    keep_container_id: bool = False

    def __post_init__(self) -> None:
        self._check_numbers()
        for field, allow_empty in (
            ('key_prefix', True),
            ('global_prefix', True),
            ('prefix_counter', True),
            ('prefix_timer', True),
            ('prefix_gauge', True),
            ('prefix_set', True),
            ('global_suffix', True),
            ('prefix_stats', False),
        ):
            _check_segment(field, getattr(self, field), allow_empty=allow_empty)
        self._check_histograms()
        if self.calculated_timer_metrics is not None:
            names = tuple(self.calculated_timer_metrics)
            unknown = sorted(set(names) - TIMER_METRIC_NAMES)
            if unknown:
                raise ConfigurationError(
                    f'calculated_timer_metrics: unknown names {unknown}; '
                    f'choose from {sorted(TIMER_METRIC_NAMES)}'
                )
            object.__setattr__(self, 'calculated_timer_metrics', names)

    def _check_numbers(self) -> None:
        interval = self.flush_interval
        if (
            isinstance(interval, bool)
            or not isinstance(interval, (int, float))
            or not math.isfinite(interval)
            or interval <= 0
        ):
            raise ConfigurationError(
                f'flush_interval={interval!r}: use a positive number of seconds'
            )
        thresholds = tuple(self.percent_thresholds)
        for pct in thresholds:
            if (
                isinstance(pct, bool)
                or not isinstance(pct, (int, float))
                or not -100 <= pct <= 100
                or pct == 0
            ):
                raise ConfigurationError(
                    f'percent_thresholds: {pct!r} is not a percentile; use '
                    f'non-zero numbers from -100 to 100 (negative for the top)'
                )
        object.__setattr__(
            self, 'percent_thresholds', tuple(float(p) for p in thresholds)
        )
        ttl = self.gauges_max_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
            raise ConfigurationError(
                f'gauges_max_ttl={ttl!r}: use a whole number of flushes >= 1'
            )
        for field in ('max_names', 'max_timer_values'):
            bound = getattr(self, field)
            if isinstance(bound, bool) or not isinstance(bound, int) or bound < 1:
                raise ConfigurationError(f'{field}={bound!r}: use a whole number >= 1')

    def _check_histograms(self) -> None:
        checked: list[tuple[str, tuple[float, ...]]] = []
        for entry in self.histograms:
            try:
                metric, bins = entry
                bounds = tuple(float(b) for b in bins)
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f'histograms: {entry!r} is not a (metric substring, bins) '
                    f'pair such as ("api.", (10, 100, math.inf))'
                ) from None
            if not isinstance(metric, str):
                raise ConfigurationError(
                    f'histograms: the metric of {entry!r} must be a string'
                )
            for i, bound in enumerate(bounds):
                if bound != bound or (bound == math.inf and i != len(bounds) - 1):
                    raise ConfigurationError(
                        f'histograms: bins of {metric!r} must be numbers, with '
                        f'math.inf only as the last bin'
                    )
                if i and bound <= bounds[i - 1]:
                    raise ConfigurationError(
                        f'histograms: bins of {metric!r} must increase strictly'
                    )
            checked.append((metric, bounds))
        object.__setattr__(self, 'histograms', tuple(checked))

    @property
    def deletes_counters(self) -> bool:
        """Whether idle counters are dropped after a flush."""
        return _switch(self.delete_counters, self.delete_idle_stats)

    @property
    def deletes_timers(self) -> bool:
        """Whether idle timers are dropped after a flush."""
        return _switch(self.delete_timers, self.delete_idle_stats)

    @property
    def deletes_sets(self) -> bool:
        """Whether idle sets are dropped after a flush."""
        return _switch(self.delete_sets, self.delete_idle_stats)

    @property
    def deletes_gauges(self) -> bool:
        """Whether gauges are dropped after `gauges_max_ttl` idle flushes."""
        return _switch(self.delete_gauges, self.delete_idle_stats)


def _switch(explicit: bool | None, default: bool) -> bool:
    return default if explicit is None else explicit
