"""Synchronous statsd clients with the pystatsd 4 API: UDP, TCP and Unix sockets.

Strategy: the metric methods live in :class:`StatsClientBase` (module
``_syncbase``), which hands each formatted line to the transport's ``_emit``;
a :class:`Pipeline` collects lines and gives them to the client's
``_send_batch``, which packs datagrams (UDP) or writes once (streams).  Bad
values are dropped and counted, never raised.

``incr(stat)`` with the defaults is most of the traffic, so the UDP client
keeps its finished datagram per name and a pipeline its finished line: the
call is then one dictionary look-up and one ``sendto`` (or ``append``).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import typing
from collections.abc import Callable, Mapping

from sprockets_statsd import _emitter
from sprockets_statsd._booleans import parse_boolean
from sprockets_statsd._hosts import unix_socket
from sprockets_statsd._packing import MAX_UNIX_DATAGRAM_SIZE, datagrams, payload_counts
from sprockets_statsd._ports import check_port
from sprockets_statsd._streamclients import TCPStatsClient, UnixSocketStatsClient
from sprockets_statsd._syncbase import Pipeline, StatsClientBase
from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.metrics import encode

__all__ = [
    'MAX_UDP_PAYLOAD',
    'Pipeline',
    'StatsClient',
    'StatsClientBase',
    'TCPStatsClient',
    'UnixDatagramStatsClient',
    'UnixSocketStatsClient',
    'from_env',
]

logger = logging.getLogger(__name__)

#: The largest UDP payload IPv4 can carry (65535 minus the IP and UDP
#: headers).  A larger ``maxudpsize`` would only turn into failed sends.
MAX_UDP_PAYLOAD = 65_507

_Tags = typing.Optional[Mapping[str, object]]  # noqa: UP045 - a runtime alias on 3.10


class _DatagramClient(StatsClientBase):
    """Datagrams over a non-blocking, unconnected socket: every send names the server."""

    _addr: typing.Any
    _maxudpsize: int

    def _open(self, family: int, addr: typing.Any) -> None:
        self._addr = addr
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        # A full socket buffer drops the metric instead of stalling the caller.
        self._sock.setblocking(False)
        self._sendto = self._sock.sendto

    def _bind(self) -> None:
        super()._bind()
        # incr(stat) with the defaults, ready to send.
        self._payloads = self._formatter.increment_payloads

    def close(self) -> None:
        """Close the socket; later metrics are dropped and counted."""
        self._sock.close()

    def incr(self, stat: str, count: float = 1, rate: float = 1, *, tags: _Tags = None) -> None:
        """Increment the counter `stat`; see :meth:`StatsClientBase.incr`."""
        if count == 1 and rate == 1 and tags is None and count is not True:
            payload = self._payloads.get(stat) or self._formatter.increment_payload(stat)
            try:
                self._sendto(payload, self._addr)
            except OSError as error:
                self._send_failed(error)
        else:
            self._metric(_emitter.COUNTER, stat, count, rate, tags)

    def _emit(self, data: str) -> None:
        try:
            payload = data.encode()
        except UnicodeEncodeError:
            payload = encode(data)
        try:
            self._sendto(payload, self._addr)
        except OSError as error:
            self._send_failed(error)

    def _send_failed(self, error: OSError, count: int = 1) -> None:
        drops = self._drops
        with drops.lock:
            drops.send_failed += count
            drops.warn.warning('send', 'statsd send to %s failed: %s', self._addr, error)

    def _send_batch(self, lines: list[str]) -> None:
        data = encode('\n'.join(lines))
        if len(data) <= self._maxudpsize:
            self._send_datagram(data, len(lines))
            return
        payloads = [encode(line) for line in lines]
        packed = datagrams(payloads, self._maxudpsize)
        for datagram, count in zip(packed, payload_counts(payloads, packed), strict=True):
            self._send_datagram(datagram, count)

    def _send_datagram(self, data: bytes, count: int) -> None:
        """Send one datagram of `count` metrics; a refusal drops and counts them all."""
        try:
            self._sendto(data, self._addr)
        except OSError as error:
            self._send_failed(error, count)


class StatsClient(_DatagramClient):
    """Sends metrics over UDP; the pystatsd ``StatsClient``.

    :param host: the statsd server's host name or address
    :param port: its UDP port
    :param prefix: prepended to every stat name with a ``.``
    :param maxudpsize: the largest datagram a :class:`Pipeline` sends, in
        bytes; 512 is safe on any network path, a LAN takes 1432 or more
    :param ipv6: resolve `host` to an IPv6 address (``AF_INET6``) instead of
        IPv4 (``AF_INET``, the default)
    :param tag_dialect: see :class:`StatsClientBase`
    :param tags: constant tags, see :class:`StatsClientBase`
    :param random_source: see :class:`StatsClientBase`
    :raises ~sprockets_statsd.ConfigurationError: for a bad port or
        ``maxudpsize``
    :raises socket.gaierror: when `host` has no address in the chosen family

    The host is resolved once, here, in the family `ipv6` selects: with the
    default ``ipv6=False``, ``localhost`` is always ``127.0.0.1`` even where
    the resolver lists ``::1`` first, so an IPv4-only server gets the
    metrics.  Sends never block and never raise: a failed send is counted in
    :attr:`~StatsClientBase.dropped_send_failed`.  One client may be used
    from many threads at once.
    """

    def __init__(
        self,
        host: str = 'localhost',
        port: int = 8125,
        prefix: str | None = None,
        maxudpsize: int = 512,
        ipv6: bool = False,
        *,
        tag_dialect: str | None = None,
        tags: Mapping[str, object] | None = None,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(prefix, tag_dialect=tag_dialect, tags=tags, random_source=random_source)
        self._maxudpsize = _check_size('maxudpsize', maxudpsize)
        wanted = socket.AF_INET6 if ipv6 else socket.AF_INET
        family, _, _, _, addr = socket.getaddrinfo(
            host, check_port(port, 'port'), wanted, socket.SOCK_DGRAM
        )[0]
        self._open(family, addr)

class UnixDatagramStatsClient(_DatagramClient):
    """Sends metrics to a Unix datagram socket, as DogStatsD clients do on Kubernetes.

    :param socket_path: the path of the server's datagram socket (datadogpy's
        ``socket_path``)
    :param prefix: prepended to every stat name with a ``.``
    :param max_datagram_size: the largest datagram a :class:`Pipeline`
        sends, in bytes; by default
        :data:`~sprockets_statsd.protocols.MAX_UNIX_DATAGRAM_SIZE` (8192,
        what a DogStatsD agent reads by default)
    :param tag_dialect: see :class:`StatsClientBase`
    :param tags: constant tags, see :class:`StatsClientBase`
    :param random_source: see :class:`StatsClientBase`
    :raises ~sprockets_statsd.ConfigurationError: for an empty path or a bad
        ``max_datagram_size``

    Like :class:`StatsClient` it never blocks and never raises for the
    network: a datagram the kernel refuses (no socket at the path, nobody
    bound to it, or the server's queue full: ``ENOENT``, ``ECONNREFUSED``,
    ``EAGAIN``) is dropped and counted in
    :attr:`~StatsClientBase.dropped_send_failed`.  Nothing is connected, so
    a server restarted at the same path gets the next metric.  One client
    may be used from many threads at once.
    """

    def __init__(
        self,
        socket_path: str,
        prefix: str | None = None,
        max_datagram_size: int = MAX_UNIX_DATAGRAM_SIZE,
        *,
        tag_dialect: str | None = None,
        tags: Mapping[str, object] | None = None,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(prefix, tag_dialect=tag_dialect, tags=tags, random_source=random_source)
        path = os.fspath(socket_path)
        if not path:
            raise ConfigurationError('socket_path must name the server\'s datagram socket')
        self._maxudpsize = _check_size('max_datagram_size', max_datagram_size)
        self._open(socket.AF_UNIX, path)


def _check_size(name: str, size: object) -> int:
    """Return `size` if it is a datagram size this client can send."""
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_UDP_PAYLOAD:
        raise ConfigurationError(
            f'{name} must be an int from 1 to {MAX_UDP_PAYLOAD}, not {size!r}'
        )
    return size


def from_env(
    environ: Mapping[str, str] | None = None,
    *,
    tag_dialect: str | None = None,
    tags: Mapping[str, object] | None = None,
    random_source: Callable[[], float] = random.random,
) -> StatsClient | UnixSocketStatsClient | UnixDatagramStatsClient:
    """Build a client from ``STATSD_*`` environment variables.

    A :class:`StatsClient` (UDP), or for a ``STATSD_HOST`` of
    ``unix:/path`` (or an absolute path) a :class:`UnixSocketStatsClient`,
    for ``unixgram:/path`` a :class:`UnixDatagramStatsClient`: the hosts
    the :class:`~sprockets_statsd.Connector` takes.

    :param environ: the variables to read (:data:`os.environ` if omitted)
    :param tag_dialect: passed to the client
    :param tags: passed to the client
    :param random_source: passed to the client
    :raises ~sprockets_statsd.ConfigurationError: naming the variable
        whose value cannot be used, including a ``STATSD_HOST`` that does not
        resolve in the chosen address family

    ``STATSD_HOST`` (default ``localhost``), ``STATSD_PORT`` (``8125``),
    ``STATSD_PREFIX`` (none), ``STATSD_MAXUDPSIZE`` (``512``) and
    ``STATSD_IPV6`` (``0``; also ``1``, ``true``/``false``, ``yes``/``no``,
    ``on``/``off``).  An empty variable counts as unset.  The host is
    resolved when this function runs, never at import time.  A Unix socket
    ignores the port and ``STATSD_IPV6``; a Unix datagram socket takes
    ``STATSD_MAXUDPSIZE`` as its largest datagram (by default 8192).
    """
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        return env.get(name) or None

    host = get('STATSD_HOST') or 'localhost'
    try:
        unix = unix_socket(host)
    except ConfigurationError as error:
        raise ConfigurationError(f'STATSD_HOST: {error}') from None
    if unix is not None:
        kind, path = unix
        if kind == 'unix':
            return UnixSocketStatsClient(path, get('STATSD_PREFIX'), tag_dialect=tag_dialect,
                                         tags=tags, random_source=random_source)
        size = get('STATSD_MAXUDPSIZE')
        return UnixDatagramStatsClient(
            path, get('STATSD_PREFIX'),
            MAX_UNIX_DATAGRAM_SIZE if size is None else _env_size(size),
            tag_dialect=tag_dialect, tags=tags, random_source=random_source)
    ipv6_text = get('STATSD_IPV6') or '0'
    ipv6 = parse_boolean(ipv6_text)
    if ipv6 is None:
        raise ConfigurationError(
            f'STATSD_IPV6 must be 0 or 1 (or true/false, yes/no, on/off), '
            f'not {ipv6_text.strip().lower()!r}'
        )
    port_text, size_text = get('STATSD_PORT'), get('STATSD_MAXUDPSIZE')
    options = {
        'port': 8125 if port_text is None else _env_integer('STATSD_PORT', port_text),
        'maxudpsize': 512 if size_text is None else _env_size(size_text),
    }
    check_port(options['port'], 'STATSD_PORT')
    try:
        return StatsClient(
            host,
            prefix=get('STATSD_PREFIX'),
            ipv6=ipv6,
            tag_dialect=tag_dialect,
            tags=tags,
            random_source=random_source,
            **options,
        )
    except socket.gaierror as error:
        family, other, switch = ('IPv6', 'IPv4', '0') if ipv6 else ('IPv4', 'IPv6', '1')
        raise ConfigurationError(
            f'STATSD_HOST {host!r} has no {family} address ({error}): fix the name, '
            f'or set STATSD_IPV6={switch} if the server listens on {other}'
        ) from error


def _env_integer(name: str, text: str) -> int:
    """The integer variable `name`, whose value is `text`."""
    try:
        return int(text)
    except ValueError:
        raise ConfigurationError(f'{name} must be an integer, not {text!r}') from None


def _env_size(text: str) -> int:
    """``STATSD_MAXUDPSIZE``, whose value is `text`."""
    size = _env_integer('STATSD_MAXUDPSIZE', text)
    if not 0 < size <= MAX_UDP_PAYLOAD:
        raise ConfigurationError(
            f'STATSD_MAXUDPSIZE must be from 1 to {MAX_UDP_PAYLOAD}, not {size}'
        )
    return size
