"""The bounded buffer of rendered flushes that a sink delivers in order."""

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
from collections.abc import Iterable, Sequence

from sprockets_statsd._throttle import Throttle
from sprockets_statsd.server import graphite
from sprockets_statsd.server._aggregatorconfig import AggregatorConfig
from sprockets_statsd.server._graphiteown import GraphiteStats
from sprockets_statsd.server._jsnumber import js_round
from sprockets_statsd.server._memory import released
from sprockets_statsd.server._sink import Sink
from sprockets_statsd.server._snapshot import Snapshot
from sprockets_statsd.server.config import (
    DEFAULT_BUFFER_BYTES,
    DEFAULT_BUFFER_FLUSHES,
)

__all__ = ['BufferedSink', 'Payload', 'Rendered', 'wait_and_clear']

# The public module's name, which log configuration already refers to.
logger = logging.getLogger('sprockets_statsd.server.sinks')

# A payload handed to a sink: bytes, or an iterable of byte chunks.
Rendered = bytes | Iterable[bytes]


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
        self.stats: GraphiteStats = GraphiteStats(
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
                await wait_and_clear(self._snapshot_added)
        finally:
            self._rendered_all = True
            self._payload_added.set()

    async def _render(self, snapshot: Snapshot) -> Payload | None:
        """The flush's payload; ``None`` (and the flush dropped) on error."""
        # A copy: the thread must not see the stats change under it.
        stats = dataclasses.replace(self.stats)
        try:
            rendered = await asyncio.get_running_loop().run_in_executor(
                # The memory the rendering freed is given back after it.
                self._executor, released, graphite.render, snapshot, self.config, stats
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


async def wait_and_clear(event: asyncio.Event, timeout: float | None = None) -> None:
    """Wait for `event` (at most `timeout` seconds), then clear it."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
    event.clear()

