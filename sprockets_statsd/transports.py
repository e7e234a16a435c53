"""How the Processor reaches a server: addresses parsed once, and the factories that connect.

Strategy: the :class:`~sprockets_statsd.processor.Processor` never opens a
socket itself.  It awaits a *transport factory*, a callable that returns a
connected :class:`~sprockets_statsd.protocols.StatsdProtocol`, and drives the
protocol through that narrow interface.  :func:`socket_factory` connects over
TCP, UDP, Unix stream or Unix datagram sockets; :class:`MemoryServer` is an
in-memory double of a statsd server, so that tests of the processor's logic
(reconnecting, flushing, accounting) run without sockets and await what they
expect instead of polling for it.

A statsd host is parsed by :func:`unix_socket` and nowhere else (it lives in
``_hosts``, which the synchronous clients share): ``unix:/path`` (or an
absolute path) is a Unix stream socket, ``unixgram:/path`` a Unix datagram
socket, and anything else a host name or address.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import typing
from collections.abc import Awaitable, Callable

from sprockets_statsd._hosts import unix_socket
from sprockets_statsd._ports import check_port
from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.protocols import (
    StatsdProtocol,
    TCPProtocol,
    UDPProtocol,
    UnixDatagramProtocol,
    UnixStreamProtocol,
)

__all__ = [
    'Address',
    'MemoryServer',
    'MemoryTransport',
    'TransportFactory',
    'parse_address',
    'socket_factory',
    'unix_socket',
]

#: Opens one connection: returns a protocol whose ``connected`` event is set,
#: or raises :class:`OSError`.  The processor bounds it with its
#: ``connect_timeout``.
TransportFactory = Callable[[], Awaitable[StatsdProtocol]]

_NETWORK_KINDS = {socket.IPPROTO_TCP: 'tcp', socket.IPPROTO_UDP: 'udp'}


@dataclasses.dataclass(frozen=True)
class Address:
    """Where the statsd server listens, and over what."""

    #: ``'tcp'``, ``'udp'``, ``'unix'`` (stream) or ``'unixgram'`` (datagram).
    kind: str
    #: The host name or address (network kinds) or the socket's path.
    host: str
    #: The port; 0 for Unix sockets.
    port: int = 0

    @property
    def is_unix(self) -> bool:
        """Is this a Unix socket (stream or datagram)?"""
        return self.kind in ('unix', 'unixgram')

    def __str__(self) -> str:
        return self.host if self.is_unix else f'{self.host}:{self.port}'


def parse_address(host: object, port: object, ip_protocol: object) -> Address:
    """Check the Processor's `host`, `port` and `ip_protocol` and return the address.

    For a Unix socket the port and protocol are ignored.

    :raises ~sprockets_statsd.errors.ConfigurationError: naming the argument
        that cannot be used
    """
    if not isinstance(host, str) or not host.strip():
        raise ConfigurationError(
            'host must name the statsd server (a host name, an address, '
            'unix:/path/to.sock or unixgram:/path/to.sock)'
        )
    unix = unix_socket(host)
    if unix is not None:
        return Address(*unix)
    port = check_port(port, 'port', text=False)
    kind = _NETWORK_KINDS.get(ip_protocol)  # type: ignore[call-overload]
    if kind is None:
        raise ConfigurationError(
            f'ip_protocol must be socket.IPPROTO_TCP ({socket.IPPROTO_TCP}) '
            f'or socket.IPPROTO_UDP ({socket.IPPROTO_UDP}), not {ip_protocol!r}'
        )
    return Address(kind, host, port)


def socket_factory(address: Address, *, max_datagram_size: int) -> TransportFactory:
    """Return a factory that connects to `address` with real sockets.

    :param address: from :func:`parse_address`
    :param max_datagram_size: the largest datagram (UDP and Unix datagrams)

    A host name is resolved again on every connection.
    """

    async def connect() -> StatsdProtocol:
        loop = asyncio.get_running_loop()
        if address.kind == 'unix':
            _, unix = await loop.create_unix_connection(UnixStreamProtocol, address.host)
            return unix
        if address.kind == 'unixgram':
            return UnixDatagramProtocol.open(address.host, max_datagram_size)
        if address.kind == 'udp':
            _, udp = await loop.create_datagram_endpoint(
                lambda: UDPProtocol(max_datagram_size), remote_addr=(address.host, address.port)
            )
            return udp
        _, tcp = await loop.create_connection(TCPProtocol, address.host, address.port)
        return tcp

    return connect


class MemoryTransport(asyncio.WriteTransport):
    """One connection of a :class:`MemoryServer`: writes land in the server.

    Call :meth:`lose` to end it as a reset would.
    """

    def __init__(self, server: MemoryServer, protocol: StatsdProtocol) -> None:
        super().__init__()
        self._server = server
        self._protocol = protocol
        self._closing = False

    def get_extra_info(self, name: str, default: typing.Any = None) -> typing.Any:
        return 'memory' if name == 'peername' else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._server._received(bytes(data))

    def sendto(self, data: bytes, addr: object = None) -> None:
        self._server._received(data, datagram=True)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def lose(self, error: Exception) -> None:
        """End the connection with `error`, as a reset would."""
        if not self._closing:
            self._closing = True
            self._protocol.connection_lost(error)


class MemoryServer:
    """An in-memory statsd server: a transport factory for tests, without sockets.

    :param datagram: behave like a UDP server (each write is a datagram)

    Pass it as ``transport_factory`` to a :class:`~.Processor` (or in the
    ``processor_options`` of a :class:`~.Connector`).  Each call opens a
    connection unless :attr:`refuse` says otherwise; everything written ends
    up in :attr:`lines`.  Waiting is event-driven: :meth:`wait_for` returns as
    soon as a condition holds, with no polling and a bounded wait.
    """

    def __init__(self, *, datagram: bool = False) -> None:
        self._datagram = datagram
        #: Every complete line received, in order.
        self.lines: list[bytes] = []
        #: Every datagram (or write) received, in order.
        self.packets: list[bytes] = []
        #: Connection attempts so far, refused ones included.
        self.attempts = 0
        #: Refuse this many of the next attempts (``ConnectionRefusedError``).
        self.refuse = 0
        #: Make attempts hang until cancelled (a black-holed server).
        self.hang = False
        #: The transports of every accepted connection, oldest first.
        self.connections: list[MemoryTransport] = []
        self._partial = b''
        self._changed: asyncio.Event | None = None

    async def __call__(self) -> StatsdProtocol:
        """Open a connection (the transport factory interface)."""
        self.attempts += 1
        self._notify()
        if self.hang:
            await asyncio.get_running_loop().create_future()
        if self.refuse > 0:
            self.refuse -= 1
            raise ConnectionRefusedError('refused by the memory server')
        protocol: StatsdProtocol = UDPProtocol(65_535) if self._datagram else TCPProtocol()
        transport = MemoryTransport(self, protocol)
        self.connections.append(transport)
        protocol.connection_made(transport)
        return protocol

    def _received(self, data: bytes, datagram: bool = False) -> None:
        self.packets.append(data)
        if datagram or self._datagram:
            self.lines.extend(line for line in data.split(b'\n') if line)
        else:
            *complete, self._partial = (self._partial + data).split(b'\n')
            self.lines.extend(line for line in complete if line)
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = ''
    ) -> None:
        """Return once `predicate()` is true, checking after every event.

        :raises AssertionError: when it is still false after `timeout` seconds
        """

        async def changes() -> None:
            while not predicate():
                self._changed = asyncio.Event()
                await self._changed.wait()

        try:
            await asyncio.wait_for(changes(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(
                f'timed out after {timeout}s waiting for {what or predicate}'
            ) from None
        finally:
            self._changed = None

    async def wait_for_lines(self, count: int, timeout: float = 10.0) -> list[bytes]:
        """Return the lines once at least `count` have arrived."""
        await self.wait_for(lambda: len(self.lines) >= count, timeout, f'{count} lines')
        return self.lines
