"""Deliver flushes to Graphite over persistent connections, or to a stream."""

# Strategy: the app hands every sink each flush's snapshot without waiting.
# Each sink runs two tasks.  The render task turns snapshots into payloads
# in a thread (so that a large flush does not stall the receive loop) and
# keeps them in a bounded buffer; the delivery task sends the buffer oldest
# first.  Since they run apart, a delivery that is stuck (Graphite gone, a
# pipe nobody reads) never stops the bound from being applied: when it is
# exceeded the oldest flush is dropped, counted and logged (throttled).
#
# A payload is a sequence of byte chunks, written one after the other, so
# that a renderer may hand over a large flush in pieces.
#
# Graphite: one long-lived connection, reconnected with exponential
# back-off.  The kernel taking a payload does not mean the receiver read
# it: a receiver that resets the connection throws away what its kernel
# acknowledged but it never read.  So each payload written stays held,
# "unconfirmed", until the receiver's kernel has acknowledged all of it
# (SIOCOUTQ on Linux gives the bytes still unacknowledged) and the
# connection then stayed open for CONFIRM_DELAY, or until the receiver
# closed the connection cleanly (a clean close means it read everything it
# had acknowledged; unread data makes the kernel reset instead).  When the
# connection fails, the unconfirmed payloads are sent again, in order, on
# the next one: Graphite keeps one value per name and timestamp, so a
# repeated line is harmless.  A connection that fails is aborted with a
# reset, so its descriptor and kernel send queue are released at once.
#
# Stream (stdout): written by a daemon thread of the sink's own, straight
# to the file descriptor when there is one, so that a write that blocks for
# ever (a pipe nobody reads) holds neither the render thread nor the
# process at exit.  That thread also renders, chunk by chunk as it writes,
# so a flush is never held whole (80 MB for a million counters): the
# stream sink's payloads are deferred until written, and count towards
# the byte bound by an estimate until then.  (A Graphite sink must hold
# its payloads whole, to send them again when a connection fails.)

from __future__ import annotations

import abc
import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import io
import logging
import os
import queue
import socket
import struct
import sys
import threading
import time
import typing
from collections.abc import Iterable, Sequence

from sprockets_statsd._throttle import Throttle
from sprockets_statsd.server import graphite
from sprockets_statsd.server._jsnumber import js_round
from sprockets_statsd.server._memory import release_free_memory
from sprockets_statsd.server.aggregator import Snapshot
from sprockets_statsd.server.config import (
    DEFAULT_BUFFER_BYTES,
    DEFAULT_BUFFER_FLUSHES,
    DEFAULT_RECONNECT_MAX_DELAY,
    AggregatorConfig,
)
from sprockets_statsd.server.listeners import format_address

__all__ = [
    'DEFAULT_BUFFER_BYTES',
    'DEFAULT_BUFFER_FLUSHES',
    'DEFAULT_CONFIRM_DELAY',
    'BufferedSink',
    'GraphiteSink',
    'Payload',
    'Sink',
    'StreamSink',
]

logger = logging.getLogger(__name__)

#: The lower bound of the exponential reconnect back-off, in seconds (the
#: upper one is :data:`.DEFAULT_RECONNECT_MAX_DELAY`).
DEFAULT_RECONNECT_DELAY = 0.5

#: How long a connection attempt or the sending of one flush may take.
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_SEND_TIMEOUT = 30.0

#: Seconds a payload stays held after the receiver's kernel acknowledged
#: it, the connection still open, before it counts as read.  Carbon reads
#: within milliseconds; a receiver that resets sooner than this after
#: acknowledging gets the payload again on the next connection.
DEFAULT_CONFIRM_DELAY = 10.0

#: While closing, how often a sink asks the kernel whether the receiver
#: acknowledged the last bytes (TCP has no event for it).
_ACK_POLL = 0.02

#: Linux's SIOCOUTQ (the same number as TIOCOUTQ): bytes of a TCP socket's
#: send queue the peer has not acknowledged yet.
_SIOCOUTQ: int | None = 0x5411 if sys.platform.startswith('linux') else None

# A payload handed to a sink: bytes, or an iterable of byte chunks.
Rendered = bytes | Iterable[bytes]

#: Bytes per name a deferred payload counts for until it is written: a
#: counter's two lines take about 80, a timer's fourteen about 700.
_ESTIMATED_BYTES_PER_NAME = 100


@dataclasses.dataclass(eq=False)
class Payload:
    """One flush rendered for delivery: byte chunks sent in order.

    :param chunks: the pieces, concatenated on the wire
    :param timestamp: the flush's timestamp (for log messages)
    """

    chunks: Sequence[bytes]
    timestamp: int = 0
    #: Total bytes of the chunks.
    size: int = 0
    #: Bytes written on the connection up to the end of this payload.
    end: int = 0
    #: When the receiver's kernel was first seen to acknowledge all of it.
    acked_at: float | None = None
    #: Renders the chunks as they are written, for a payload that is
    #: deferred (`chunks` empty, `size` an estimate until then).
    deferred: typing.Callable[[], Iterable[bytes]] | None = None
    #: Bytes actually written.
    written: int = 0

    def __post_init__(self) -> None:
        if self.deferred is None:
            self.size = sum(map(len, self.chunks))

    @classmethod
    def of(cls, rendered: Rendered, timestamp: int = 0) -> Payload:
        """Wrap what a renderer returned: bytes or an iterable of chunks."""
        if isinstance(rendered, (bytes, bytearray, memoryview)):
            return cls((bytes(rendered),), timestamp)
        return cls(tuple(rendered), timestamp)


class Sink(abc.ABC):
    """Where the server hands every flush: Graphite, a stream, the load sink."""

    #: What the sink reports about its previous send, as Graphite lines
    #: (the admin console's ``stats``); ``None`` for a sink that sends none.
    stats: graphite.GraphiteStats | None = None

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """How logs and the startup line refer to this sink."""

    @abc.abstractmethod
    def start(self) -> None:
        """Start working on the running event loop."""

    @abc.abstractmethod
    def submit(self, snapshot: Snapshot) -> None:
        """Take one flush; never blocks, never raises.

        :param snapshot: the flush, from :meth:`.Aggregator.flush`
        """

    @abc.abstractmethod
    async def close(self, timeout: float) -> None:
        """Deliver what is queued, waiting at most `timeout` seconds, and stop.

        :param timeout: seconds to wait for delivery
        """


class BufferedSink(Sink):
    """A sink that renders flushes and delivers each, in order, from a bound buffer.

    :param config: the aggregator's configuration, used for rendering
    :param buffer_bytes: most bytes of undelivered flushes kept
    :param buffer_flushes: most undelivered flushes kept (rendered or not)
    :param executor: renders payloads off the event loop (default: the
        loop's default executor)

    The newest flush is always kept, even when it alone exceeds
    `buffer_bytes`; beyond either bound the oldest are dropped, counted
    in :attr:`dropped_flushes` and logged (at most once per ten seconds).
    """

    def __init__(
        self,
        config: AggregatorConfig,
        *,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        buffer_flushes: int = DEFAULT_BUFFER_FLUSHES,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self.config = config
        #: Like the reference (since 2020), `last_flush` starts at the
        #: startup time and `last_exception` at 0.
        self.stats: graphite.GraphiteStats = graphite.GraphiteStats(
            last_flush=js_round(time.time())
        )
        #: Flushes given up on (buffer full, a failed write, or undelivered
        #: at shutdown).
        self.dropped_flushes = 0
        self._buffer_bytes = buffer_bytes
        self._buffer_flushes = buffer_flushes
        self._executor = executor
        self._snapshots: collections.deque[Snapshot] = collections.deque()
        #: Rendered payloads not yet handed to the transport, oldest first.
        self._payloads: collections.deque[Payload] = collections.deque()
        #: The payload being written, if any.
        self._sending: Payload | None = None
        #: Bytes of every payload held: waiting, being written, unconfirmed.
        self._held_bytes = 0
        self._snapshot_added = asyncio.Event()
        self._payload_added = asyncio.Event()
        self._closing = False
        self._rendered_all = False
        self._task: asyncio.Task[None] | None = None
        self._throttle = Throttle(logger)

    @property
    def buffered_flushes(self) -> int:
        """Flushes waiting for delivery (rendered or not)."""
        return (
            len(self._payloads)
            + len(self._snapshots)
            + (self._sending is not None)
        )

    def start(self) -> None:
        """Start the worker tasks on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f'statsd sink {self.name}'
        )

    def submit(self, snapshot: Snapshot) -> None:
        """Queue one flush for delivery; never blocks, never raises.

        :param snapshot: the flush, from :meth:`.Aggregator.flush`
        """
        self._snapshots.append(snapshot)
        self._snapshot_added.set()
        self._make_room()

    async def close(self, timeout: float) -> None:
        """Deliver what is queued, waiting at most `timeout` seconds.

        Whatever is still undelivered then is dropped, counted and logged.

        :param timeout: seconds to wait for delivery
        """
        self._closing = True
        self._snapshot_added.set()
        self._payload_added.set()
        if self._task is None:
            return
        task, self._task = self._task, None
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except asyncio.TimeoutError:
            task.cancel()
            await asyncio.wait({task})
        self._abandon()
        left = self.buffered_flushes
        if left:
            self.dropped_flushes += left
            logger.warning(
                'sink %s: %d flush(es) not delivered before shutdown were dropped',
                self.name,
                left,
            )

    def _abandon(self) -> None:  # a hook, empty by default
        """Release what delivery holds after the worker stopped."""

    # -- the buffer ---------------------------------------------------------

    def _held_flushes(self) -> int:
        """Flushes held: waiting, being written, or awaiting confirmation."""
        return self.buffered_flushes

    def _keep(self, payload: Payload) -> None:
        self._payloads.append(payload)
        self._held_bytes += payload.size
        self._payload_added.set()
        self._make_room()

    def _make_room(self) -> None:
        """Apply the bounds, oldest first; log drops (throttled)."""
        before = self.dropped_flushes
        while (
            self._held_flushes() > self._buffer_flushes
            or self._held_bytes > self._buffer_bytes
        ) and self._evict():
            pass
        if self.dropped_flushes == before:
            return
        self._throttle.warning(
            'buffer full',
            'sink %s: buffer full, dropped the oldest undelivered flush(es) '
            '(%d dropped so far)',
            self.name,
            self.dropped_flushes,
        )

    def _evict(self) -> bool:
        """Drop the oldest flush held, unless it is the newest or in flight.

        :returns: whether anything was let go
        """
        if len(self._payloads) + len(self._snapshots) <= 1:
            return False
        if self._payloads:
            self._release(self._payloads.popleft())
        else:
            self._snapshots.popleft()
        self.dropped_flushes += 1
        return True

    def _release(self, payload: Payload) -> None:
        self._held_bytes -= payload.size

    # -- rendering ----------------------------------------------------------

    async def _run(self) -> None:
        renderer = asyncio.get_running_loop().create_task(self._render_all())
        try:
            await self._deliver_all()
        finally:
            renderer.cancel()
            await asyncio.wait({renderer})

    async def _render_all(self) -> None:
        try:
            while True:
                if self._snapshots:
                    snapshot = self._snapshots[0]
                    payload = await self._render(snapshot)
                    # An eviction may have taken it meanwhile.
                    if self._snapshots and self._snapshots[0] is snapshot:
                        self._snapshots.popleft()
                        if payload is not None:
                            self._keep(payload)
                    continue
                if self._closing:
                    return
                await _wait(self._snapshot_added)
        finally:
            self._rendered_all = True
            self._payload_added.set()

    async def _render(self, snapshot: Snapshot) -> Payload | None:
        """The flush's payload; ``None`` (and the flush dropped) on error."""
        # A copy: the thread must not see the stats change under it.
        stats = dataclasses.replace(self.stats)
        try:
            rendered = await asyncio.get_running_loop().run_in_executor(
                self._executor, _render, snapshot, self.config, stats
            )
            return Payload.of(rendered, snapshot.timestamp)
        except Exception:
            self.dropped_flushes += 1
            logger.exception('sink %s: cannot render a flush, dropped', self.name)
            return None

    def _sent(self, started: float, length: int) -> None:
        """Record a successful send that began at `started` (perf_counter)."""
        self.stats.last_flush = js_round(time.time())
        # Whole milliseconds, like the reference's Date.now() difference.
        self.stats.flush_time = js_round((time.perf_counter() - started) * 1000)
        self.stats.flush_length = length

    def _done(self) -> bool:
        """Whether the sink is closing with nothing left to deliver."""
        return (
            self._closing
            and self._rendered_all
            and not self._payloads
            and self._sending is None
        )

    @abc.abstractmethod
    async def _deliver_all(self) -> None:
        """Deliver payloads until :meth:`_done`."""


def _render(
    snapshot: Snapshot, config: AggregatorConfig, stats: graphite.GraphiteStats
) -> bytes:
    """The whole payload, and the memory its rendering freed given back."""
    payload = graphite.render(snapshot, config, stats)
    release_free_memory()
    return payload


async def _wait(event: asyncio.Event, timeout: float | None = None) -> None:
    """Wait for `event` (at most `timeout` seconds), then clear it."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
    event.clear()


class _Writer(threading.Thread):
    """A daemon thread that writes payloads to a stream, one at a time.

    A daemon thread, so that a write blocked for ever does not keep the
    process from exiting.  Writes go straight to the stream's file
    descriptor when it has one: a thread left blocked inside the stream's
    own buffer would hold the buffer's lock, which the interpreter takes
    at exit to flush standard output.
    """

    def __init__(self, stream: typing.BinaryIO, name: str) -> None:
        super().__init__(name=f'statsd-write {name}', daemon=True)
        self._stream = stream
        self._jobs: queue.SimpleQueue[
            tuple[Payload, asyncio.AbstractEventLoop, asyncio.Future[None]] | None
        ] = queue.SimpleQueue()
        try:
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            self._fd = None

    def write(self, payload: Payload) -> asyncio.Future[None]:
        """Queue `payload`; the future completes once it is written."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._jobs.put((payload, loop, future))
        return future

    def stop(self) -> None:
        """Let the thread end once its current write (if any) returns."""
        self._jobs.put(None)

    def run(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(Exception):
                self._stream.flush()  # anything written before the sink
        while (job := self._jobs.get()) is not None:
            payload, loop, future = job
            error: BaseException | None = None
            try:
                chunks: Iterable[bytes] = payload.chunks
                if payload.deferred is not None:
                    chunks = _RenderedChunks(payload.deferred())
                payload.written = self._write(chunks)
            except Exception as exc:
                error = exc
            if payload.deferred is not None:
                release_free_memory()  # what the rendering left in the heap
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(_settle, future, error)

    def _write(self, chunks: Iterable[bytes]) -> int:
        fd = self._fd
        written = 0
        if fd is None:
            for chunk in chunks:
                self._stream.write(chunk)
                written += len(chunk)
            self._stream.flush()
            return written
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
            written += len(chunk)
        return written


class _RenderError(Exception):
    """Rendering a deferred payload failed (the exception is the cause)."""


class _RenderedChunks:
    """A deferred payload's chunks; a rendering error becomes _RenderError."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)

    def __iter__(self) -> _RenderedChunks:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except StopIteration:
            raise
        except Exception as exc:
            raise _RenderError(str(exc)) from exc


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class StreamSink(BufferedSink):
    """Write each flush's Graphite lines to a binary stream (e.g. stdout).

    :param stream: where to write; flushed after every flush
    :param config: the aggregator's configuration
    :param buffer_bytes: most bytes of unwritten flushes kept
    :param buffer_flushes: most unwritten flushes kept
    :param executor: renders payloads off the event loop

    Writes happen in a daemon thread of the sink's own, so a stream that
    blocks (a pipe nobody reads) holds up neither rendering nor the
    process's exit; meanwhile new flushes are kept within the bounds.
    """

    def __init__(
        self,
        stream: typing.BinaryIO,
        config: AggregatorConfig,
        *,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        buffer_flushes: int = DEFAULT_BUFFER_FLUSHES,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        super().__init__(
            config,
            buffer_bytes=buffer_bytes,
            buffer_flushes=buffer_flushes,
            executor=executor,
        )
        self._stream = stream
        self._writer: _Writer | None = None

    @property
    def name(self) -> str:
        return getattr(self._stream, 'name', None) or 'stream'

    def start(self) -> None:
        self._writer = _Writer(self._stream, str(self.name))
        self._writer.start()
        super().start()

    def _abandon(self) -> None:
        if self._writer is not None:
            self._writer.stop()
            self._writer = None

    async def _render(self, snapshot: Snapshot) -> Payload | None:
        """A deferred payload: the writer thread renders it as it writes."""
        stats = dataclasses.replace(self.stats)  # as it is now, like Sink's
        return Payload(
            (),
            snapshot.timestamp,
            size=_ESTIMATED_BYTES_PER_NAME * snapshot.num_stats,
            deferred=functools.partial(
                graphite.render_chunks, snapshot, self.config, stats
            ),
        )

    async def _deliver_all(self) -> None:
        assert self._writer is not None
        while not self._done():
            if not self._payloads:
                await _wait(self._payload_added)
                continue
            payload = self._sending = self._payloads.popleft()
            started = time.perf_counter()
            try:
                await self._writer.write(payload)
            except _RenderError:
                self.dropped_flushes += 1
                logger.exception('sink %s: cannot render a flush, dropped', self.name)
            except Exception as exc:
                # A closed pipe will not heal: report and drop this flush.
                self.stats.last_exception = js_round(time.time())
                self.dropped_flushes += 1
                self._throttle.warning(
                    'write', 'sink %s: cannot write: %s', self.name, exc
                )
            else:
                self._sent(started, payload.written)
            self._sending = None
            self._release(payload)


class _Connection(asyncio.Protocol):
    """A write-only client connection that honours flow control.

    :param on_eof: called when the receiver closes its side cleanly, while
        the socket can still be asked what it acknowledged
    :param on_lost: called when the connection is gone
    """

    def __init__(
        self,
        on_eof: typing.Callable[[_Connection], None],
        on_lost: typing.Callable[[], None],
    ) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        #: Bytes the kernel has taken on this connection.
        self.written = 0
        self._on_eof = on_eof
        self._on_lost = on_lost
        self._drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)
        # Pause as soon as anything is buffered: a send counts as written
        # only once the kernel holds all of it, so that `written` is exact.
        self.transport.set_write_buffer_limits(high=0)

    def data_received(self, data: bytes) -> None:
        """Graphite's plaintext receiver never answers; ignore anything."""

    def eof_received(self) -> bool | None:
        self._on_eof(self)
        return None  # the peer is gone: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake(exc or ConnectionResetError('connection closed by peer'))
        self._on_lost()

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake(None)

    def _wake(self, exc: Exception | None) -> None:
        waiter, self._drained = self._drained, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    def acknowledged(self) -> int:
        """Bytes the receiver's kernel acknowledged (all written if unknown)."""
        unacked = 0
        sock = self.transport.get_extra_info('socket') if self.transport else None
        if _SIOCOUTQ is not None and sock is not None and sock.fileno() >= 0:
            import fcntl

            with contextlib.suppress(OSError):
                raw = fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b'\0' * 4)
                unacked = struct.unpack('i', raw)[0]
        return self.written - unacked

    async def send(self, chunks: Sequence[bytes]) -> None:
        """Write `chunks` and wait until the kernel has taken them."""
        for chunk in chunks:
            if self.lost or self.transport is None:
                raise ConnectionResetError('connection closed by peer')
            self.transport.write(chunk)
            if self._drained is not None:
                await self._drained
            self.written += len(chunk)
        if self.lost:
            raise ConnectionResetError('connection closed by peer')

    def abort(self) -> None:
        """Close at once with a reset: no descriptor or send queue lingers."""
        if self.transport is None:
            return
        sock = self.transport.get_extra_info('socket')
        if sock is not None and sock.fileno() >= 0:
            with contextlib.suppress(OSError):
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)
                )
        self.transport.abort()


class GraphiteSink(BufferedSink):
    """Send flushes to a Graphite plaintext receiver (carbon) over TCP.

    :param host: the receiver's name or address
    :param port: the receiver's port (carbon's default is 2003)
    :param config: the aggregator's configuration
    :param buffer_bytes: most bytes of undelivered flushes kept
    :param buffer_flushes: most undelivered flushes kept
    :param reconnect_delay: first back-off delay after a failure, seconds
    :param reconnect_max_delay: the back-off's ceiling, seconds
    :param connect_timeout: seconds a connection attempt may take
    :param send_timeout: seconds the sending of one flush may take; a
        connection that exceeds it is closed
    :param confirm_delay: seconds a written flush stays held after the
        receiver acknowledged it, to be sent again if the connection fails
    :param executor: renders payloads off the event loop

    A flush whose send fails, or that was written on a connection that
    fails before it was confirmed, is sent again in full on the next
    connection; Graphite stores the repeated points once.
    """

    def __init__(
        self,
        host: str,
        port: int,
        config: AggregatorConfig,
        *,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        buffer_flushes: int = DEFAULT_BUFFER_FLUSHES,
        reconnect_delay: float = DEFAULT_RECONNECT_DELAY,
        reconnect_max_delay: float = DEFAULT_RECONNECT_MAX_DELAY,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        confirm_delay: float = DEFAULT_CONFIRM_DELAY,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        super().__init__(
            config,
            buffer_bytes=buffer_bytes,
            buffer_flushes=buffer_flushes,
            executor=executor,
        )
        self.host = host
        self.port = port
        self._reconnect_delay = min(reconnect_delay, reconnect_max_delay)
        self._reconnect_max_delay = reconnect_max_delay
        self._connect_timeout = connect_timeout
        self._send_timeout = send_timeout
        self._confirm_delay = confirm_delay
        #: Written on the current connection, not yet confirmed read.
        self._unconfirmed: collections.deque[Payload] = collections.deque()
        self._connection: _Connection | None = None
        self._delay = self._reconnect_delay
        self._next_attempt = 0.0
        self._failing = False
        #: Flushes sent again because their connection failed.
        self.resent_flushes = 0
        #: Written flushes forgotten unconfirmed to make room in the buffer.
        self.unconfirmed_forgotten = 0

    @property
    def name(self) -> str:
        return format_address((self.host, self.port))

    @property
    def connected(self) -> bool:
        """Whether the sink holds an open connection right now."""
        return self._connection is not None and not self._connection.lost

    @property
    def unconfirmed_flushes(self) -> int:
        """Flushes written but held in case the connection fails."""
        return len(self._unconfirmed)

    def _held_flushes(self) -> int:
        return self.buffered_flushes + len(self._unconfirmed)

    def _evict(self) -> bool:
        if self._unconfirmed:
            # Written and acknowledged or on their way: likely read, so they
            # make room before anything that never left.
            self._release(self._unconfirmed.popleft())
            self.unconfirmed_forgotten += 1
            return True
        return super()._evict()

    def _abandon(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if not connection.lost:
            acked = connection.acknowledged()
            unacked = sum(p.end > acked for p in self._unconfirmed)
            if unacked:
                logger.warning(
                    'sink %s: %d written flush(es) not yet acknowledged by '
                    'the receiver at shutdown',
                    self.name,
                    unacked,
                )
        while self._unconfirmed:
            self._release(self._unconfirmed.popleft())
        transport = connection.transport
        if transport is not None and transport.get_write_buffer_size() == 0:
            transport.close()  # the kernel still sends what it holds
        else:
            connection.abort()

    async def _deliver_all(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            connection = self._connection
            if connection is not None:
                if connection.lost:
                    if self._lost(connection):
                        self._failed('delivery', ConnectionResetError('connection lost'))
                    continue
                self._confirm(connection)
            if self._done():
                if not self._unconfirmed_unacked():
                    return
                await _wait(self._payload_added, _ACK_POLL)
                continue
            if not self._payloads:
                await _wait(self._payload_added, self._next_check())
                continue
            if not self.connected:
                delay = self._next_attempt - loop.time()
                if delay > 0:
                    await _wait(self._payload_added, delay)
                    continue
                await self._connect()
                continue
            await self._send()

    def _next_check(self) -> float | None:
        """Seconds until unconfirmed payloads are worth looking at again."""
        if not self._unconfirmed or not self.connected:
            return None
        return self._confirm_delay / 2

    def _unconfirmed_unacked(self) -> bool:
        connection = self._connection
        if connection is None or connection.lost or not self._unconfirmed:
            return False
        return connection.acknowledged() < self._unconfirmed[-1].end

    def _confirm(self, connection: _Connection, *, everything: bool = False) -> None:
        """Forget unconfirmed payloads that the receiver has surely read.

        :param everything: the receiver closed cleanly, so whatever it
            acknowledged it read
        """
        if not self._unconfirmed:
            return
        acked = connection.acknowledged()
        now = time.monotonic()
        while self._unconfirmed:
            payload = self._unconfirmed[0]
            if payload.end > acked:
                break
            if payload.acked_at is None:
                payload.acked_at = now
            if not everything and now - payload.acked_at < self._confirm_delay:
                break
            self._release(self._unconfirmed.popleft())
            # Read by the receiver: the connection works.
            self._delay = self._reconnect_delay
            self._failing = False
        for payload in self._unconfirmed:
            if payload.end > acked:
                break
            if payload.acked_at is None:
                payload.acked_at = now

    def _on_eof(self, connection: _Connection) -> None:
        if connection is self._connection:
            self._confirm(connection, everything=True)

    def _lost(self, connection: _Connection) -> int:
        """Put back what `connection` left unconfirmed, to be sent again.

        :returns: how many flushes will be sent again
        """
        if connection is self._connection:
            self._connection = None
        connection.abort()
        count = len(self._unconfirmed)
        if count:
            self.resent_flushes += count
            for payload in self._unconfirmed:
                payload.acked_at = None
            self._payloads.extendleft(reversed(self._unconfirmed))
            self._unconfirmed.clear()
            self._throttle.warning(
                'resend',
                'sink %s: the connection failed before %d written flush(es) '
                'were known to be read; sending them again',
                self.name,
                count,
            )
        return count

    def _failed(self, what: str, exc: BaseException) -> None:
        loop = asyncio.get_running_loop()
        self.stats.last_exception = js_round(time.time())
        self._next_attempt = loop.time() + self._delay
        level = logging.DEBUG if self._failing else logging.WARNING
        logger.log(
            level,
            'sink %s: %s failed (%s), %d flush(es) buffered, retrying in %.1f s',
            self.name,
            what,
            str(exc) or type(exc).__name__,
            self.buffered_flushes,
            self._delay,
        )
        self._failing = True
        self._delay = min(self._delay * 2, self._reconnect_max_delay)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self._on_eof, self._payload_added.set),
                    self.host,
                    self.port,
                ),
                self._connect_timeout,
            )
        except Exception as exc:  # OSError, a timeout, a bad host name...
            self._failed('connecting', exc)
            return
        self._connection = connection
        log = logger.warning if self._failing else logger.info
        log('sink %s: connected', self.name)

    async def _send(self) -> None:
        connection = self._connection
        assert connection is not None
        payload = self._sending = self._payloads.popleft()
        started = time.perf_counter()
        try:
            await asyncio.wait_for(
                connection.send(payload.chunks), self._send_timeout
            )
        except Exception as exc:  # OSError or a timeout
            self._sending = None
            self._payloads.appendleft(payload)
            self._lost(connection)
            self._failed('sending', exc)
            return
        self._sending = None
        payload.end = connection.written
        payload.acked_at = None
        if connection.lost:
            # Lost while the last bytes went out: send it again, too.
            self._unconfirmed.append(payload)
            self._lost(connection)
            self._failed('sending', ConnectionResetError('connection lost'))
            return
        self._unconfirmed.append(payload)
        self._sent(started, payload.size)
