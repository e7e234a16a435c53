"""Graphite and stream sinks against a fake carbon receiver on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import typing

import pytest

from sprockets_statsd.server import graphite
from sprockets_statsd.server.aggregator import Aggregator, Snapshot
from sprockets_statsd.server.config import AggregatorConfig
from sprockets_statsd.server.sinks import GraphiteSink, StreamSink
from tests.server.helpers import DEFAULT_TIMEOUT, FakeCarbon, free_ports, wait_until

CONFIG = AggregatorConfig(flush_interval=1.0)


def snapshots(count: int, start: int = 1_700_000_000) -> list[Snapshot]:
    """`count` flushes ten seconds apart, each with counter ``n`` = its index."""
    aggregator = Aggregator(CONFIG)
    result = []
    for i in range(count):
        aggregator.receive(b'n:%d|c' % (i + 1))
        result.append(aggregator.flush(start + 10 * i))
    return result


def sink_for(carbon: FakeCarbon, **kwargs: object) -> GraphiteSink:
    kwargs.setdefault('reconnect_delay', 0.01)
    kwargs.setdefault('reconnect_max_delay', 0.05)
    return GraphiteSink(carbon.host, carbon.port, CONFIG, **kwargs)  # type: ignore[arg-type]


async def test_stream_sink_writes_the_rendered_flush() -> None:
    """The stream sink writes exactly what render() gives for its stats."""
    stream = io.BytesIO()
    sink = StreamSink(stream, CONFIG)
    before = dataclasses.replace(sink.stats)
    snapshot = snapshots(1)[0]
    sink.start()
    sink.submit(snapshot)
    await asyncio.wait_for(sink.close(DEFAULT_TIMEOUT), DEFAULT_TIMEOUT)
    expected = graphite.render(snapshot, CONFIG, before)
    # calculationtime is measured, so compare everything else.
    strip = [line for line in expected.split(b'\n') if b'calculationtime' not in line]
    assert [line for line in stream.getvalue().split(b'\n') if b'calculationtime' not in line] == strip
    assert sink.stats.flush_length == len(stream.getvalue())


async def test_graphite_sink_delivers_flushes_over_one_connection() -> None:
    """Several flushes go over one persistent connection, in order, and the
    sink's stats describe the last send."""
    async with FakeCarbon() as carbon:
        sink = sink_for(carbon)
        sink.start()
        try:
            for snapshot in snapshots(3):
                sink.submit(snapshot)
            await carbon.wait_for_flushes(3)
            assert carbon.values('stats_counts.n') == [1, 2, 3]
            assert carbon.connections == 1
            assert sink.stats.flush_length > 0
            assert sink.stats.last_flush is not None
        finally:
            await asyncio.wait_for(sink.close(DEFAULT_TIMEOUT), DEFAULT_TIMEOUT)


async def test_graphite_sink_reports_its_previous_send() -> None:
    """Each payload carries graphiteStats of the sink's previous send."""
    async with FakeCarbon() as carbon:
        sink = sink_for(carbon)
        sink.start()
        try:
            first, second = snapshots(2)
            sink.submit(first)
            await carbon.wait_for_flushes(1)
            first_length = sum(len(line) + 1 for line in carbon.lines)
            sink.submit(second)
            await carbon.wait_for_flushes(2)
            assert carbon.values('stats.statsd.graphiteStats.flush_length') == [0, first_length]
        finally:
            await asyncio.wait_for(sink.close(DEFAULT_TIMEOUT), DEFAULT_TIMEOUT)


async def test_graphite_sink_buffers_while_down_and_delivers_when_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Flushes submitted while carbon is down are kept and delivered, in order
    and exactly once, when it comes back; the outage is logged."""
    async with FakeCarbon() as carbon:
        sink = sink_for(carbon)
        sink.start()
        try:
            flushes = snapshots(6)
            sink.submit(flushes[0])
            await carbon.wait_for_flushes(1)
            await carbon.stop()
            for snapshot in flushes[1:5]:
                sink.submit(snapshot)
            await wait_until(lambda: 'connecting failed' in caplog.text,
                             what='the sink to notice the outage')
            assert sink.buffered_flushes == 4
            await carbon.start()
            sink.submit(flushes[5])
            await carbon.wait_for_flushes(6)
            assert carbon.timestamps() == [s.timestamp for s in flushes]
            assert carbon.values('stats_counts.n') == [1, 2, 3, 4, 5, 6]
            assert sink.dropped_flushes == 0
        finally:
            await asyncio.wait_for(sink.close(DEFAULT_TIMEOUT), DEFAULT_TIMEOUT)


async def test_graphite_sink_drops_the_oldest_beyond_its_flush_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Beyond the bound on flushes the oldest are dropped, counted and logged."""
    port = free_ports()[0]
    sink = GraphiteSink('127.0.0.1', port, CONFIG, buffer_flushes=2,
                        reconnect_delay=0.01, reconnect_max_delay=0.05)
    sink.start()
    flushes = snapshots(5)
    for snapshot in flushes:
        sink.submit(snapshot)
    await wait_until(lambda: sink.dropped_flushes == 3, what='three drops')
    assert sink.buffered_flushes == 2
    assert 'buffer full' in caplog.text
    carbon = FakeCarbon()
    carbon.port = port
    async with carbon:
        await carbon.wait_for_flushes(2)
        assert carbon.timestamps() == [s.timestamp for s in flushes[3:]]
        await asyncio.wait_for(sink.close(DEFAULT_TIMEOUT), DEFAULT_TIMEOUT)


async def test_graphite_sink_bounds_its_buffer_in_bytes() -> None:
    """The byte bound drops old flushes but always keeps the newest one."""
    sink = GraphiteSink('127.0.0.1', free_ports()[0], CONFIG, buffer_bytes=1,
                        reconnect_delay=0.01, reconnect_max_delay=0.05)
    sink.start()
    for snapshot in snapshots(3):
        sink.submit(snapshot)
    await wait_until(lambda: sink.dropped_flushes == 2, what='two drops')
    assert sink.buffered_flushes == 1
    await asyncio.wait_for(sink.close(0.1), DEFAULT_TIMEOUT)


async def test_close_gives_up_after_the_timeout_and_counts_the_loss(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """close() with carbon down returns after its timeout; what is left is
    counted as dropped and logged."""
    caplog.set_level(logging.WARNING)
    sink = GraphiteSink('127.0.0.1', free_ports()[0], CONFIG,
                        reconnect_delay=0.01, reconnect_max_delay=0.05)
    sink.start()
    for snapshot in snapshots(2):
        sink.submit(snapshot)
    await asyncio.wait_for(sink.close(0.3), DEFAULT_TIMEOUT)
    assert sink.dropped_flushes == 2
    assert 'not delivered before shutdown' in caplog.text


async def test_graphite_sink_reconnects_when_carbon_closes_the_connection() -> None:
    """When carbon restarts, the sink notices the closed connection and
    delivers the next flush over a new one."""
    async with FakeCarbon() as carbon:
        sink = sink_for(carbon)
        sink.start()
        try:
            first, second = snapshots(2)
            sink.submit(first)
            await carbon.wait_for_flushes(1)
            await carbon.restart()
            await wait_until(lambda: not sink.connected, what='the sink to see the close')
            sink.submit(second)
            await carbon.wait_for_flushes(2)
            assert carbon.connections == 2
            assert carbon.timestamps() == [first.timestamp, second.timestamp]
        finally:
            await asyncio.wait_for(sink.close(DEFAULT_TIMEOUT), DEFAULT_TIMEOUT)


async def test_graphite_sink_over_ipv6() -> None:
    """A sink reaches a carbon receiver on ::1."""
    async with FakeCarbon('::1') as carbon:
        sink = sink_for(carbon)
        assert sink.name == f'[::1]:{carbon.port}'
        sink.start()
        sink.submit(snapshots(1)[0])
        await carbon.wait_for_flushes(1)
        await asyncio.wait_for(sink.close(DEFAULT_TIMEOUT), DEFAULT_TIMEOUT)


async def test_a_flush_that_cannot_be_rendered_is_dropped_and_counted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A rendering error drops that flush (counted, logged); the sink lives on."""
    real_render = graphite.render
    first, second = snapshots(2)

    def render(snapshot: Snapshot, *args: typing.Any) -> bytes:
        if snapshot is first:
            raise RuntimeError('cannot render')
        return real_render(snapshot, *args)

    monkeypatch.setattr(graphite, 'render', render)
    async with FakeCarbon() as carbon:
        sink = sink_for(carbon)
        sink.start()
        sink.submit(first)
        sink.submit(second)
        await carbon.wait_for_flushes(1)
        await asyncio.wait_for(sink.close(DEFAULT_TIMEOUT), DEFAULT_TIMEOUT)
    assert carbon.timestamps() == [second.timestamp]
    assert sink.dropped_flushes == 1
    assert 'cannot render a flush' in caplog.text


async def test_stream_sink_writes_a_large_flush_in_chunks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The stream sink renders a flush as it writes it, chunk by chunk, all
    of it; a flush that cannot be rendered is dropped, counted and logged,
    and the next one is still written."""
    config = AggregatorConfig(flush_interval=1.0)
    aggregator = Aggregator(config)
    names = 3 * graphite.CHUNK_NAMES
    for start in range(0, names, 512):
        aggregator.receive(b'\n'.join(b'big.%d:1|c' % i for i in range(start, start + 512)))
    big = aggregator.flush(1_700_000_000)
    writes: list[int] = []

    class Recording(io.BytesIO):
        def write(self, data: typing.Any) -> int:
            writes.append(len(data))
            return super().write(data)

    stream = Recording()
    sink = StreamSink(stream, config)
    broken = dataclasses.replace(big, timer_statistics=None)  # type: ignore[arg-type]
    sink.start()
    sink.submit(broken)
    sink.submit(big)
    await asyncio.wait_for(sink.close(DEFAULT_TIMEOUT), DEFAULT_TIMEOUT)
    assert sink.dropped_flushes == 1
    assert 'cannot render a flush' in caplog.text
    text = stream.getvalue()
    assert text.count(b'\n') == 2 * (names + 3) + 7  # two lines a counter, 7 own
    assert len(writes) >= 4  # three chunks of counters, then the server's own lines
    assert max(writes) < len(text) / 2
    assert sink.stats.flush_length == len(text)
