"""The statsd server's settings: the aggregator and Graphite formatting, and the rest."""

from __future__ import annotations

import dataclasses
import math
import re

from sprockets_statsd._ports import check_port
from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.server import binding, listeners
from sprockets_statsd.server._admission import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS
from sprockets_statsd.server._repeattarget import RepeatTarget

__all__ = [
    'DEFAULT_ADMIN_HOST',
    'DEFAULT_ADMIN_PORT',
    'DEFAULT_BUFFER_BYTES',
    'DEFAULT_BUFFER_FLUSHES',
    'DEFAULT_FRAME_LENGTH',
    'DEFAULT_LOAD_HOST',
    'DEFAULT_LOAD_PORT',
    'DEFAULT_MAX_NAMES',
    'DEFAULT_MAX_TIMER_VALUES',
    'DEFAULT_PORT',
    'DEFAULT_RECONNECT_MAX_DELAY',
    'DEFAULT_SHUTDOWN_TIMEOUT',
    'TIMER_METRIC_NAMES',
    'AggregatorConfig',
    'ServerConfig',
]

#: The statsd port, for UDP and TCP alike.
DEFAULT_PORT = 8125

#: Seconds the sinks get to deliver the final flush when the server stops.
DEFAULT_SHUTDOWN_TIMEOUT = 5.0

#: The reference's ``mgmt_port``; loopback, since the console can delete
#: metrics and take the node out of a load balancer.
DEFAULT_ADMIN_HOST = '127.0.0.1'
DEFAULT_ADMIN_PORT = 8126

#: Seconds per frame of the load sink: gstatsd's one-minute frames.
DEFAULT_FRAME_LENGTH = 60.0

#: Bytes of rendered flushes a sink keeps while it cannot deliver.
DEFAULT_BUFFER_BYTES = 64 * 1024 * 1024

#: Flushes a sink keeps while it cannot deliver: two hours at the default
#: ten-second interval.
DEFAULT_BUFFER_FLUSHES = 720

#: The upper bound of a sink's exponential reconnect back-off, in seconds.
DEFAULT_RECONNECT_MAX_DELAY = 30.0

#: Where the embedded load sink listens when the server has no sink at
#: all: loopback only, on the port of gstatsd's documented example.
DEFAULT_LOAD_HOST = '127.0.0.1'
DEFAULT_LOAD_PORT = 8082

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


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Everything about the server that is not aggregation.

    :param aggregator: what the aggregator computes, and the flush interval
    :param binds: ``(host, port)`` pairs, each bound for UDP and TCP; an
        empty host means every interface
    :param unix_socket: path of a Unix stream socket to listen on as well
    :param unix_socket_mode: permission bits for the Unix socket file
    :param unix_datagram: path of a Unix datagram socket to listen on as
        well (DogStatsD's ``socket_path``)
    :param unix_datagram_mode: permission bits for its socket file
    :param sinks: ``(host, port)`` of Graphite plaintext receivers; with
        no sink of any kind, flushes are written to standard output
    :param load_sinks: ``(host, port)`` to serve the load sink's HTTP
        endpoints on (``/N``, ``/``, ``/metrics``, ``/health``); an empty
        host means every interface; an address that cannot be bound stops
        the server from starting
    :param default_load_sink: where the load sink is served when there is
        no sink of any kind (``None``: nowhere); an address that cannot be
        bound is logged and the server runs without it
    :param admin: ``(host, port)`` of the admin console; an address that
        cannot be bound stops the server from starting
    :param default_admin: the admin console's address when `admin` is
        ``None`` (``None``: no console); an address that cannot be bound is
        logged and the server runs without it
    :param frame_length: seconds per frame of the load sink (60; tests
        use less)
    :param udp_receive_buffer: SO_RCVBUF asked for, in bytes
    :param max_line_length: longest line accepted on a stream, in bytes
    :param shutdown_timeout: seconds the sinks get for the final flush
    :param sink_buffer_bytes: bytes of undelivered flushes kept per sink
    :param sink_buffer_flushes: undelivered flushes kept per sink
    :param reconnect_max_delay: ceiling of a sink's reconnect back-off
    :param repeat: where to forward every received packet, unparsed
    :param max_connections: TCP and Unix stream connections served at once
        (fewer if the file descriptor limit cannot be raised to fit them)
    :param idle_timeout: seconds a stream connection may stay silent
        before it is closed; 0 for never
    :raises ConfigurationError: when a value cannot be used
    """

    aggregator: AggregatorConfig = dataclasses.field(
        default_factory=AggregatorConfig
    )
    binds: tuple[tuple[str, int], ...] = (('', DEFAULT_PORT),)
    unix_socket: str | None = None
    unix_socket_mode: int | None = None
    unix_datagram: str | None = None
    unix_datagram_mode: int | None = None
    sinks: tuple[tuple[str, int], ...] = ()
    load_sinks: tuple[tuple[str, int], ...] = ()
    default_load_sink: tuple[str, int] | None = (DEFAULT_LOAD_HOST, DEFAULT_LOAD_PORT)
    admin: tuple[str, int] | None = None
    default_admin: tuple[str, int] | None = (DEFAULT_ADMIN_HOST, DEFAULT_ADMIN_PORT)
    frame_length: float = DEFAULT_FRAME_LENGTH
    udp_receive_buffer: int = binding.DEFAULT_UDP_RECEIVE_BUFFER
    max_line_length: int = listeners.DEFAULT_MAX_LINE_LENGTH
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    sink_buffer_bytes: int = DEFAULT_BUFFER_BYTES
    sink_buffer_flushes: int = DEFAULT_BUFFER_FLUSHES
    reconnect_max_delay: float = DEFAULT_RECONNECT_MAX_DELAY
    repeat: tuple[RepeatTarget, ...] = ()
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT

    def __post_init__(self) -> None:
        if not self.binds and self.unix_socket is None and self.unix_datagram is None:
            raise ConfigurationError(
                'binds: give at least one (host, port), a unix_socket or a '
                'unix_datagram'
            )
        single = (('default_load_sink', self.default_load_sink),
                  ('admin', self.admin), ('default_admin', self.default_admin))
        for field, addresses, lowest in (
            ('binds', self.binds, 0),
            ('sinks', self.sinks, 1),
            ('load_sinks', self.load_sinks, 0),
            *((name, (address,) if address else (), 0) for name, address in single),
        ):
            for host, port in addresses:
                check_port(port, f'{field}: the port of {host!r}', lowest=lowest, text=False)
        for field in ('udp_receive_buffer', 'max_line_length',
                      'sink_buffer_bytes', 'sink_buffer_flushes', 'max_connections'):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(f'{field}={value!r}: use a whole number >= 1')
        if not self.shutdown_timeout >= 0:
            raise ConfigurationError(
                f'shutdown_timeout={self.shutdown_timeout!r}: use seconds >= 0'
            )
        if not (isinstance(self.frame_length, (int, float))
                and math.isfinite(self.frame_length) and self.frame_length > 0):
            raise ConfigurationError(
                f'frame_length={self.frame_length!r}: use a positive number of seconds'
            )
        if not (isinstance(self.idle_timeout, (int, float))
                and math.isfinite(self.idle_timeout) and self.idle_timeout >= 0):
            raise ConfigurationError(
                f'idle_timeout={self.idle_timeout!r}: use seconds >= 0 (0: never)'
            )
        if not self.reconnect_max_delay > 0:
            raise ConfigurationError(
                f'reconnect_max_delay={self.reconnect_max_delay!r}: use seconds > 0'
            )
        for target in self.repeat:
            if target.is_bound_by(self.binds):
                raise ConfigurationError(
                    f'repeat: {target} is this server\'s own address; it would '
                    f'repeat every packet to itself for ever'
                )
