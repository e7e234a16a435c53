"""The statsd server's settings: listeners, sinks, bounds, and the aggregator's.

The aggregator's own settings (and Graphite's names) are
:class:`AggregatorConfig`, in :mod:`._aggregatorconfig`; this module
exports it too.
"""

from __future__ import annotations

import dataclasses
import math

from sprockets_statsd._ports import check_port
from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.server import binding, listeners
from sprockets_statsd.server._admission import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS
from sprockets_statsd.server._aggregatorconfig import (
    DEFAULT_MAX_NAMES,
    DEFAULT_MAX_TIMER_VALUES,
    TIMER_METRIC_NAMES,
    AggregatorConfig,
)
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
