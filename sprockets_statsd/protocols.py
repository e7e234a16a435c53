"""Protocol adapters that move formatted payloads over TCP, UDP and Unix sockets.

Strategy: the :class:`~.Processor` hands each adapter a *batch* of payloads
(``bytes`` without a trailing newline).  The adapter only moves bytes:

* UDP packs newline-joined payloads into datagrams of at most
  ``max_datagram_size`` bytes; a payload larger than that goes alone.
* Streams (TCP, Unix) write the whole batch, newline-terminated, in one
  ``write()``.  Because asyncio transports do not give back what they had
  not written when a connection fails, the adapter keeps references to the
  batches that may still sit in the transport's buffer (the buffer size is
  read after every write) and, when the connection is lost with an error,
  returns the payloads from that tail to the processor for the next
  connection.  A payload cut in the middle is sent again whole: the server
  drops the partial line when the old connection ends.
* Unix datagrams are sent by the adapter itself with non-blocking
  ``sendto`` calls on an unconnected socket, so that a datagram the kernel
  refuses (no server at the path, the server's queue full) is known, dropped
  and counted at once, and a server that comes back at the same path is
  reached again without reconnecting.

Each adapter counts what it handed to the operating system in ``sent`` (less
whatever it later gives back in ``unsent`` or discards in :meth:`abort`) and
what it lost in ``dropped``: it is the one place that knows.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import typing

from sprockets_statsd._packing import MAX_UNIX_DATAGRAM_SIZE, datagrams, payload_counts

__all__ = [
    'MAX_UNIX_DATAGRAM_SIZE',
    'StatsdProtocol',
    'TCPProtocol',
    'UDPProtocol',
    'UnixDatagramProtocol',
    'UnixStreamProtocol',
]

logger = logging.getLogger(__name__)



class StatsdProtocol(asyncio.BaseProtocol):
    """The interface the :class:`~.Processor` drives, for every transport.

    .. attribute:: connected
       :type: asyncio.Event

       Set while the transport can carry payloads.

    .. attribute:: unsent
       :type: list[bytes]

       Payloads that were given to this protocol but are known not to have
       left it; the processor sends them first on the next connection.

    .. attribute:: sent
       :type: int

       Payloads handed to the operating system (and not given back).

    .. attribute:: dropped
       :type: int

       Payloads the operating system refused and that are lost.
    """

    ip_protocol: int = socket.IPPROTO_NONE
    transport: asyncio.BaseTransport | None

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.transport = None
        self.unsent: list[bytes] = []
        self.sent = 0
        self.dropped = 0
        #: The error of the last refused send (adapters that drop), if any.
        self.last_error: OSError | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = asyncio.Event()

    @property
    def buffered_data(self) -> bytes:
        """The unsent payloads as newline-terminated bytes (1.0 compatible)."""
        return b''.join(payload + b'\n' for payload in self.unsent)

    @buffered_data.setter
    def buffered_data(self, data: bytes) -> None:
        self.unsent = [line for line in data.split(b'\n') if line]

    @property
    def closed(self) -> bool:
        """True once the transport has fully closed."""
        return self._closed.is_set()

    @property
    def writable(self) -> bool:
        """False while the transport asked us to pause writing."""
        return self._writable.is_set()

    async def wait_writable(self) -> None:
        """Wait until the transport resumes writing or the connection ends."""
        if self._writable.is_set() or not self.connected.is_set():
            return
        waiters = [asyncio.ensure_future(self._writable.wait()),
                   asyncio.ensure_future(self._closed.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Remember the transport and mark the protocol connected."""
        self.transport = transport
        peer = transport.get_extra_info('peername')
        logger.info('connected to statsd at %s', peer if peer else '(unix socket)')
        self.connected.set()

    def connection_lost(self, exc: Exception | None) -> None:
        """Mark the protocol disconnected."""
        if exc is not None:
            logger.warning('statsd connection lost: %s', exc)
        else:
            logger.debug('statsd connection closed')
        self.connected.clear()
        self._writable.set()
        self._closed.set()

    def pause_writing(self) -> None:
        """The transport's buffer is full: stop handing it payloads."""
        self._writable.clear()

    def resume_writing(self) -> None:
        """The transport's buffer drained: carry on."""
        self._writable.set()

    def send(self, metric: bytes) -> None:
        """Send one payload (sprockets-statsd 1.0 interface)."""
        self.send_batch([metric])

    def send_batch(self, payloads: list[bytes]) -> int:
        """Hand `payloads` to the transport.

        :returns: how many payloads were handed over; the rest were appended
            to :attr:`unsent`, or dropped and counted in :attr:`dropped`
        """
        raise NotImplementedError

    def in_flight(self) -> int:
        """How many handed-over payloads may still sit in the transport."""
        return 0

    def abort(self) -> int:
        """Close at once, discarding the transport's buffer.

        :returns: the number of payloads that were discarded
        """
        lost = self.in_flight()
        self.sent -= lost
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]
        return lost

    async def shutdown(self) -> None:
        """Close the transport after it wrote what it holds; wait for that."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if self.transport is not None:
            await self._closed.wait()


class TCPProtocol(StatsdProtocol, asyncio.Protocol):
    """Newline-terminated payloads over a TCP stream."""

    ip_protocol = socket.IPPROTO_TCP
    transport: asyncio.WriteTransport | None

    def __init__(self) -> None:
        super().__init__()
        # Batches that may still be in the transport's buffer, oldest first,
        # with their size on the wire; and the buffer size seen last.
        self._tail: collections.deque[tuple[list[bytes], int]] = collections.deque()
        self._tail_bytes = 0
        self._buffered = 0

    def eof_received(self) -> bool:
        """The server is closing: stop using this connection, let it drain.

        Returning false makes the transport close itself once its buffer is
        written, so payloads already handed over still reach a server that
        only half-closed its side.
        """
        logger.info('statsd server closed the connection')
        self.connected.clear()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Return the payloads the transport had not written, then disconnect."""
        if exc is not None and self._buffered:
            unwritten = self._unwritten()
            self.sent -= len(unwritten)
            self.unsent[:0] = unwritten
        self._tail.clear()
        self._tail_bytes = self._buffered = 0
        super().connection_lost(exc)

    def resume_writing(self) -> None:
        """Refresh what is known to be written, then carry on."""
        self._observe()
        super().resume_writing()

    def _observe(self) -> None:
        """Read the transport's buffer size and forget batches written since."""
        transport = self.transport
        self._buffered = buffered = (
            transport.get_write_buffer_size() if transport is not None else 0
        )
        if not buffered:
            self._tail.clear()
            self._tail_bytes = 0
            return
        tail = self._tail
        while tail and self._tail_bytes - tail[0][1] >= buffered:
            self._tail_bytes -= tail.popleft()[1]

    def _unwritten(self) -> list[bytes]:
        """The payloads whose bytes were (at least partly) still buffered."""
        skip = self._tail_bytes - self._buffered
        result: list[bytes] = []
        for batch, _ in self._tail:
            for payload in batch:
                skip -= len(payload) + 1
                if skip < 0:
                    result.append(payload)
        return result

    def in_flight(self) -> int:
        """Payloads that may still be in the transport's buffer."""
        self._observe()
        return len(self._unwritten()) if self._buffered else 0

    def send_batch(self, payloads: list[bytes]) -> int:
        """Write all payloads, newline-terminated, in one write."""
        transport = self.transport
        if transport is None or transport.is_closing() or not self.connected.is_set():
            self.unsent.extend(payloads)
            return 0
        payloads.append(b'')  # so the join ends with a newline
        data = b'\n'.join(payloads)
        payloads.pop()
        transport.write(data)
        self._tail.append((payloads, len(data)))
        self._tail_bytes += len(data)
        self._observe()
        self.sent += len(payloads)
        return len(payloads)


class UnixStreamProtocol(TCPProtocol):
    """Newline-terminated payloads over a Unix stream socket.

    Selected by giving the connector a host of ``unix:/path/to.sock`` (or
    an absolute path); the port is then ignored.
    """

    ip_protocol = socket.IPPROTO_IP


class UDPProtocol(StatsdProtocol, asyncio.DatagramProtocol):
    """Payloads packed into datagrams of at most ``max_datagram_size`` bytes.

    :param max_datagram_size: the largest datagram to send, in bytes
    """

    ip_protocol = socket.IPPROTO_UDP
    transport: asyncio.DatagramTransport | None

    def __init__(self, max_datagram_size: int = 512) -> None:
        super().__init__()
        self.max_datagram_size = max_datagram_size

    def error_received(self, exc: Exception) -> None:
        """A send was refused (e.g. nothing listens); UDP carries on."""
        logger.debug('statsd datagram error: %s', exc)

    def send_batch(self, payloads: list[bytes]) -> int:
        """Send the payloads in as few datagrams as fit the size limit."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self.unsent.extend(payloads)
            return 0
        sendto = transport.sendto
        for datagram in datagrams(payloads, self.max_datagram_size):
            sendto(datagram)
        self.sent += len(payloads)
        return len(payloads)


class _SocketTransport(asyncio.BaseTransport):
    """Owns the socket of a :class:`UnixDatagramProtocol` (no event loop I/O needed)."""

    def __init__(self, sock: socket.socket, protocol: StatsdProtocol) -> None:
        super().__init__()
        self.sock = sock
        self._protocol = protocol

    def get_extra_info(self, name: str, default: typing.Any = None) -> typing.Any:
        return self.sock if name == 'socket' else default

    def is_closing(self) -> bool:
        return self.sock.fileno() < 0

    def close(self) -> None:
        if not self.is_closing():
            self.sock.close()
            # Nothing is buffered, so the connection is over at once.
            self._protocol.connection_lost(None)

    def abort(self) -> None:
        self.close()


class UnixDatagramProtocol(StatsdProtocol):
    """Payloads packed into datagrams sent to a Unix datagram socket.

    :param path: the server's socket
    :param max_datagram_size: the largest datagram to send, in bytes

    Selected by giving the connector a host of ``unixgram:/path/to.sock``.
    Every ``sendto`` is non-blocking and names the path, so nothing waits
    for the server: a datagram the kernel refuses (no socket at the path,
    nobody bound to it, or the server's queue full: ``ENOENT``,
    ``ECONNREFUSED``, ``EAGAIN``, ``ENOBUFS``) is dropped and counted in
    :attr:`~StatsdProtocol.dropped`, with a throttled warning from the
    processor's log, and the next batch tries again.
    """

    ip_protocol = socket.IPPROTO_IP
    transport: _SocketTransport | None

    def __init__(self, path: str, max_datagram_size: int = MAX_UNIX_DATAGRAM_SIZE) -> None:
        super().__init__()
        self.path = path
        self.max_datagram_size = max_datagram_size

    @classmethod
    def open(cls, path: str, max_datagram_size: int = MAX_UNIX_DATAGRAM_SIZE
             ) -> UnixDatagramProtocol:
        """Create the (unconnected, non-blocking) socket and the protocol."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        protocol = cls(path, max_datagram_size)
        protocol.connection_made(_SocketTransport(sock, protocol))
        return protocol

    def send_batch(self, payloads: list[bytes]) -> int:
        """Send the payloads in as few datagrams as fit; drop and count refused ones."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self.unsent.extend(payloads)
            return 0
        datagram_list = datagrams(payloads, self.max_datagram_size)
        # How many payloads each datagram holds, to count losses exactly.
        sizes = payload_counts(payloads, datagram_list)
        sendto, path = transport.sock.sendto, self.path
        sent = 0
        for datagram, size in zip(datagram_list, sizes, strict=True):
            try:
                sendto(datagram, path)
            except OSError as error:
                self.dropped += size
                self.last_error = error
            else:
                sent += size
        self.sent += sent
        return sent




ProtocolFactory = typing.Callable[[], StatsdProtocol]
