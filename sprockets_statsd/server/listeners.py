"""Receive statsd packets over UDP, TCP and Unix stream and datagram sockets; bind TCP services."""

# Strategy: asyncio's own datagram transport reads one datagram per turn of
# the event loop, which caps a CPython server far below what a busy host
# sends.  The UDP listener therefore registers its non-blocking socket with
# ``loop.add_reader`` and drains up to ``batch_size`` datagrams per wake-up,
# so that one loop iteration amortises its overhead over many packets while
# TCP connections and the flush timer still get their turn.  Stream
# listeners (TCP and Unix) use ordinary protocols: everything up to the last
# newline of the buffered bytes goes on as one packet, the partial tail waits.

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
import sys
import time
import typing

from sprockets_statsd._throttle import Throttle
from sprockets_statsd.server._admission import Admission
from sprockets_statsd.server._lines import LineFramer

__all__ = [
    'DEFAULT_MAX_LINE_LENGTH',
    'DEFAULT_UDP_BATCH_SIZE',
    'DEFAULT_UDP_RECEIVE_BUFFER',
    'LINE_TOO_LONG',
    'LISTEN_BACKLOG',
    'ListeningSockets',
    'PacketReceiver',
    'StreamListener',
    'UDPListener',
    'bind_or_warn',
    'bind_sockets',
    'bind_tcp',
    'bind_unix_datagram_socket',
    'bind_unix_socket',
    'format_address',
]

logger = logging.getLogger(__name__)

#: Asked-for UDP receive buffer.  Bursts arrive faster than one interpreter
#: can parse them; the kernel queue is what absorbs them (and flushes, which
#: pause the receive loop for a moment) instead of dropping datagrams.
DEFAULT_UDP_RECEIVE_BUFFER = 8 * 1024 * 1024

#: Datagrams drained per wake-up.  Large enough to amortise the event loop's
#: overhead, small enough (a few milliseconds of parsing) that a TCP client
#: or the flush timer never waits long behind a flood.
DEFAULT_UDP_BATCH_SIZE = 256

#: Longest line, in bytes, accepted on a stream connection.  It bounds the
#: memory a connection can pin with a line that never ends; statsd lines are
#: rarely longer than a few hundred bytes even with tags.
DEFAULT_MAX_LINE_LENGTH = 64 * 1024

#: What a stream listener hands on in place of a line that was too long: it
#: has no ``:``, so the aggregator counts it as a bad line, like any other.
LINE_TOO_LONG = b'statsd-line-too-long'

#: The largest UDP payload (IPv6 without jumbograms): nothing is truncated.
_MAX_DATAGRAM = 65535

#: How long a listener keeps draining its UDP socket when it is closed.
_CLOSE_DRAIN_SECONDS = 1.0

#: Reads (of up to 64 KiB) a stream connection gets when the listener
#: closes, to take in what its client sent before the stop.
_CLOSE_DRAIN_READS = 64

#: Linux's SO_RCVBUFFORCE (not exported by the socket module): lets root
#: exceed net.core.rmem_max.
_SO_RCVBUFFORCE = getattr(
    socket, 'SO_RCVBUFFORCE', 33 if sys.platform.startswith('linux') else None
)

#: Shortest period of the idle-connection sweep, in seconds.
_MIN_SWEEP = 0.05

#: Attempts at finding a free port for both UDP and TCP when port 0 is asked.
_PORT_ATTEMPTS = 20


class PacketReceiver(typing.Protocol):
    """What the listeners feed: :meth:`.Aggregator.receive` fits."""

    def receive(self, packet: bytes) -> None:
        """Take one packet: a datagram, or complete lines from a stream."""


def format_address(address: typing.Any) -> str:
    """Render a socket address as ``host:port``, ``[v6]:port`` or a path.

    :param address: what :meth:`socket.socket.getsockname` returned
    """
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'
    return str(address)


class UDPListener:
    """Drain datagrams from a bound UDP or Unix datagram socket into a receiver.

    :param sock: a bound UDP or Unix datagram socket; the listener owns it
        from now on, and removes the socket file of a Unix one when closed
    :param receiver: gets every datagram, as bytes
    :param batch_size: datagrams read per wake-up of the event loop

    Nothing raises out of the listener: an exception from the socket or the
    receiver is counted in :attr:`errors` and logged (throttled).
    """

    def __init__(
        self,
        sock: socket.socket,
        receiver: PacketReceiver,
        *,
        batch_size: int = DEFAULT_UDP_BATCH_SIZE,
    ) -> None:
        self._sock = sock
        self._receiver = receiver
        self._batch_size = batch_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._throttle = Throttle(logger)
        self.address = sock.getsockname()
        self._unix_path: str | None = (
            self.address if sock.family == socket.AF_UNIX else None
        )
        #: Packets whose handling raised (socket errors included).
        self.errors = 0
        sock.setblocking(False)

    def start(self) -> None:
        """Start reading on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock, self._drain, self._batch_size)

    def close(self) -> None:
        """Stop reading, hand on what is already queued, close the socket."""
        if self._loop is not None:
            self._loop.remove_reader(self._sock)
            self._loop = None
        if self._sock.fileno() < 0:
            return
        # Datagrams the kernel queued before the stop were received: process
        # them, within a bound, so that the final flush includes them.
        deadline = time.monotonic() + _CLOSE_DRAIN_SECONDS
        while self._drain(self._batch_size) and time.monotonic() < deadline:
            pass
        self._sock.close()
        if self._unix_path is not None:
            _remove_stale_socket(self._unix_path)
            self._unix_path = None

    def _drain(self, limit: int) -> bool:
        """Read and hand on up to `limit` datagrams; True if more may wait."""
        recv = self._sock.recv
        receive = self._receiver.receive
        count = 0
        while count < limit:
            try:
                while count < limit:
                    count += 1
                    receive(recv(_MAX_DATAGRAM))
            except (BlockingIOError, InterruptedError):
                return False
            except Exception as exc:
                self.errors += 1
                self._throttle.warning(
                    'packet',
                    'UDP listener %s: a packet failed: %r',
                    format_address(self.address),
                    exc,
                )
        return True


class _LineProtocol(asyncio.Protocol):
    """One stream connection: newline framing with a line-length bound."""

    def __init__(self, listener: StreamListener) -> None:
        self._listener = listener
        self._admission = listener.admission
        self._receive = listener.receiver.receive
        # Partial lines count against the bound all connections share.
        self._framer = LineFramer(
            listener.max_line_length, LINE_TOO_LONG, self._admission.hold_partial
        )
        self._admitted = False
        self.transport: asyncio.Transport | None = None
        #: When data last arrived (time.monotonic()).
        self.last_active = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)
        sock = transport.get_extra_info('socket')
        if not self._admission.admit(
            sock.fileno() if sock is not None else -1, self._listener.description
        ):
            self.transport.abort()
            return
        self._admitted = True
        self._listener.connections.add(self)
        self._listener.accepted += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._listener.connections.discard(self)
        self._admission.release()
        self._framer.clear()

    def close_idle(self) -> None:
        """Close a connection that stayed silent; its last line still counts."""
        self._admission.idle_closed += 1
        logger.debug('stream listener %s: closed an idle connection',
                      self._listener.description)
        self.eof_received()
        if self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        # A client that closes right after its last line may omit the final
        # newline: the line is complete all the same.
        last = self._framer.end()
        if last:
            self._receive(last)
        return None

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        try:
            lines = self._framer.feed(data)
            if lines:
                self._receive(lines)
        except Exception as exc:
            self._framer.clear()
            self._listener.errors += 1
            self._listener.throttle.warning(
                'packet',
                'stream listener %s: a packet failed: %r',
                self._listener.description,
                exc,
            )

    def finish(self) -> None:
        """Take in what the kernel already holds for this connection, close.

        A client's lines that arrived before the server stopped count, even
        if the event loop has not read them yet.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        sock = transport.get_extra_info('socket')
        if sock is not None:
            # A duplicate descriptor: the transport's socket object must not
            # be read behind its back, but the kernel queue is the same.
            with socket.socket(fileno=os.dup(sock.fileno())) as raw:
                raw.setblocking(False)
                for _ in range(_CLOSE_DRAIN_READS):
                    try:
                        data = raw.recv(_MAX_DATAGRAM)
                    except OSError:
                        break
                    if not data:
                        self.eof_received()
                        break
                    self.data_received(data)
        transport.close()


class StreamListener:
    """Accept TCP or Unix stream connections and feed their lines on.

    :param sock: a bound, not yet listening, stream socket (owned from now on)
    :param receiver: gets complete lines, several at a time
    :param max_line_length: longer lines are replaced by :data:`LINE_TOO_LONG`
        (a bad line) and the connection carries on
    :param admission: the bounds on connections, idleness and partial
        lines, shared with the server's other stream listeners (default:
        its own, with the default bounds)
    """

    def __init__(
        self,
        sock: socket.socket,
        receiver: PacketReceiver,
        *,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        admission: Admission | None = None,
    ) -> None:
        self._sock = sock
        self.receiver = receiver
        self.max_line_length = max_line_length
        self.admission = admission if admission is not None else Admission()
        self._sweeper: asyncio.TimerHandle | None = None
        self.address = sock.getsockname()
        self.description = format_address(self.address)
        #: The open connections.
        self.connections: set[_LineProtocol] = set()
        #: Connections accepted so far.
        self.accepted = 0
        self.throttle = Throttle(logger)
        #: Chunks whose handling raised.
        self.errors = 0
        self._server: asyncio.Server | None = None
        self._unix_path: str | None = (
            self.address if sock.family == socket.AF_UNIX else None
        )

    async def start(self) -> None:
        """Start accepting connections on the running event loop."""
        loop = asyncio.get_running_loop()
        if self._unix_path is not None:
            self._server = await loop.create_unix_server(
                lambda: _LineProtocol(self), sock=self._sock
            )
        else:
            self._server = await loop.create_server(
                lambda: _LineProtocol(self), sock=self._sock
            )
        self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        timeout = self.admission.idle_timeout
        if timeout > 0:
            # A silent connection is closed within a quarter of the timeout
            # after it expired: one timer per listener, not per connection.
            self._sweeper = asyncio.get_running_loop().call_later(
                max(timeout / 4, _MIN_SWEEP), self._sweep
            )

    def _sweep(self) -> None:
        deadline = time.monotonic() - self.admission.idle_timeout
        for connection in list(self.connections):
            if connection.last_active <= deadline:
                connection.close_idle()
        self._schedule_sweep()

    async def close(self) -> None:
        """Stop accepting, close every connection, remove a Unix socket file.

        What open connections' clients sent before the stop is taken in
        first (a partial last line is dropped).  Connections the kernel
        accepted but the loop had not yet taken are reset.
        """
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            self._server.close()
        else:
            self._sock.close()
        for connection in list(self.connections):
            connection.finish()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._unix_path is not None:
            _remove_stale_socket(self._unix_path)
            self._unix_path = None


def _set_receive_buffer(sock: socket.socket, size: int) -> None:
    """Ask for a `size`-byte receive buffer and log what the kernel gave."""
    forced = False
    if _SO_RCVBUFFORCE is not None and os.name == 'posix' and os.geteuid() == 0:
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
            forced = True
        except OSError:
            pass
    if not forced:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    effective = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    # Linux reports twice the size asked for (it counts its bookkeeping).
    if sys.platform.startswith('linux'):
        effective //= 2
    if effective < size:
        logger.warning(
            'UDP receive buffer is %d bytes, %d were asked for: raise '
            'net.core.rmem_max (or run as root) to get the full size',
            effective,
            size,
        )
    else:
        logger.info('UDP receive buffer is %d bytes', effective)


def _make_socket(
    family: socket.AddressFamily, kind: socket.SocketKind, address: typing.Any
) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            # Dual stack where the OS allows it: IPv4 clients arrive as
            # mapped addresses on the same socket.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _resolve(host: str, port: int) -> list[tuple[socket.AddressFamily, typing.Any]]:
    """The addresses to bind for `host`: all interfaces when it is empty."""
    if not host:
        if socket.has_ipv6:
            return [(socket.AF_INET6, ('::', port))]
        return [(socket.AF_INET, ('0.0.0.0', port))]
    found: list[tuple[socket.AddressFamily, typing.Any]] = []
    for family, _, _, _, address in socket.getaddrinfo(
        host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
    ):
        if (family, address) not in found:
            found.append((family, address))
    return found


def bind_sockets(
    host: str, port: int, *, udp_receive_buffer: int = DEFAULT_UDP_RECEIVE_BUFFER
) -> tuple[list[socket.socket], list[socket.socket]]:
    """Bind UDP and TCP sockets to every address of `host` on `port`.

    :param host: a name or address; empty means every interface (IPv6
        dual-stack ``::``, or ``0.0.0.0`` where IPv6 is unavailable)
    :param port: the port for both protocols; 0 picks one free port that
        UDP and TCP then share
    :param udp_receive_buffer: SO_RCVBUF asked for on the UDP sockets
    :returns: the UDP sockets and the TCP sockets
    :raises OSError: when an address cannot be bound
    """
    addresses = _resolve(host, port)
    if not host and addresses[0][0] == socket.AF_INET6:
        try:
            return _bind_all(addresses, port, udp_receive_buffer)
        except OSError as exc:
            # IPv6 can exist in the socket module but be switched off in the
            # kernel (no AF_INET6 sockets, or no :: address): fall back to
            # IPv4 on every interface.
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise
            logger.info('IPv6 unavailable (%s), binding 0.0.0.0', exc)
            addresses = [(socket.AF_INET, ('0.0.0.0', port))]
    return _bind_all(addresses, port, udp_receive_buffer)


def _bind_all(
    addresses: list[tuple[socket.AddressFamily, typing.Any]],
    port: int,
    udp_receive_buffer: int,
) -> tuple[list[socket.socket], list[socket.socket]]:
    for attempt in range(_PORT_ATTEMPTS):
        udp: list[socket.socket] = []
        tcp: list[socket.socket] = []
        chosen = port
        try:
            for family, address in addresses:
                address = (address[0], chosen, *address[2:])
                udp.append(_make_socket(family, socket.SOCK_DGRAM, address))
                chosen = udp[-1].getsockname()[1]
                address = (address[0], chosen, *address[2:])
                tcp.append(_make_socket(family, socket.SOCK_STREAM, address))
        except OSError as exc:
            for sock in udp + tcp:
                sock.close()
            # With port 0 the UDP port we got may be taken for TCP: try again.
            if port or exc.errno != errno.EADDRINUSE or attempt + 1 == _PORT_ATTEMPTS:
                raise
            continue
        for sock in udp:
            _set_receive_buffer(sock, udp_receive_buffer)
        return udp, tcp
    raise AssertionError('unreachable')  # pragma: no cover


def _remove_stale_socket(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)


def _bind_unix(
    path: str, kind: socket.SocketKind, mode: int | None, receive_buffer: int | None
) -> socket.socket:
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        sock.bind(path)
        if mode is not None:
            os.chmod(path, mode)
        if receive_buffer is not None:
            _set_receive_buffer(sock, receive_buffer)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_unix_socket(path: str, mode: int | None = None) -> socket.socket:
    """Bind a Unix stream socket at `path`, replacing a stale socket file.

    :param path: the file system path of the socket
    :param mode: permission bits to give the socket file (e.g. ``0o660``)
    :raises OSError: when the path exists and is not a socket, or cannot be
        bound
    """
    return _bind_unix(path, socket.SOCK_STREAM, mode, None)


def bind_unix_datagram_socket(
    path: str, mode: int | None = None, *, receive_buffer: int = DEFAULT_UDP_RECEIVE_BUFFER
) -> socket.socket:
    """Bind a Unix datagram socket at `path`, replacing a stale socket file.

    DogStatsD clients send to such a socket (datadogpy's ``socket_path``)
    where UDP is unavailable or lossy, as between Kubernetes pods sharing a
    host volume.  Each datagram is one packet, as over UDP.

    :param path: the file system path of the socket
    :param mode: permission bits to give the socket file (e.g. ``0o660``)
    :param receive_buffer: SO_RCVBUF to ask for, in bytes
    :raises OSError: when the path exists and is not a socket, or cannot be
        bound
    """
    return _bind_unix(path, socket.SOCK_DGRAM, mode, receive_buffer)


# The listening TCP sockets of the HTTP endpoints and the admin console.

#: Pending connections the kernel queues: queries and consoles are few.
LISTEN_BACKLOG = 128


def _resolve_service(
    host: str, port: int
) -> list[tuple[socket.AddressFamily, tuple[object, ...]]]:
    """The addresses of a TCP service: every interface is IPv4 and IPv6 apart."""
    found: list[tuple[socket.AddressFamily, tuple[object, ...]]] = []
    for family, _, _, _, address in socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        if family in (socket.AF_INET, socket.AF_INET6) and (family, address) not in found:
            found.append((family, tuple(address)))
    return found


def bind_tcp(host: str, port: int) -> list[socket.socket]:
    """Listen on every address of `host`; close them all if one fails.

    :param host: a name or address; empty for every interface (IPv4 and
        IPv6, each on its own socket)
    :param port: the port; 0 picks a free one, shared by all addresses
    :returns: non-blocking listening sockets
    :raises OSError: when an address cannot be bound
    """
    sockets: list[socket.socket] = []
    try:
        for family, address in _resolve_service(host, port):
            if sockets and port == 0:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    # IPv4 has its own socket when the host has both.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(LISTEN_BACKLOG)
            except OSError as exc:
                sock.close()
                # "localhost" names ::1 even where IPv6 is switched off.
                if (  # pragma: no cover - only on hosts without IPv6
                    exc.errno == errno.EADDRNOTAVAIL and family == socket.AF_INET6 and sockets
                ):
                    continue
                raise
            sock.setblocking(False)
            sockets.append(sock)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def bind_or_warn(
    bind: typing.Callable[[str, int], None], host: str, port: int, what: str, required: bool
) -> None:
    """Call ``bind(host, port)``; a failure is an error if `required`.

    An address the user asked for must work; a default one that is taken
    (another server on the same host, say) is logged and skipped.

    :param bind: binds the address, raising :class:`OSError`
    :param host: the host part
    :param port: the port
    :param what: what is bound, for the messages
    :param required: whether a failure stops the server
    :raises OSError: naming the address, when `required`
    """
    where = format_address((host or '*', port))
    try:
        bind(host, port)
    except OSError as exc:
        if required:
            raise OSError(
                exc.errno, f'cannot serve {what} on {where}: {exc.strerror or exc}'
            ) from exc
        logger.warning(
            'cannot serve %s on its default address %s (%s); running without it',
            what, where, exc.strerror or exc,
        )


class ListeningSockets:
    """The bound sockets of a TCP service (the HTTP endpoints, the console)."""

    def __init__(self) -> None:
        self._sockets: list[socket.socket] = []

    @property
    def addresses(self) -> list[typing.Any]:
        """The bound addresses (as :meth:`socket.socket.getsockname` says)."""
        return [sock.getsockname() for sock in self._sockets]

    def bind(self, host: str, port: int) -> None:
        """Bind listening sockets on every address of `host`.

        :param host: a name or address; empty for every interface
        :param port: the port; 0 picks a free one
        :raises OSError: when the address cannot be bound
        """
        self._sockets.extend(bind_tcp(host, port))
