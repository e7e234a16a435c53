"""Sinks against faulty receivers: exact counts delivered, exact drops counted."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import termios
import time
import typing

import pytest

from sprockets_statsd.server.aggregator import Aggregator, Snapshot
from sprockets_statsd.server.config import AggregatorConfig
from sprockets_statsd.server.sinks import GraphiteSink, Sink, StreamSink
from tests.server.faulty import TCP_CLOSE, FaultyCarbon, tcp_state
from tests.server.helpers import DEFAULT_TIMEOUT, ServerProcess, send_udp, wait_until

CONFIG = AggregatorConfig(flush_interval=1.0)
START = 1_700_000_000
S = typing.TypeVar('S', bound=Sink)


def flushes(count: int, names: int = 0) -> list[Snapshot]:
    """`count` flushes ten seconds apart, each counting ``n`` once, and
    `names` further counters (to make payloads large)."""
    aggregator = Aggregator(AggregatorConfig(flush_interval=1.0, max_names=names + 100))
    extra = b'\n'.join(b'pad.%d:1|c' % i for i in range(names))
    result = []
    for i in range(count):
        aggregator.receive(b'n:1|c\n' + extra)
        result.append(aggregator.flush(START + 10 * i))
    return result


def graphite_sink(carbon: FaultyCarbon, **kwargs: typing.Any) -> GraphiteSink:
    kwargs.setdefault('reconnect_delay', 0.01)
    kwargs.setdefault('reconnect_max_delay', 0.05)
    return GraphiteSink('127.0.0.1', carbon.port, CONFIG, **kwargs)


@contextlib.asynccontextmanager
async def running(sink: S) -> typing.AsyncIterator[S]:
    """Start `sink`; close it (waiting for delivery) on the way out."""
    sink.start()
    try:
        yield sink
    finally:
        await asyncio.wait_for(sink.close(DEFAULT_TIMEOUT), DEFAULT_TIMEOUT)


def delivered(carbon: FaultyCarbon) -> dict[int, float]:
    return carbon.distinct('stats_counts.n')


async def test_accept_and_reset_delivers_every_count() -> None:
    """A receiver that resets connections after their data arrived, unread:
    every flush written on them is sent again, so all 150 counts arrive and
    nothing is dropped."""
    async with FaultyCarbon(['reset', 'reset', 'reset']) as carbon:
        async with running(graphite_sink(carbon)) as sink:
            for snapshot in flushes(150):
                sink.submit(snapshot)
            await wait_until(lambda: len(delivered(carbon)) == 150, what='150 flushes')
            assert sum(delivered(carbon).values()) == 150
            assert sorted(delivered(carbon)) == [START + 10 * i for i in range(150)]
            assert carbon.modes[:4] == ['reset', 'reset', 'reset', 'read']
            assert sink.resent_flushes >= 3  # each reset connection had data
            assert sink.dropped_flushes == 0
        assert sink.dropped_flushes == 0


async def test_a_reset_while_idle_resends_the_unconfirmed_flushes() -> None:
    """Flushes written just before a reset that arrives while no flush is
    being sent are sent again at once, without waiting for a new flush."""
    async with FaultyCarbon(['reset']) as carbon:
        async with running(graphite_sink(carbon)) as sink:
            (snapshot,) = flushes(1)
            sink.submit(snapshot)
            await wait_until(lambda: len(delivered(carbon)) == 1, what='the resend')
            assert carbon.modes == ['reset', 'read']
            assert sink.resent_flushes == 1
        assert sink.dropped_flushes == 0


async def test_refused_then_listening_delivers_the_newest_and_counts_drops() -> None:
    """While the receiver refuses connections, flushes beyond the bound are
    dropped and counted exactly; the kept ones arrive once it listens."""
    carbon = FaultyCarbon()
    await carbon.start()
    await carbon.stop()  # keeps the port, refuses
    async with running(graphite_sink(carbon, buffer_flushes=3)) as sink:
        sent = flushes(8)
        for snapshot in sent:
            sink.submit(snapshot)
        await wait_until(lambda: sink.dropped_flushes == 5, what='five drops')
        async with carbon:
            await wait_until(lambda: len(delivered(carbon)) == 3, what='3 flushes')
            assert sorted(delivered(carbon)) == [s.timestamp for s in sent[5:]]
    assert sink.dropped_flushes == 5


async def test_a_stalled_receiver_is_reset_after_the_send_timeout() -> None:
    """A receiver that stops reading makes the send time out: that connection
    is closed at once (with a reset, releasing the kernel's send queue) and
    everything is delivered over the next one, nothing dropped."""
    async with FaultyCarbon(['stall'], small_buffer=True) as carbon:
        async with running(graphite_sink(carbon, send_timeout=0.3)) as sink:
            sent = flushes(6, names=10_000)
            for snapshot in sent:
                sink.submit(snapshot)
            await wait_until(lambda: len(carbon.sockets) >= 2, what='a second connection')
            stalled = carbon.sockets[0]
            await wait_until(lambda: tcp_state(stalled) == TCP_CLOSE,
                             what='the stalled connection to be reset')
            await wait_until(lambda: len(delivered(carbon)) == 6, what='6 flushes')
            assert sorted(delivered(carbon)) == [s.timestamp for s in sent]
            assert carbon.modes[:2] == ['stall', 'read']
        assert sink.dropped_flushes == 0


async def test_a_slow_reader_gets_everything_over_one_connection() -> None:
    """A receiver that reads slowly gets every flush, in order, over one
    connection; nothing is dropped or sent again."""
    async with FaultyCarbon(default='slow', slow_bytes=8192) as carbon:
        async with running(graphite_sink(carbon)) as sink:
            sent = flushes(5, names=1_000)
            for snapshot in sent:
                sink.submit(snapshot)
            await wait_until(lambda: len(delivered(carbon)) == 5, what='5 flushes')
            stamps = [p.timestamp for p in carbon.points if p.name == 'stats_counts.n']
            assert stamps == [s.timestamp for s in sent]
            assert len(carbon.sockets) == 1
            assert sink.resent_flushes == 0
        assert sink.dropped_flushes == 0


async def test_a_clean_close_after_reading_sends_nothing_twice() -> None:
    """A receiver that read everything and closed cleanly is not sent the
    same flushes again on the next connection."""
    async with FaultyCarbon() as carbon, running(graphite_sink(carbon)) as sink:
        first, second = flushes(2)
        sink.submit(first)
        await wait_until(lambda: len(delivered(carbon)) == 1, what='the first flush')
        # Closed by the receiver after it read the flush.
        carbon.sockets[0].shutdown(2)
        await wait_until(lambda: not sink.connected, what='the sink to see the close')
        sink.submit(second)
        await wait_until(lambda: len(delivered(carbon)) == 2, what='the second flush')
        stamps = [p.timestamp for p in carbon.points if p.name == 'stats_counts.n']
        assert stamps == [first.timestamp, second.timestamp]
        assert sink.resent_flushes == 0


async def test_the_bound_forgets_confirmed_candidates_before_dropping() -> None:
    """Flushes already written make room before flushes never sent: with a
    healthy receiver and a bound of two flushes, nothing is dropped."""
    async with FaultyCarbon() as carbon:
        async with running(graphite_sink(carbon, buffer_flushes=2)) as sink:
            sent = flushes(10)
            for snapshot in sent:
                sink.submit(snapshot)
                await wait_until(lambda: sink.buffered_flushes == 0, what='delivery')
            await wait_until(lambda: len(delivered(carbon)) == 10, what='10 flushes')
            assert sink.unconfirmed_flushes <= 2
        assert sink.dropped_flushes == 0


def _full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is full and that nobody reads; blocking writes."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        while True:
            os.write(write_end, b'x' * 65536)
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)
    return read_end, write_end


async def test_stream_sink_into_a_pipe_nobody_reads_is_bounded() -> None:
    """The stream sink blocked on a full pipe keeps at most its bound of
    flushes, counts every other one as dropped, and close() returns on time
    although the write never will."""
    read_end, write_end = _full_pipe()
    try:
        with os.fdopen(write_end, 'wb', closefd=False) as stream:
            sink = StreamSink(stream, CONFIG, buffer_flushes=3)
            sink.start()
            for snapshot in flushes(10):
                sink.submit(snapshot)
            await wait_until(lambda: sink.dropped_flushes == 7, what='7 drops')
            assert sink.buffered_flushes == 3
            started = time.monotonic()
            await asyncio.wait_for(sink.close(0.2), DEFAULT_TIMEOUT)
            assert time.monotonic() - started < 2
            assert sink.dropped_flushes == 10
    finally:
        os.close(read_end)  # the blocked write now fails and the thread ends
        os.close(write_end)


@pytest.mark.parametrize('limit', ['bytes', 'flushes'])
async def test_stream_sink_bound_matches_the_graphite_bound(limit: str) -> None:
    """The stream sink takes the same byte and flush bounds as a Graphite
    sink and applies them the same way (the newest flush always kept)."""
    read_end, write_end = _full_pipe()
    try:
        with os.fdopen(write_end, 'wb', closefd=False) as stream:
            bound = {'buffer_bytes': 1} if limit == 'bytes' else {'buffer_flushes': 1}
            sink = StreamSink(stream, CONFIG, **bound)  # type: ignore[arg-type]
            sink.start()
            for snapshot in flushes(4):
                sink.submit(snapshot)
            await wait_until(lambda: sink.buffered_flushes <= 2 and sink.dropped_flushes >= 2,
                             what='the bound applied')
            await asyncio.wait_for(sink.close(0.1), DEFAULT_TIMEOUT)
            assert sink.dropped_flushes == 4
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_sigterm_exits_on_time_while_stdout_is_a_pipe_nobody_reads() -> None:
    """The server writing flushes into a pipe nobody reads still exits,
    with status 0, within --shutdown-timeout of SIGTERM, and logs the
    flushes it could not write."""
    read_end, write_end = os.pipe()
    try:
        process = ServerProcess(
            '-b', '127.0.0.1:0', '-f', '0.05', '--http', 'off', '--admin', 'off',
            '--shutdown-timeout', '1', stdout=write_end,
        )
        async with process:
            # Enough names that one flush overfills the pipe's 64 KiB.
            for start in range(0, 3000, 100):
                send_udp(process.address, b'\n'.join(
                    b'name.%d:1|c' % i for i in range(start, start + 100)))
            await wait_until(lambda: _pipe_bytes(read_end) >= 65536,
                             what='the pipe to fill up')
            started = time.monotonic()
            status, _, stderr = await process.stop()
            elapsed = time.monotonic() - started
        assert status == 0, stderr
        # The timeout, plus the interpreter's exit on a busy machine; a
        # blocked writer thread would keep the process alive for ever.
        assert elapsed < 1 + 8, stderr
        assert 'not delivered before shutdown were dropped' in stderr, stderr
    finally:
        os.close(read_end)
        os.close(write_end)


def _pipe_bytes(fd: int) -> int:
    """Bytes waiting in a pipe (FIONREAD)."""
    raw = fcntl.ioctl(fd, termios.FIONREAD, b'\0' * 4)
    return int(struct.unpack('i', raw)[0])
