"""Listening TCP sockets for the HTTP endpoints and the admin console."""

from __future__ import annotations

import errno
import socket

__all__ = ['LISTEN_BACKLOG', 'bind_tcp']

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
