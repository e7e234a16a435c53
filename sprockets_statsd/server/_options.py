"""The command line's options: value converters and the option table.

Each :class:`Option` names its flags, the :class:`.ServerConfig` or
:class:`.AggregatorConfig` field it sets, its ``STATSD_*`` variable and the
converter that checks its text, so that the parser, the environment and
``--help`` are built from one table.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import re
import typing

from sprockets_statsd._booleans import FALSE_WORDS as FALSE
from sprockets_statsd._booleans import TRUE_WORDS as TRUE
from sprockets_statsd._ports import MAX_PORT, check_port
from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.server import logs
from sprockets_statsd.server._aggregatorconfig import AggregatorConfig
from sprockets_statsd.server._repeattarget import TRANSPORTS, RepeatTarget

__all__ = [
    'AGGREGATOR_FIELDS',
    'FALSE',
    'LOG_LEVELS',
    'OFF',
    'TRUE',
    'Option',
    'log_level',
    'number',
    'options',
    'parse_address',
    'repeat_target',
]

LOG_LEVELS = {
    'debug': logging.DEBUG,
    'info': logging.INFO,
    'warning': logging.WARNING,
    'error': logging.ERROR,
}

_SIZE = re.compile(r'(\d+)\s*([kmg]?)(?:i?b)?', re.IGNORECASE)


def parse_address(text: str, *, default_host: str = '') -> tuple[str, int]:
    """Split ``[host]:port`` (``[::1]:8125``, ``:8125``, ``8125``).

    :param text: the address as written on the command line
    :param default_host: the host when `text` gives none
    :raises argparse.ArgumentTypeError: when `text` is not an address
    """
    host, sep, port = text.rpartition(':')
    if not sep:
        host = ''
    if host.startswith('[') and host.endswith(']'):
        host = host[1:-1]
    elif ':' in host:
        raise argparse.ArgumentTypeError(
            f'{text!r}: write an IPv6 address in brackets, like [::1]:8125'
        )
    try:
        # Plain digits only: no sign, spaces or other scripts' digits.
        number = check_port(port, 'the port', lowest=0, text=port.isascii() and port.isdigit())
    except ConfigurationError:
        raise argparse.ArgumentTypeError(
            f'{text!r}: expected [host]:port with a port from 0 to {MAX_PORT}'
        ) from None
    return host or default_host, number


def _sink(text: str) -> tuple[str, int]:
    host, port = parse_address(text, default_host='localhost')
    if port == 0:
        raise argparse.ArgumentTypeError(f'{text!r}: a sink needs a port')
    return host, port


def repeat_target(text: str) -> RepeatTarget:
    """``[udp:|tcp:][host]:port``: udp unless said, the host localhost."""
    transport, sep, address = text.partition(':')
    if not (sep and transport.lower() in TRANSPORTS):
        transport, address = TRANSPORTS[0], text
    host, port = _sink(address)
    return RepeatTarget(transport.lower(), host, port)


#: The value of --http and --admin that switches the default off.
OFF = 'off'


def _sink_type(text: str) -> str:
    if text in ('graphite', 'load'):
        return text
    raise argparse.ArgumentTypeError(f'{text!r}: the sink types are graphite and load')


def _endpoint(text: str) -> tuple[str, int] | str:
    """``[host]:port`` on loopback unless a host is given, or ``off``."""
    if text.strip().lower() == OFF:
        return OFF
    return parse_address(text, default_host='127.0.0.1')


def number(
    minimum: float, *, integer: bool = False, above: bool = False
) -> typing.Callable[[str], float]:
    """A converter for a finite number >= `minimum` (> when `above`)."""
    kind = 'a whole number' if integer else 'a number'
    relation = '>' if above else '>='

    def convert(text: str) -> float:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            value = None
        if (
            value is None
            or not math.isfinite(value)
            or value < minimum
            or (above and value == minimum)
        ):
            raise argparse.ArgumentTypeError(
                f'{text!r}: expected {kind} {relation} {minimum:g}'
            )
        return value

    return convert


def _size(text: str) -> int:
    match = _SIZE.fullmatch(text.strip())
    if not match or int(match[1]) < 1:
        raise argparse.ArgumentTypeError(
            f'{text!r}: expected a positive size in bytes, like 8388608 or 8M'
        )
    scale: int = 1024 ** ' kmg'.index(match[2].lower() or ' ')
    return int(match[1]) * scale


def _octal(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'{text!r}: expected octal permission bits, like 660'
        ) from None


def _check(name: str, value: object) -> None:
    """Let :class:`AggregatorConfig` judge one field's value on its own."""
    try:
        AggregatorConfig(**{name: value})  # type: ignore[arg-type]
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _field(
    name: str, convert: typing.Callable[[str], typing.Any] = str
) -> typing.Callable[[str], typing.Any]:
    """A converter for the :class:`AggregatorConfig` field `name`."""

    def check(text: str) -> typing.Any:
        value = convert(text)
        _check(name, value)
        return value

    return check


def _percent(text: str) -> float:
    value = number(-100)(text)
    _check('percent_thresholds', (value,))
    return value


def _histogram(text: str) -> tuple[str, tuple[float, ...]]:
    metric, sep, bins = text.rpartition('=')
    try:
        bounds = tuple(float(b) for b in bins.split(',')) if sep else ()
    except ValueError:
        bounds = ()
    if not bounds:
        raise argparse.ArgumentTypeError(
            f'{text!r}: expected METRIC=BIN,BIN,..., like api.=10,100,inf'
        )
    _check('histograms', ((metric, bounds),))
    return metric, bounds


def _timer_metrics(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(',') if n.strip())
    _check('calculated_timer_metrics', names)
    return names


def _log_format(text: str) -> str:
    if text.strip().lower() not in logs.LOG_FORMATS:
        raise argparse.ArgumentTypeError(
            f'{text!r}: expected one of {", ".join(logs.LOG_FORMATS)}'
        )
    return text.strip().lower()


def log_level(text: str) -> int:
    try:
        return LOG_LEVELS[text.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f'{text!r}: expected one of {", ".join(LOG_LEVELS)}'
        ) from None


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: its flags, environment variable and how to read it."""

    flags: tuple[str, ...]
    dest: str
    env: str
    help: str
    convert: typing.Callable[[str], typing.Any] = str
    metavar: str | None = None
    repeat: str = ''  # the separator of several values in the variable
    switch: bool = False


def options() -> list[Option]:
    o = Option
    field = _field
    return [
        o(('-b', '--bind'), 'bind', 'STATSD_BIND',
          'listen for UDP and TCP on [host]:port; repeatable; the host '
          'defaults to every interface, IPv4 and IPv6 (default :8125)',
          parse_address, '[HOST]:PORT', repeat=','),
        o(('-s', '--sink'), 'sink', 'STATSD_SINK',
          'send every flush to the Graphite plaintext receiver at '
          '[host]:port; repeatable; the host defaults to localhost; without '
          'any sink, flushes are written to standard output and the load '
          'sink is served on 127.0.0.1:8082',
          _sink, '[HOST]:PORT', repeat=','),
        o(('--repeat',), 'repeat', 'STATSD_REPEAT',
          'also forward every received packet, unparsed, to the statsd '
          'server at [udp:|tcp:][host]:port (etsy statsd\'s repeater); udp '
          'unless tcp: is written, the host defaults to localhost; '
          'repeatable', repeat_target, '[udp:|tcp:][HOST]:PORT', repeat=','),
        o(('-t', '--type'), 'sink_type', 'STATSD_SINK_TYPE',
          'type of every -s: graphite (the default) or load, which serves '
          'the HTTP endpoints (/N, /, /metrics, /health) on the -s address '
          'instead, as gstatsd does; for both kinds use -s and --http',
          _sink_type, 'TYPE', repeat=','),
        o(('--http',), 'http', 'STATSD_HTTP',
          'serve the load sink\'s HTTP endpoints on [host]:port (the host '
          'defaults to 127.0.0.1); repeatable; "off" drops the default '
          'load sink of a server without sinks', _endpoint, '[HOST]:PORT',
          repeat=','),
        o(('--admin',), 'admin', 'STATSD_ADMIN',
          'admin console (etsy statsd\'s management port) on [host]:port, '
          'the host defaulting to 127.0.0.1, or "off" (default '
          '127.0.0.1:8126)', _endpoint, '[HOST]:PORT|off'),
        o(('-f', '--flush'), 'flush_interval', 'STATSD_FLUSH',
          'flush interval in seconds, fractions allowed (default 10)',
          number(0, above=True), 'SECONDS'),
        o(('-p', '--percent'), 'percent_thresholds', 'STATSD_PERCENT',
          'timer percentile to compute, negative for the top values; '
          'repeatable (default 90)', _percent, 'N', repeat=','),
        o(('-x', '--prefix'), 'key_prefix', 'STATSD_KEY_PREFIX',
          'prefix every received key with PREFIX and a dot',
          field('key_prefix'), 'PREFIX'),
        o(('--unix-socket',), 'unix_socket', 'STATSD_UNIX_SOCKET',
          'also listen on a Unix stream socket at PATH', str, 'PATH'),
        o(('--unix-socket-mode',), 'unix_socket_mode', 'STATSD_UNIX_SOCKET_MODE',
          'permission bits of the Unix socket file, in octal (e.g. 660)',
          _octal, 'MODE'),
        o(('--unix-datagram',), 'unix_datagram', 'STATSD_UNIX_DATAGRAM',
          'also receive datagrams on a Unix datagram socket at PATH '
          "(DogStatsD clients' socket_path)", str, 'PATH'),
        o(('--unix-datagram-mode',), 'unix_datagram_mode', 'STATSD_UNIX_DATAGRAM_MODE',
          'permission bits of the Unix datagram socket file, in octal (e.g. 660)',
          _octal, 'MODE'),
        o(('--udp-receive-buffer',), 'udp_receive_buffer',
          'STATSD_UDP_RECEIVE_BUFFER',
          'UDP receive buffer (SO_RCVBUF) to ask for, in bytes; K, M and G '
          'suffixes allowed (default 8M)', _size, 'BYTES'),
        o(('--max-line-length',), 'max_line_length', 'STATSD_MAX_LINE_LENGTH',
          'longest line accepted over TCP or the Unix socket, in bytes '
          '(default 64K)', _size, 'BYTES'),
        o(('--max-connections',), 'max_connections', 'STATSD_MAX_CONNECTIONS',
          'TCP and Unix stream connections served at once; more are '
          'refused (default 1024)', number(1, integer=True), 'N'),
        o(('--idle-timeout',), 'idle_timeout', 'STATSD_IDLE_TIMEOUT',
          'seconds a TCP or Unix stream connection may stay silent before '
          'it is closed, 0 for never (default 600)', number(0), 'SECONDS'),
        o(('--shutdown-timeout',), 'shutdown_timeout', 'STATSD_SHUTDOWN_TIMEOUT',
          'seconds to deliver the final flush on SIGTERM/SIGINT (default 5)',
          number(0), 'SECONDS'),
        o(('--sink-buffer-bytes',), 'sink_buffer_bytes', 'STATSD_SINK_BUFFER_BYTES',
          'bytes of undelivered flushes kept per sink (default 64M)',
          _size, 'BYTES'),
        o(('--sink-buffer-flushes',), 'sink_buffer_flushes',
          'STATSD_SINK_BUFFER_FLUSHES',
          'undelivered flushes kept per sink (default 720)',
          number(1, integer=True), 'N'),
        o(('--legacy-namespace',), 'legacy_namespace', 'STATSD_LEGACY_NAMESPACE',
          "etsy statsd's legacy Graphite names (default on)", switch=True),
        o(('--global-prefix',), 'global_prefix', 'STATSD_GLOBAL_PREFIX',
          'first segment of every name, non-legacy only (default stats)',
          field('global_prefix'), 'PREFIX'),
        o(('--prefix-counter',), 'prefix_counter', 'STATSD_PREFIX_COUNTER',
          'counter segment, non-legacy only (default counters)',
          field('prefix_counter'), 'PREFIX'),
        o(('--prefix-timer',), 'prefix_timer', 'STATSD_PREFIX_TIMER',
          'timer segment, non-legacy only (default timers)',
          field('prefix_timer'), 'PREFIX'),
        o(('--prefix-gauge',), 'prefix_gauge', 'STATSD_PREFIX_GAUGE',
          'gauge segment, non-legacy only (default gauges)',
          field('prefix_gauge'), 'PREFIX'),
        o(('--prefix-set',), 'prefix_set', 'STATSD_PREFIX_SET',
          'set segment, non-legacy only (default sets)',
          field('prefix_set'), 'PREFIX'),
        o(('--global-suffix',), 'global_suffix', 'STATSD_GLOBAL_SUFFIX',
          'last segment of every name (default none)',
          field('global_suffix'), 'SUFFIX'),
        o(('--prefix-stats',), 'prefix_stats', 'STATSD_PREFIX_STATS',
          "namespace of the server's own metrics (default statsd)",
          field('prefix_stats'), 'PREFIX'),
        o(('--flush-counts',), 'flush_counts', 'STATSD_FLUSH_COUNTS',
          'also send raw counter counts (default on)', switch=True),
        o(('--key-name-sanitize',), 'key_name_sanitize',
          'STATSD_KEY_NAME_SANITIZE',
          'clean received names of characters Graphite cannot take '
          '(default on)', switch=True),
        o(('--delete-idle-stats',), 'delete_idle_stats', 'STATSD_DELETE_IDLE_STATS',
          'drop metrics that received nothing in an interval instead of '
          'sending zeros or the last gauge value (default off)', switch=True),
        o(('--delete-counters',), 'delete_counters', 'STATSD_DELETE_COUNTERS',
          'drop idle counters (default: as --delete-idle-stats)', switch=True),
        o(('--delete-timers',), 'delete_timers', 'STATSD_DELETE_TIMERS',
          'drop idle timers (default: as --delete-idle-stats)', switch=True),
        o(('--delete-sets',), 'delete_sets', 'STATSD_DELETE_SETS',
          'drop idle sets (default: as --delete-idle-stats)', switch=True),
        o(('--delete-gauges',), 'delete_gauges', 'STATSD_DELETE_GAUGES',
          'drop idle gauges (default: as --delete-idle-stats)', switch=True),
        o(('--gauges-max-ttl',), 'gauges_max_ttl', 'STATSD_GAUGES_MAX_TTL',
          'flushes an idle gauge survives before it is dropped (default 1)',
          field('gauges_max_ttl', int), 'N'),
        o(('--max-names',), 'max_names', 'STATSD_MAX_NAMES',
          'names (counters, timers, gauges, sets) held at once; samples of '
          'further new names are dropped and counted in statsd.names_dropped '
          '(default 500000)', field('max_names', int), 'N'),
        o(('--max-timer-values',), 'max_timer_values', 'STATSD_MAX_TIMER_VALUES',
          'values kept per timer per interval; beyond it a uniform sample '
          'is kept and percentiles become estimates (default 100000)',
          field('max_timer_values', int), 'N'),
        o(('--keep-container-id',), 'keep_container_id', 'STATSD_KEEP_CONTAINER_ID',
          'turn the DogStatsD container id (|c:ID) into a container_id tag '
          'instead of dropping it (default off: a series per container)',
          switch=True),
        o(('-D', '--daemonize'), 'daemonize', 'STATSD_DAEMONIZE',
          'detach and run in the background (needs python-daemon); '
          'systemd and other supervisors run it in the foreground instead',
          switch=True),
        o(('--pidfile',), 'pidfile', 'STATSD_PIDFILE',
          "write the server's pid to PATH, locked while it runs and removed "
          'on exit; a second server given the same file refuses to start',
          str, 'PATH'),
        o(('--log-file',), 'log_file', 'STATSD_LOG_FILE',
          'append the log to PATH instead of standard error; SIGHUP reopens '
          'it (after logrotate)', str, 'PATH'),
        o(('--log-format',), 'log_format', 'STATSD_LOG_FORMAT',
          'logfmt (key=value pairs, the default) or json; one line per record',
          _log_format, 'FORMAT'),
        o(('--histogram',), 'histograms', 'STATSD_HISTOGRAM',
          'histogram for timers (ms, h, d) whose key contains METRIC, or '
          'starts with it when it ends with * ("api.*", "*" for all), with '
          'the bins\' upper bounds (last may be inf), also a Prometheus '
          'histogram on /metrics; repeatable, first match wins; separate '
          'several with ";" in the variable',
          _histogram, 'METRIC=BIN,...', repeat=';'),
        o(('--timer-metrics',), 'calculated_timer_metrics', 'STATSD_TIMER_METRICS',
          'comma-separated timer statistics to send (default all)',
          _timer_metrics, 'NAMES'),
    ]


#: Options that go to :class:`AggregatorConfig` under the same name.
AGGREGATOR_FIELDS = {f.name for f in dataclasses.fields(AggregatorConfig)}


