"""Bind the server's sockets: statsd UDP and TCP pairs, Unix sockets, TCP services."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
import sys
import typing

__all__ = [
    'DEFAULT_UDP_RECEIVE_BUFFER',
    'LISTEN_BACKLOG',
    'ListeningSockets',
    'bind_or_warn',
    'bind_sockets',
    'bind_tcp',
    'bind_unix_datagram_socket',
    'bind_unix_socket',
    'format_address',
    'remove_stale_socket',
]

logger = logging.getLogger(__name__)

#: Asked-for UDP receive buffer.  Bursts arrive faster than one interpreter
#: can parse them; the kernel queue is what absorbs them (and flushes, which
#: pause the receive loop for a moment) instead of dropping datagrams.
DEFAULT_UDP_RECEIVE_BUFFER = 8 * 1024 * 1024

#: Linux's SO_RCVBUFFORCE (not exported by the socket module): lets root
#: exceed net.core.rmem_max.
_SO_RCVBUFFORCE = getattr(
    socket, 'SO_RCVBUFFORCE', 33 if sys.platform.startswith('linux') else None
)

#: Attempts at finding a free port for both UDP and TCP when port 0 is asked.
_PORT_ATTEMPTS = 20


def format_address(address: typing.Any) -> str:
    """Render a socket address as ``host:port``, ``[v6]:port`` or a path.

    :param address: what :meth:`socket.socket.getsockname` returned
    """
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'
    return str(address)


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


def remove_stale_socket(path: str) -> None:
    """Remove the socket file at `path`, if there is one (a file that is not
    a socket is left alone)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)


def _bind_unix(
    path: str, kind: socket.SocketKind, mode: int | None, receive_buffer: int | None
) -> socket.socket:
    remove_stale_socket(path)
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
