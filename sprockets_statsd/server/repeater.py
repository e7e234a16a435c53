"""Forward every received packet, unparsed, to other statsd servers.

This is etsy statsd's repeater backend: each packet a listener receives is
sent on as it arrived, before it is parsed, to every ``--repeat`` target
(another statsd tier, a central server, a statsd_exporter during a
migration), over UDP or over one persistent TCP connection per target.
"""

# Strategy: the pure part (the targets in _repeattarget; the datagram
# packing and the bounded buffer in _repeatpacking) touches no socket; the
# connecting and reconnecting every repeater shares is in _repeatbase.  The
# shell never blocks the listeners: a UDP repeater sends each packet with
# one non-blocking send() on a connected socket and drops (and counts) what
# the kernel refuses; a TCP repeater appends the packet to a bounded buffer
# and writes the buffer out once per turn of the event loop, honouring the
# connection's flow control, reconnecting with back-off while the target is
# away.  Drops are counted per repeater and logged at most once per
# throttle interval.

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import typing
from collections.abc import Iterable, Sequence

from sprockets_statsd.server._repeatbase import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_RECONNECT_DELAY,
    DEFAULT_RECONNECT_MAX_DELAY,
    Repeater,
)
from sprockets_statsd.server._repeatpacking import (
    PacketBuffer,
    split_datagrams,
    stream_bytes,
)
from sprockets_statsd.server._repeattarget import TCP, TRANSPORTS, UDP, RepeatTarget
from sprockets_statsd.server.listeners import PacketReceiver

__all__ = [
    'DEFAULT_BUFFER_BYTES',
    'DEFAULT_CONNECT_TIMEOUT',
    'DEFAULT_MAX_DATAGRAM',
    'DEFAULT_RECONNECT_DELAY',
    'DEFAULT_RECONNECT_MAX_DELAY',
    'TCP',
    'TRANSPORTS',
    'UDP',
    'PacketBuffer',
    'RepeatTarget',
    'Repeater',
    'Repeaters',
    'TCPRepeater',
    'UDPRepeater',
    'split_datagrams',
    'stream_bytes',
]

logger = logging.getLogger(__name__)

#: Largest datagram a UDP repeater sends.  A received datagram no longer
#: than this goes on untouched; a longer packet (lines read from a TCP
#: stream, or a client's jumbo datagram) is cut at line ends into datagrams
#: that fit an Ethernet frame, the size etsy statsd recommends for a network
#: that is not loopback.
DEFAULT_MAX_DATAGRAM = 1432

#: Bytes a TCP repeater keeps while its target is slow or away: about two
#: seconds of a busy tier (100k lines/s of 40 bytes), enough to ride out a
#: reconnect, small beside what the aggregator holds.
DEFAULT_BUFFER_BYTES = 8 * 1024 * 1024

#: Bytes handed to a TCP connection at a time, and the connection's write
#: buffer size above which the repeater stops writing until it drains: the
#: bounded buffer, not the transport, is where a backlog waits.
_WRITE_CHUNK = 64 * 1024


async def _resolve(target: RepeatTarget, kind: socket.SocketKind) -> tuple[int, typing.Any]:
    """The first address of `target` for sockets of `kind`."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        target.host, target.port, type=kind
    )
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(f'{target.host} has no address')
    family, _, _, _, address = infos[0]
    return family, address


class UDPRepeater(Repeater):
    """Send each packet as datagrams over a connected UDP socket.

    :param target: where to send (its transport is ``udp``)
    :param max_datagram: longer packets are cut at line ends
    :param kwargs: as for :class:`Repeater`
    """

    def __init__(
        self,
        target: RepeatTarget,
        *,
        max_datagram: int = DEFAULT_MAX_DATAGRAM,
        **kwargs: typing.Any,
    ) -> None:
        super().__init__(target, **kwargs)
        self._max_datagram = max_datagram
        self._sock: socket.socket | None = None

    @property
    def connected(self) -> bool:
        return self._sock is not None

    async def _connect(self) -> None:
        family, address = await _resolve(self.target, socket.SOCK_DGRAM)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def repeat(self, packet: bytes) -> None:
        sock = self._sock
        if sock is None:
            self._drop(1, 'unconnected', 'not connected yet, a packet was dropped')
            return
        if len(packet) <= self._max_datagram:
            datagrams: Iterable[bytes] = (packet,)
        else:
            datagrams = split_datagrams(packet, self._max_datagram)
        for datagram in datagrams:
            try:
                sock.send(datagram)
            except OSError as exc:
                # EAGAIN: the send buffer is full; ECONNREFUSED: nothing
                # listened when an earlier datagram arrived.  Either way this
                # datagram was not sent; the next one is tried afresh.
                self._drop(1, 'send', f'cannot send ({exc.strerror or exc})')
            else:
                self.sent += 1
                self.sent_bytes += len(datagram)

    async def close(self, timeout: float) -> None:
        await super().close(timeout)
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


class _Link(asyncio.Protocol):
    """A TCP repeater's connection: flow control and loss reach the repeater."""

    def __init__(self, repeater: TCPRepeater) -> None:
        self._repeater = repeater
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=_WRITE_CHUNK)

    def data_received(self, data: bytes) -> None:
        """statsd servers do not answer; ignore anything."""

    def eof_received(self) -> bool | None:
        return None  # the target is going away: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self._repeater._link_lost(self, exc)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._repeater._pump()


class TCPRepeater(Repeater):
    """Write each packet, newline-terminated, on one persistent connection.

    :param target: where to send (its transport is ``tcp``)
    :param buffer_bytes: bytes kept while the target is slow or away
    :param kwargs: as for :class:`Repeater`
    """

    def __init__(
        self,
        target: RepeatTarget,
        *,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        **kwargs: typing.Any,
    ) -> None:
        super().__init__(target, **kwargs)
        self.buffer = PacketBuffer(buffer_bytes)
        self._link: _Link | None = None
        self._scheduled = False
        self._emptied = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def connected(self) -> bool:
        return self._link is not None

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        _, link = await loop.create_connection(
            lambda: _Link(self), self.target.host, self.target.port
        )
        self._link = link
        logger.info('repeater %s: connected', self.name)
        self._pump()

    def _link_lost(self, link: _Link, exc: Exception | None) -> None:
        if self._link is link:
            self._link = None
            self._lost.set()
            self._throttle.warning(
                'lost', 'repeater %s: connection lost (%s), reconnecting',
                self.name, exc or 'closed by the target',
            )

    def repeat(self, packet: bytes) -> None:
        dropped = self.buffer.append(stream_bytes(packet))
        if dropped:
            self._drop(dropped, 'full', f'buffer full ({self.buffer.max_bytes} bytes)')
        if not self._scheduled and self._link is not None and self._loop is not None:
            # Once per turn of the loop: the packets of a whole batch of
            # datagrams go out in one write.
            self._scheduled = True
            self._loop.call_soon(self._pump)

    def _pump(self) -> None:
        """Write buffered packets while the connection takes them."""
        self._scheduled = False
        link = self._link
        while self.buffer and link is not None and not link.paused:
            assert link.transport is not None
            data, count = self.buffer.take(_WRITE_CHUNK)
            link.transport.write(data)
            self.sent += count
            self.sent_bytes += len(data)
        if not self.buffer:
            self._emptied.set()

    async def close(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self.buffer:
            # The reconnect task is still running: a target that comes back
            # within the timeout gets what is buffered.
            self._emptied.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._emptied.wait(), timeout)
        await super().close(timeout)
        link, self._link = self._link, None
        if link is not None and link.transport is not None:
            link.transport.close()  # writes out what the transport holds first
            try:
                await asyncio.wait_for(
                    asyncio.shield(link.closed), max(0.0, deadline - loop.time())
                )
            except asyncio.TimeoutError:
                link.transport.abort()
        left = self.buffer.clear()
        if left:
            self.dropped += left
            logger.warning(
                'repeater %s: %d packet(s) not delivered before shutdown were dropped',
                self.name, left,
            )


class _Repeating:
    """A receiver that repeats each packet before handing it on."""

    def __init__(self, receiver: PacketReceiver, repeaters: Sequence[Repeater]) -> None:
        self._receiver = receiver
        self._repeaters = tuple(repeaters)

    def receive(self, packet: bytes) -> None:
        for repeater in self._repeaters:
            try:
                repeater.repeat(packet)
            except Exception:  # a bug must not cost the packet its aggregation
                repeater._drop(1, 'bug', 'a packet could not be repeated')
                logger.debug('repeater %s failed', repeater.name, exc_info=True)
        self._receiver.receive(packet)


def make_repeater(target: RepeatTarget) -> Repeater:
    """The repeater for `target`'s transport."""
    return TCPRepeater(target) if target.transport == TCP else UDPRepeater(target)


class Repeaters:
    """The server's repeaters, one per ``--repeat`` target.

    :param repeaters: the repeaters (see :func:`make_repeater`)
    """

    def __init__(self, repeaters: Sequence[Repeater] = ()) -> None:
        self.repeaters = list(repeaters)

    @classmethod
    def for_targets(cls, targets: Iterable[RepeatTarget]) -> Repeaters:
        """One repeater per target."""
        return cls([make_repeater(target) for target in targets])

    def wrap(self, receiver: PacketReceiver) -> PacketReceiver:
        """A receiver that repeats every packet, then gives it to `receiver`
        (`receiver` itself when there is nothing to repeat to)."""
        return _Repeating(receiver, self.repeaters) if self.repeaters else receiver

    async def start(self) -> None:
        """Connect every repeater (each waits at most its connect timeout)."""
        await asyncio.gather(*(repeater.start() for repeater in self.repeaters))

    async def close(self, timeout: float) -> None:
        """Deliver what is buffered within `timeout` seconds, then close."""
        await asyncio.gather(*(repeater.close(timeout) for repeater in self.repeaters))
