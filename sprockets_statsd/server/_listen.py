"""Listening TCP sockets for the HTTP endpoints and the admin console."""

from __future__ import annotations

import errno
import logging
import socket
import typing

from sprockets_statsd.server.listeners import format_address

__all__ = ['LISTEN_BACKLOG', 'ListeningSockets', 'bind_or_warn', 'bind_tcp']

logger = logging.getLogger(__name__)

#: Pending connections the kernel queues: queries and consoles are few.
LISTEN_BACKLOG = 128


def _resolve(host: str, port: int) -> list[tuple[socket.AddressFamily, tuple[object, ...]]]:
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
        for family, address in _resolve(host, port):
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
