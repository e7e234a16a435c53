"""The sink that writes flushes to a stream (stdout) from a thread of its own."""

# Stream (stdout): written by a daemon thread of the sink's own, straight
# to the file descriptor when there is one, so that a write that blocks for
# ever (a pipe nobody reads) holds neither the render thread nor the
# process at exit.  That thread also renders, chunk by chunk as it writes,
# so a flush is never held whole (80 MB for a million counters): the
# stream sink's payloads are deferred until written, and count towards
# the byte bound by an estimate until then.

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import io
import logging
import os
import queue
import threading
import time
import typing
from collections.abc import Iterable

from sprockets_statsd.server import graphite
from sprockets_statsd.server._aggregatorconfig import AggregatorConfig
from sprockets_statsd.server._buffer import BufferedSink, Payload, wait_and_clear
from sprockets_statsd.server._jsnumber import js_round
from sprockets_statsd.server._memory import release_free_memory
from sprockets_statsd.server._snapshot import Snapshot
from sprockets_statsd.server.config import (
    DEFAULT_BUFFER_BYTES,
    DEFAULT_BUFFER_FLUSHES,
)

__all__ = ['StreamSink']

# The public module's name, which log configuration already refers to.
logger = logging.getLogger('sprockets_statsd.server.sinks')

#: Bytes per name a deferred payload counts for until it is written: a
#: counter's two lines take about 80, a timer's fourteen about 700.
_ESTIMATED_BYTES_PER_NAME = 100


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
                await wait_and_clear(self._payload_added)
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

