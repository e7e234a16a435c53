"""Tier 2: delivery, reconnection, flow control and shutdown against loopback servers."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import tempfile
import time
import typing

import pytest

from sprockets_statsd import Connector, Processor
from sprockets_statsd._throttle import Throttle
from sprockets_statsd.transports import MemoryServer
from tests.helpers import StatsdServer, wait_until

UDP = socket.IPPROTO_UDP
FAST = {'reconnect_sleep': 0.01, 'max_reconnect_sleep': 0.05, 'shutdown_timeout': 5.0}


def assert_accounted(c: Connector) -> None:
    """Every metric offered is either sent or dropped, once stopped."""
    assert c.sent + c.dropped == c.enqueued, (c.sent, c.dropped, c.enqueued)


async def fill_until_paused(c: Connector, name: str, limit: int = 2_000_000) -> int:
    """Record metrics until the TCP transport asks to pause; return how many."""
    count = 0
    while count < limit:
        for _ in range(1000):
            c.incr(name, count)
            count += 1
        await asyncio.sleep(0)
        protocol = c.processor.protocol
        if protocol is not None and not protocol.writable:
            return count
    raise AssertionError(f'the transport never paused after {count} metrics')


def free_port() -> int:
    """A loopback TCP port that nothing listens on (just released)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return typing.cast(int, s.getsockname()[1])


@pytest.mark.parametrize('protocol', ['tcp', 'udp'])
@pytest.mark.parametrize('host', ['127.0.0.1', '::1'])
async def test_delivery_over_ipv4_and_ipv6(protocol: str, host: str) -> None:
    """TCP and UDP deliver every metric on 127.0.0.1 and ::1."""
    async with StatsdServer(protocol, host) as server:
        c = Connector(host, server.port,
                      ip_protocol=UDP if protocol == 'udp' else socket.IPPROTO_TCP,
                      max_udp_size=1400, **FAST)
        await c.start()
        for i in range(2000):
            c.incr('n', i)
            if i % 500 == 0:
                await asyncio.sleep(0)
        await asyncio.wait_for(c.stop(), 10)
        lines = await server.wait_for_lines(2000)
    assert lines == [f'counters.n:{i}|c'.encode() for i in range(2000)]
    assert c.sent == c.enqueued == 2000
    assert_accounted(c)


async def test_unix_stream_socket() -> None:
    """A unix: host selects the Unix stream transport."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'statsd.sock')
        async with StatsdServer('unix', path=path) as server:
            for host in (f'unix:{path}', path):
                c = Connector(host, **FAST)
                assert c.processor.unix_path == path
                await c.start()
                c.gauge('g', 5)
                await asyncio.wait_for(c.stop(), 10)
            assert await server.wait_for_lines(2) == [b'gauges.g:5|g', b'gauges.g:5|g']


@pytest.mark.parametrize('limit', [64, 512, 1432])
async def test_udp_datagrams_never_exceed_the_limit(limit: int) -> None:
    """Datagrams are packed up to max_udp_size bytes; an oversized line goes alone."""
    names = [f'ünïcödé.{i}.' + 'x' * (i % 40) for i in range(300)]
    async with StatsdServer('udp') as server:
        c = Connector(server.host, server.port, ip_protocol=UDP, max_udp_size=limit)
        await c.start()
        for name in names:
            c.incr(name)
        c.incr('y' * (limit + 10))  # larger than any datagram
        await asyncio.wait_for(c.stop(), 10)
        lines = await server.wait_for_lines(len(names) + 1)
    oversized = [d for d in server.datagrams if len(d) > limit]
    assert b'counters.' + b'y' * (limit + 10) + b':1|c' in oversized
    assert all(b'\n' not in d for d in oversized)  # a line too large goes alone
    assert sorted(lines) == sorted([f'counters.{n}:1|c'.encode() for n in names]
                                   + [b'counters.' + b'y' * (limit + 10) + b':1|c'])
    if limit >= 512:
        assert len(server.datagrams) < len(lines) / 4  # really packed


async def test_tcp_server_restart_mid_stream_delivers_each_metric_once() -> None:
    """A graceful server restart in the middle of a stream loses and repeats nothing."""
    total = 30_000
    async with StatsdServer('tcp') as server:
        c = Connector(server.host, server.port, max_queue_size=total, **FAST)
        await c.start()
        for i in range(total):
            c.incr('seq', i)
            if i % 1000 == 999:
                await asyncio.sleep(0)
            if i in (10_000, 20_000):
                await server.restart()
                # Let the client reconnect so the stream really spans three connections.
                expected = 2 if i == 10_000 else 3
                await wait_until(lambda n=expected: server.connections >= n)  # type: ignore[misc]
        await asyncio.wait_for(c.stop(), 10)
        lines = await server.wait_for_lines(total)
    values = sorted(int(line.split(b':')[1].split(b'|')[0]) for line in lines)
    assert values == list(range(total))
    assert server.connections == 3
    assert c.sent == total
    assert_accounted(c)


async def test_server_down_at_start_then_up_receives_queued_metrics() -> None:
    """Metrics recorded while nothing listens are delivered once the server appears."""
    server = MemoryServer()
    server.refuse = 1_000_000  # down until told otherwise
    c = Connector('statsd.test', 8125, transport_factory=server, **FAST)
    await c.start()
    for i in range(100):
        c.incr('early', i)
    await server.wait_for(lambda: c.processor._failures >= 2, what='failed connection attempts')
    assert c.sent == 0
    server.refuse = 0  # the server comes up
    lines = await server.wait_for_lines(100)
    await c.stop()
    assert lines == [f'counters.early:{i}|c'.encode() for i in range(100)]
    assert_accounted(c)


async def test_stop_is_bounded_when_nothing_listens(caplog: pytest.LogCaptureFixture) -> None:
    """stop() returns within shutdown_timeout and counts what it could not send."""
    caplog.set_level(logging.WARNING)
    c = Connector('127.0.0.1', free_port(), reconnect_sleep=0.05, shutdown_timeout=0.5)
    await c.start()
    for _ in range(10):
        c.incr('lost')
    started = time.monotonic()
    await asyncio.wait_for(c.stop(), 5)
    assert time.monotonic() - started < 2.0
    assert c.sent == 0
    assert c.dropped_send_failed == 10
    assert_accounted(c)
    assert any('dropped 10 statsd payloads' in r.getMessage() for r in caplog.records)


async def test_stop_is_bounded_when_connect_is_black_holed() -> None:
    """A server that never completes a connect (a black hole); stop() still returns."""
    server = MemoryServer()
    server.hang = True
    c = Connector('statsd.test', 8125, transport_factory=server, connect_timeout=0.3,
                  reconnect_sleep=0.05, shutdown_timeout=0.6)
    await c.start()
    c.incr('x')
    await server.wait_for(lambda: server.attempts >= 1, what='a connection attempt')
    started = time.monotonic()
    await asyncio.wait_for(c.stop(), 5)
    assert time.monotonic() - started < 2.0
    assert_accounted(c)
    assert c.dropped == 1 or c.sent == 1


async def test_stop_is_bounded_when_the_server_stops_reading() -> None:
    """A connected server that never reads fills the buffers; stop() aborts in time."""
    stalled: list[asyncio.StreamWriter] = []

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled.append(writer)
        writer.transport.pause_reading()
        await asyncio.sleep(30)

    server = await asyncio.start_server(never_read, '127.0.0.1', 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        c = Connector('127.0.0.1', port, shutdown_timeout=0.5, max_queue_size=200_000)
        await c.start()
        await fill_until_paused(c, 'a.long.metric.name.to.fill.buffers.quickly')
        c.incr('still.queued')
        started = time.monotonic()
        await asyncio.wait_for(c.stop(), 5)
        assert time.monotonic() - started < 2.0
        assert c.dropped_send_failed > 0
        assert_accounted(c)
        for writer in stalled:
            writer.close()


async def test_paused_transport_resumes_and_delivers_everything() -> None:
    """pause_writing holds the processor back; after resume every metric arrives."""
    gate = asyncio.Event()
    received: list[bytes] = []

    async def slow_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await gate.wait()
        while data := await reader.read(65536):
            received.append(data)
        writer.close()

    server = await asyncio.start_server(slow_reader, '127.0.0.1', 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        c = Connector('127.0.0.1', port, max_queue_size=200_000, **FAST)
        await c.start()
        total = await fill_until_paused(c, 'paused.metric.with.a.long.name')
        for i in range(50_000):  # these wait in the queue while paused
            c.incr('paused.metric.with.a.long.name', total + i)
        total += 50_000
        assert c.processor.queue.qsize() > 0
        gate.set()
        await asyncio.wait_for(c.stop(), 10)
        await wait_until(lambda: b''.join(received).count(b'\n') >= total)
    assert b''.join(received).count(b'\n') == total
    assert c.sent == total
    assert_accounted(c)


async def test_queue_overflow_is_counted_exactly(caplog: pytest.LogCaptureFixture) -> None:
    """Beyond max_queue_size metrics are dropped, counted and logged once."""
    caplog.set_level(logging.WARNING)
    async with StatsdServer('tcp') as server:
        c = Connector(server.host, server.port, max_queue_size=10, **FAST)
        for i in range(25):
            c.incr('q', i)
        assert c.enqueued == 25
        assert c.dropped_queue_full == 15
        await c.start()
        await asyncio.wait_for(c.stop(), 10)
        lines = await server.wait_for_lines(10)
    assert lines == [f'counters.q:{i}|c'.encode() for i in range(10)]
    assert c.sent == 10
    assert_accounted(c)
    assert len([r for r in caplog.records if 'queue is full' in r.getMessage()]) == 1


async def test_processor_survives_a_bad_payload(caplog: pytest.LogCaptureFixture) -> None:
    """A non-bytes item put on the queue by hand is dropped; the rest is sent."""
    async with StatsdServer('tcp') as server:
        c = Connector(server.host, server.port, **FAST)
        await c.start()
        c.incr('before')
        c.processor.queue.put_nowait(object())  # type: ignore[arg-type]
        c.processor.queue.put_nowait('text payload')  # type: ignore[arg-type]
        c.incr('after')
        await asyncio.wait_for(c.stop(), 10)
        lines = await server.wait_for_lines(3)
    assert lines == [b'counters.before:1|c', b'text payload', b'counters.after:1|c']
    assert c.processor.dropped == 1
    assert c.processor.running.is_set() is False


async def test_processor_survives_a_failing_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception raised while sending one batch is logged and the loop goes on."""
    async with StatsdServer('tcp') as server:
        c = Connector(server.host, server.port, **FAST)
        await c.start()
        c.incr('first')
        await server.wait_for_lines(1)
        protocol = c.processor.protocol
        assert protocol is not None
        original = protocol.send_batch
        calls = 0

        def explode_once(payloads: list[bytes]) -> int:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError('injected failure')
            return original(payloads)

        monkeypatch.setattr(protocol, 'send_batch', explode_once)
        c.incr('lost-in-failure')
        await wait_until(lambda: calls >= 1)
        c.incr('second')
        await asyncio.wait_for(c.stop(), 10)
        lines = await server.wait_for_lines(2)
    assert lines == [b'counters.first:1|c', b'counters.second:1|c']
    assert c.processor.running.is_set() is False


async def test_should_terminate_flag_stops_run() -> None:
    """Setting should_terminate (the 1.0 interface) makes run() flush and return."""
    async with StatsdServer('tcp') as server:
        p = Processor(host=server.host, port=server.port, **FAST)
        task = asyncio.create_task(p.run())
        await asyncio.wait_for(p.running.wait(), 5)
        assert p.stopped.is_set() is False
        p.enqueue(b'direct:1|c')
        await wait_until(lambda: p.connected)
        p.should_terminate = True
        await asyncio.wait_for(task, 5)
        assert p.stopped.is_set()
        assert await server.wait_for_lines(1) == [b'direct:1|c']


async def test_stop_without_start_counts_the_queue_as_dropped() -> None:
    """Metrics recorded by a connector that never started are accounted for."""
    c = Connector('127.0.0.1', 1)
    c.incr('never')
    await c.stop()
    assert c.dropped_send_failed == 1
    assert_accounted(c)


async def test_tcp_connection_reset_returns_unwritten_payloads() -> None:
    """Payloads still in the transport buffer when a connection is reset come back."""
    accepted: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.pause_reading()
        accepted.append(writer)

    server = await asyncio.start_server(hold, '127.0.0.1', 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        c = Connector('127.0.0.1', port, max_queue_size=200_000, reconnect_sleep=0.01,
                      shutdown_timeout=0.5)
        await c.start()
        await fill_until_paused(c, 'reset.me.with.a.longer.name.to.fill.buffers')
        assert accepted
        protocol = c.processor.protocol
        assert protocol is not None
        buffered = protocol.in_flight()
        assert buffered > 0
        server.close()  # no new connection: the returned payloads stay with the processor
        sent_before = c.sent
        sock = accepted[0].get_extra_info('socket')
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        accepted[0].transport.abort()  # RST to the client
        await wait_until(lambda: protocol.closed and c.processor._failures >= 1)
        returned = list(c.processor._unsent)
        assert len(returned) >= buffered
        assert c.sent == sent_before - len(returned)  # no longer counted as sent
        values = [int(p.split(b':')[1].split(b'|')[0]) for p in returned]
        assert values == list(range(values[0], values[0] + len(values)))  # a contiguous tail
        await asyncio.wait_for(c.stop(), 5)
        assert_accounted(c)


def test_backoff_grows_and_is_capped() -> None:
    """Reconnect delays double from reconnect_sleep up to the cap, with jitter."""
    p = Processor(host='h', reconnect_sleep=0.5, max_reconnect_sleep=4.0)
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (10, 4.0), (100, 4.0)]:
        for _ in range(20):
            delay = p._backoff(failures)
            assert ceiling / 2 <= delay <= ceiling


def test_throttle_logs_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    """A warning kind is logged once per interval, with the suppressed count later."""
    now = [0.0]
    throttle = Throttle(logging.getLogger('t'), 10.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING)
    assert throttle.warning('k', 'trouble %s', 1)
    assert not throttle.warning('k', 'trouble %s', 2)
    assert not throttle.warning('k', 'trouble %s', 3)
    assert throttle.warning('other', 'different')
    now[0] = 10.0
    assert throttle.warning('k', 'trouble %s', 4)
    throttle.reset('k')
    assert throttle.warning('k', 'trouble %s', 5)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ['trouble 1', 'different', 'trouble 4 (2 similar messages suppressed)',
                        'trouble 5']


async def test_half_closed_connection_drains_while_a_new_one_carries_on() -> None:
    """A server that half-closes a busy connection gets its backlog and the rest, once each."""
    received: dict[int, list[bytes]] = {}
    finished: list[int] = []
    first_writer: asyncio.StreamWriter | None = None
    resume = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal first_writer
        index = len(received)
        received[index] = []
        if index == 0:
            first_writer = writer
            writer.transport.pause_reading()
            await resume.wait()
            writer.transport.resume_reading()
        while data := await reader.read(65536):
            received[index].append(data)
        writer.close()
        finished.append(index)

    server = await asyncio.start_server(serve, '127.0.0.1', 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        c = Connector('127.0.0.1', port, max_queue_size=200_000, **FAST)
        await c.start()
        total = await fill_until_paused(c, 'retiring.metric.with.a.long.name')
        old = c.processor.protocol
        assert old is not None
        assert first_writer is not None
        first_writer.write_eof()  # the server closes its side of the busy connection
        await wait_until(lambda: len(received) == 2, what='a second connection')
        assert not old.closed  # still draining its buffer: kept aside, not dropped
        for i in range(1000):
            c.incr('retiring.metric.with.a.long.name', total + i)
        total += 1000
        resume.set()
        await wait_until(lambda: old.closed, what='the old connection to drain')
        await asyncio.wait_for(c.stop(), 10)
        await wait_until(lambda: len(finished) == len(received), what='every connection read')
        lines = [line for chunks in received.values()
                 for line in b''.join(chunks).split(b'\n') if line]
    values = sorted(int(line.split(b':')[1].split(b'|')[0]) for line in lines)
    assert values == list(range(total))
    assert_accounted(c)


async def test_cancelling_the_task_stops_the_processor() -> None:
    """A cancelled processor task re-raises and still marks itself stopped."""
    async with StatsdServer('tcp') as server:
        c = Connector(server.host, server.port, **FAST)
        await c.start()
        task = c._task
        assert task is not None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert c.processor.stopped.is_set()
        assert not c.processor.running.is_set()


async def test_join_waits_until_everything_queued_was_handed_on() -> None:
    """queue.join() returns once the processor took and sent every queued payload."""
    server = MemoryServer()
    c = Connector('statsd.test', 8125, transport_factory=server, **FAST)
    for i in range(250):
        c.incr('joined', i)
    c.processor.enqueue(b'direct:1|c')
    assert c.processor.queue.unfinished == 251
    await c.start()
    await asyncio.wait_for(c.processor.queue.join(), 10)
    assert c.processor.queue.unfinished == 0
    assert len(server.lines) == 251  # already handed to the transport, no waiting
    assert c.sent == 251
    await c.stop()
    assert c.sent == c.enqueued + 1  # the direct payload too
    assert c.dropped == 0


async def test_enqueue_takes_the_metric_path_and_raises_when_full() -> None:
    """Processor.enqueue queues through offer() and raises QueueFull when full."""
    p = Processor(host='statsd.test', max_queue_size=1, transport_factory=MemoryServer())
    p.enqueue(b'a:1|c')
    with pytest.raises(asyncio.QueueFull):
        p.enqueue(b'b:1|c')
    assert p.queue.qsize() == 1
    p.abandon_queue()
    assert p.dropped == 1
    await asyncio.wait_for(p.queue.join(), 1)  # abandoned payloads are done too


async def test_sent_is_counted_by_the_connections_and_kept_across_them() -> None:
    """sent adds up what every connection handed over, closed ones included."""
    server = MemoryServer()
    c = Connector('statsd.test', 8125, transport_factory=server, **FAST)
    await c.start()
    c.incr('a')
    await server.wait_for_lines(1)
    server.connections[0].lose(ConnectionResetError())  # the first connection ends
    await server.wait_for(lambda: len(server.connections) == 2, what='a reconnection')
    c.incr('b')
    await server.wait_for_lines(2)
    await c.stop()
    assert c.sent == 2
    assert c.processor.dropped == 0
    assert_accounted(c)
