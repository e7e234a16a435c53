"""Deliver flushes to Graphite over persistent connections, or to a stream."""

# Strategy: the app hands every sink each flush's snapshot without waiting.
# A sink's worker task renders the snapshot in a thread (so that a large
# flush does not stall the receive loop), appends the payload to a bounded
# buffer, and sends the buffer oldest first over one long-lived connection.
# While Graphite is unreachable the worker reconnects with exponential
# back-off and the buffer keeps the flushes; when a bound is exceeded the
# oldest flush is dropped, counted and logged.  Each sink keeps its own
# GraphiteStats, since each has its own history of sends.

from __future__ import annotations

import abc
import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import time
import typing

from sprockets_statsd.server import graphite
from sprockets_statsd.server._jsnumber import js_round
from sprockets_statsd.server.aggregator import Snapshot
from sprockets_statsd.server.config import AggregatorConfig
from sprockets_statsd.server.listeners import format_address

__all__ = [
    'DEFAULT_BUFFER_BYTES',
    'DEFAULT_BUFFER_FLUSHES',
    'GraphiteSink',
    'Sink',
    'StreamSink',
]

logger = logging.getLogger(__name__)

#: Bytes of rendered flushes a Graphite sink keeps while it cannot deliver.
DEFAULT_BUFFER_BYTES = 64 * 1024 * 1024

#: Flushes a Graphite sink keeps while it cannot deliver: two hours at the
#: default ten-second interval.
DEFAULT_BUFFER_FLUSHES = 720

#: Bounds of the exponential reconnect back-off, in seconds.
DEFAULT_RECONNECT_DELAY = 0.5
DEFAULT_RECONNECT_MAX_DELAY = 30.0

#: How long a connection attempt or the sending of one flush may take.
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_SEND_TIMEOUT = 30.0


class Sink(abc.ABC):
    """Where flushes go: each :meth:`submit` is delivered in order.

    :param config: the aggregator's configuration, used for rendering
    :param executor: renders payloads off the event loop (default: the
        loop's default executor)
    """

    def __init__(
        self,
        config: AggregatorConfig,
        *,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self.config = config
        # Like the reference, which starts both at its startup time.
        started = js_round(time.time())
        #: What the sink reports about its previous send, as Graphite lines.
        self.stats = graphite.GraphiteStats(
            last_flush=started, last_exception=started
        )
        #: Flushes given up on (buffer full, or undelivered at shutdown).
        self.dropped_flushes = 0
        self._executor = executor
        self._snapshots: collections.deque[Snapshot] = collections.deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """How logs refer to this sink."""

    def start(self) -> None:
        """Start the worker task on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f'statsd sink {self.name}'
        )

    def submit(self, snapshot: Snapshot) -> None:
        """Queue one flush for delivery; never blocks, never raises.

        :param snapshot: the flush, from :meth:`.Aggregator.flush`
        """
        self._snapshots.append(snapshot)
        self._wakeup.set()

    async def close(self, timeout: float) -> None:
        """Deliver what is queued, waiting at most `timeout` seconds.

        Whatever is still undelivered then is dropped, counted and logged.

        :param timeout: seconds to wait for delivery
        """
        self._closing = True
        self._wakeup.set()
        if self._task is None:
            return
        task, self._task = self._task, None
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except asyncio.TimeoutError:
            task.cancel()
            await asyncio.wait({task})
        left = self._pending()
        if left:
            self.dropped_flushes += left
            logger.warning(
                'sink %s: %d flush(es) not delivered before shutdown were dropped',
                self.name,
                left,
            )

    def _pending(self) -> int:
        return len(self._snapshots)

    async def _render(self, snapshot: Snapshot) -> bytes | None:
        """The flush's payload; ``None`` (and the flush dropped) on error."""
        # A copy: the thread must not see the stats change under it.
        stats = dataclasses.replace(self.stats)
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, graphite.render, snapshot, self.config, stats
            )
        except Exception:
            self.dropped_flushes += 1
            logger.exception('sink %s: cannot render a flush, dropped', self.name)
            return None

    def _sent(self, started: float, length: int) -> None:
        """Record a successful send that began at `started` (perf_counter)."""
        self.stats.last_flush = js_round(time.time())
        self.stats.flush_time = (time.perf_counter() - started) * 1000
        self.stats.flush_length = length

    async def _wait(self, timeout: float | None = None) -> None:
        """Wait for a new flush or close, at most `timeout` seconds."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        self._wakeup.clear()

    @abc.abstractmethod
    async def _run(self) -> None:
        """Deliver flushes until closed with nothing left to deliver."""


class StreamSink(Sink):
    """Write each flush's Graphite lines to a binary stream (e.g. stdout).

    :param stream: where to write; flushed after every flush
    :param config: the aggregator's configuration
    :param executor: renders and writes off the event loop
    """

    def __init__(
        self,
        stream: typing.BinaryIO,
        config: AggregatorConfig,
        *,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        super().__init__(config, executor=executor)
        self._stream = stream

    @property
    def name(self) -> str:
        return getattr(self._stream, 'name', None) or 'stream'

    def _write(self, payload: bytes) -> None:
        self._stream.write(payload)
        self._stream.flush()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._snapshots:
                if self._closing:
                    return
                await self._wait()
                continue
            payload = await self._render(self._snapshots[0])
            started = time.perf_counter()
            try:
                if payload is not None:
                    await loop.run_in_executor(self._executor, self._write, payload)
                    self._sent(started, len(payload))
            except Exception as exc:
                # A closed pipe will not heal: report and drop this flush.
                self.stats.last_exception = js_round(time.time())
                self.dropped_flushes += 1
                logger.error('sink %s: cannot write: %s', self.name, exc)
            self._snapshots.popleft()


class _Connection(asyncio.Protocol):
    """A write-only client connection that honours flow control."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self._drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)
        # Pause as soon as anything is buffered: a send counts as delivered
        # only once the kernel holds all of it, so nothing waits in user
        # space when the process exits.
        self.transport.set_write_buffer_limits(high=0)

    def data_received(self, data: bytes) -> None:
        """Graphite's plaintext receiver never answers; ignore anything."""

    def eof_received(self) -> bool | None:
        return None  # the peer is gone: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake(exc or ConnectionResetError('connection closed by peer'))

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

    async def send(self, payload: bytes) -> None:
        """Write `payload` and wait until the kernel has taken it."""
        if self.lost or self.transport is None:
            raise ConnectionResetError('connection closed by peer')
        self.transport.write(payload)
        if self._drained is not None:
            await self._drained
        if self.lost:
            raise ConnectionResetError('connection closed by peer')


class GraphiteSink(Sink):
    """Send flushes to a Graphite plaintext receiver (carbon) over TCP.

    :param host: the receiver's name or address
    :param port: the receiver's port (carbon's default is 2003)
    :param config: the aggregator's configuration
    :param buffer_bytes: most bytes of undelivered flushes kept
    :param buffer_flushes: most undelivered flushes kept
    :param reconnect_delay: first back-off delay after a failure, seconds
    :param reconnect_max_delay: the back-off's ceiling, seconds
    :param connect_timeout: seconds a connection attempt may take
    :param send_timeout: seconds the sending of one flush may take
    :param executor: renders payloads off the event loop

    The newest flush is always kept, even when it alone exceeds
    `buffer_bytes`.  A flush whose send fails is sent again in full on the
    next connection; Graphite stores the repeated points once.
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
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        super().__init__(config, executor=executor)
        self.host = host
        self.port = port
        self._buffer_bytes = buffer_bytes
        self._buffer_flushes = buffer_flushes
        self._reconnect_delay = min(reconnect_delay, reconnect_max_delay)
        self._reconnect_max_delay = reconnect_max_delay
        self._connect_timeout = connect_timeout
        self._send_timeout = send_timeout
        self._payloads: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._connection: _Connection | None = None
        self._delay = self._reconnect_delay
        self._next_attempt = 0.0
        self._failing = False

    @property
    def name(self) -> str:
        return format_address((self.host, self.port))

    @property
    def buffered_flushes(self) -> int:
        """Flushes waiting for delivery (rendered or not)."""
        return len(self._payloads) + len(self._snapshots)

    @property
    def connected(self) -> bool:
        """Whether the sink holds an open connection right now."""
        return self._connection is not None and not self._connection.lost

    def _pending(self) -> int:
        return self.buffered_flushes

    async def close(self, timeout: float) -> None:
        try:
            await super().close(timeout)
        finally:
            self._disconnect()

    def _keep(self, payload: bytes) -> None:
        self._payloads.append(payload)
        self._buffered += len(payload)
        dropped = 0
        while len(self._payloads) > 1 and (
            len(self._payloads) > self._buffer_flushes
            or self._buffered > self._buffer_bytes
        ):
            self._buffered -= len(self._payloads.popleft())
            dropped += 1
        if dropped:
            self.dropped_flushes += dropped
            logger.warning(
                'sink %s: buffer full, dropped the %d oldest undelivered '
                'flush(es) (%d dropped so far)',
                self.name,
                dropped,
                self.dropped_flushes,
            )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._snapshots:
                # Render first, so that the buffer's bound is in real bytes.
                payload = await self._render(self._snapshots[0])
                self._snapshots.popleft()
                if payload is not None:
                    self._keep(payload)
                continue
            if not self._payloads:
                if self._closing:
                    return
                await self._wait()
                continue
            if not self.connected:
                delay = self._next_attempt - loop.time()
                if delay > 0:
                    await self._wait(delay)
                    continue
                await self._connect()
                continue
            await self._send(self._payloads[0])

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
        self._disconnect()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(_Connection, self.host, self.port),
                self._connect_timeout,
            )
        except Exception as exc:  # OSError, a timeout, a bad host name...
            self._failed('connecting', exc)
            return
        self._connection = connection
        log = logger.warning if self._failing else logger.info
        log('sink %s: connected', self.name)

    async def _send(self, payload: bytes) -> None:
        assert self._connection is not None
        started = time.perf_counter()
        try:
            await asyncio.wait_for(
                self._connection.send(payload), self._send_timeout
            )
        except Exception as exc:  # OSError or a timeout
            self._disconnect()
            self._failed('sending', exc)
            return
        self._sent(started, len(payload))
        self._buffered -= len(self._payloads.popleft())
        self._delay = self._reconnect_delay
        self._failing = False

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.transport is not None:
            connection.transport.close()
