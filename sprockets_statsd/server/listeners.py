"""Receive statsd packets over UDP, TCP and Unix stream and datagram sockets."""

# Strategy: asyncio's own datagram transport reads one datagram per turn of
# the event loop, which caps a CPython server far below what a busy host
# sends.  The UDP listener therefore registers its non-blocking socket with
# ``loop.add_reader`` and drains up to ``batch_size`` datagrams per wake-up,
# so that one loop iteration amortises its overhead over many packets while
# TCP connections and the flush timer still get their turn.  It reads them
# with ``recvmmsg`` where it can (``_datagrams``): many per system call, the
# GIL held, so that a thread computing beside the loop does not slow
# receiving down to a datagram per switch interval.  Stream
# listeners (TCP and Unix) use ordinary protocols: everything up to the last
# newline of the buffered bytes goes on as one packet, the partial tail waits.

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import typing

from sprockets_statsd._throttle import Throttle
from sprockets_statsd.server._admission import Admission
from sprockets_statsd.server._datagrams import MAX_DATAGRAM, reader
from sprockets_statsd.server._lines import LineFramer
from sprockets_statsd.server.binding import format_address, remove_stale_socket

__all__ = [
    'DEFAULT_MAX_LINE_LENGTH',
    'DEFAULT_UDP_BATCH_SIZE',
    'LINE_TOO_LONG',
    'PacketReceiver',
    'StreamListener',
    'UDPListener',
]

logger = logging.getLogger(__name__)

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

#: How long a listener keeps draining its UDP socket when it is closed.
_CLOSE_DRAIN_SECONDS = 1.0

#: Reads (of up to 64 KiB) a stream connection gets when the listener
#: closes, to take in what its client sent before the stop.
_CLOSE_DRAIN_READS = 64

#: Shortest period of the idle-connection sweep, in seconds.
_MIN_SWEEP = 0.05

class PacketReceiver(typing.Protocol):
    """What the listeners feed: :meth:`.Aggregator.receive` fits."""

    def receive(self, packet: bytes) -> None:
        """Take one packet: a datagram, or complete lines from a stream."""


class UDPListener:
    """Drain datagrams from a bound UDP or Unix datagram socket into a receiver.

    :param sock: a bound UDP or Unix datagram socket; the listener owns it
        from now on, and removes the socket file of a Unix one when closed
    :param receiver: gets every datagram, as bytes
    :param batch_size: datagrams read per wake-up of the event loop
    :param read_in_batches: read with ``recvmmsg`` where there is one
        (see :mod:`._datagrams`); False reads one datagram per call

    Nothing raises out of the listener: an exception from the socket or the
    receiver is counted in :attr:`errors` and logged (throttled).
    """

    def __init__(
        self,
        sock: socket.socket,
        receiver: PacketReceiver,
        *,
        batch_size: int = DEFAULT_UDP_BATCH_SIZE,
        read_in_batches: bool = True,
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
        self._read = reader(sock, batch=read_in_batches)

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
            remove_stale_socket(self._unix_path)
            self._unix_path = None

    def _drain(self, limit: int) -> bool:
        """Read and hand on up to `limit` datagrams; True if more may wait."""
        receive = self._receiver.receive
        count = 0
        while count < limit:
            try:
                packets = self._read(limit - count)
            except Exception as exc:
                count += 1  # a lasting error must not hold the loop
                self._failed(exc)
                continue
            if not packets:
                return False
            count += len(packets)
            for packet in packets:
                try:
                    receive(packet)
                except Exception as exc:
                    self._failed(exc)
        return True

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        self._throttle.warning(
            'packet', 'UDP listener %s: a packet failed: %r', format_address(self.address), exc)


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
                        data = raw.recv(MAX_DATAGRAM)
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
            remove_stale_socket(self._unix_path)
            self._unix_path = None
