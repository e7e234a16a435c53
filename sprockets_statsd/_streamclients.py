"""The synchronous stream clients: TCP and Unix stream sockets.

Both write newline-terminated lines on a connection opened by the first
metric (or :meth:`~TCPStatsClient.connect`), and differ only in how they
open it.  Unlike the datagram clients they block while writing and raise
:class:`OSError` when the server cannot be reached; after such an error
the connection is closed and the next metric connects again.
"""

from __future__ import annotations

import os
import random
import socket
import typing
from collections.abc import Callable, Mapping

from sprockets_statsd._ports import check_port
from sprockets_statsd._syncbase import StatsClientBase
from sprockets_statsd.metrics import encode

__all__ = ['TCPStatsClient', 'UnixSocketStatsClient']


class _StreamClient(StatsClientBase):
    """Newline-terminated lines over a stream socket, connected lazily."""

    _sock: socket.socket | None = None
    _timeout: float | None = None

    def _open(self) -> socket.socket:
        raise NotImplementedError

    def connect(self) -> None:
        """Connect now (closing any current connection).

        Sending connects by itself when there is no connection, so calling
        this is optional.

        :raises OSError: such as :class:`ConnectionRefusedError` or
            :class:`TimeoutError` when the server cannot be reached
        """
        self.close()
        self._sock = self._open()

    def close(self) -> None:
        """Close the connection, if any; the next metric reconnects."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def reconnect(self) -> None:
        """Close the connection and open a new one: :meth:`close` then :meth:`connect`."""
        self.close()
        self.connect()

    def _emit(self, data: str) -> None:
        self._write(encode(data + '\n'))

    def _send_batch(self, lines: list[str]) -> None:
        self._write(encode('\n'.join(lines) + '\n'))

    def _write(self, data: bytes) -> None:
        if self._sock is None:
            self.connect()
        try:
            self._sock.sendall(data)  # type: ignore[union-attr]
        except OSError:
            # Drop the broken connection so that the next metric reconnects.
            self.close()
            raise


class TCPStatsClient(_StreamClient):
    """Sends metrics over TCP; the pystatsd ``TCPStatsClient``.

    :param host: the statsd server's host name or address
    :param port: its TCP port
    :param prefix: prepended to every stat name with a ``.``
    :param timeout: seconds a connect or send may block (``None``: no limit)
    :param ipv6: connect over IPv6 (``AF_INET6``) instead of IPv4
    :param tag_dialect: see :class:`StatsClientBase`
    :param tags: constant tags, see :class:`StatsClientBase`
    :param random_source: see :class:`StatsClientBase`
    :raises ~sprockets_statsd.ConfigurationError: for a bad port

    The connection is opened by the first metric (or :meth:`connect`), the
    host being resolved then in the family `ipv6` selects.  Unlike
    :class:`StatsClient`, the metric methods block while the data is
    written and raise :class:`OSError` when the server cannot be reached or
    the connection breaks; after such an error the connection is closed,
    and the next metric connects again.  Not thread-safe.
    """

    def __init__(
        self,
        host: str = 'localhost',
        port: int = 8125,
        prefix: str | None = None,
        timeout: float | None = None,
        ipv6: bool = False,
        *,
        tag_dialect: str | None = None,
        tags: Mapping[str, object] | None = None,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(prefix, tag_dialect=tag_dialect, tags=tags, random_source=random_source)
        self._host = host
        self._port = check_port(port, 'port')
        self._timeout = timeout
        self._ipv6 = ipv6

    def _open(self) -> socket.socket:
        wanted = socket.AF_INET6 if self._ipv6 else socket.AF_INET
        family, _, _, _, addr = socket.getaddrinfo(
            self._host, self._port, wanted, socket.SOCK_STREAM
        )[0]
        return _connected(socket.socket(family, socket.SOCK_STREAM), addr, self._timeout)


class UnixSocketStatsClient(_StreamClient):
    """Sends metrics over a Unix stream socket; the pystatsd ``UnixSocketStatsClient``.

    :param socket_path: the path of the server's (writable) socket
    :param prefix: prepended to every stat name with a ``.``
    :param timeout: seconds a connect or send may block (``None``: no limit)
    :param tag_dialect: see :class:`StatsClientBase`
    :param tags: constant tags, see :class:`StatsClientBase`
    :param random_source: see :class:`StatsClientBase`

    Connects lazily and raises on connection errors exactly like
    :class:`TCPStatsClient`.  Not thread-safe.
    """

    def __init__(
        self,
        socket_path: str,
        prefix: str | None = None,
        timeout: float | None = None,
        *,
        tag_dialect: str | None = None,
        tags: Mapping[str, object] | None = None,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(prefix, tag_dialect=tag_dialect, tags=tags, random_source=random_source)
        self._socket_path = os.fspath(socket_path)
        self._timeout = timeout

    def _open(self) -> socket.socket:
        return _connected(
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), self._socket_path, self._timeout
        )


def _connected(sock: socket.socket, address: typing.Any, timeout: float | None) -> socket.socket:
    """Connect `sock` to `address`, closing it if that fails."""
    try:
        sock.settimeout(timeout)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock
