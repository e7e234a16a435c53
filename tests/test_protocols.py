"""Tier 2: the protocol adapters and the payload queue on their own."""

from __future__ import annotations

import asyncio
import socket

import pytest

from sprockets_statsd import Connector, TCPProtocol, UDPProtocol, metrics
from sprockets_statsd.processor import PayloadQueue
from tests.helpers import StatsdServer


async def test_payload_queue_is_an_asyncio_queue() -> None:
    """offer/take coexist with the ordinary Queue interface and wake waiters."""
    queue = PayloadQueue(maxsize=2)
    assert isinstance(queue, asyncio.Queue)
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert queue.offer(b'a')
    assert await asyncio.wait_for(getter, 5) == b'a'
    assert queue.offer(b'b')
    assert queue.offer(b'c')
    assert not queue.offer(b'd')  # full: refused, not raised
    putter = asyncio.ensure_future(queue.put(b'e'))
    await asyncio.sleep(0)
    assert not putter.done()
    assert queue.take(1) == [b'b']
    await asyncio.wait_for(putter, 5)  # taking made room and woke the putter
    assert queue.take(10) == [b'c', b'e']
    assert queue.take(10) == []


async def test_payload_queue_join_counts_every_way_in_and_out() -> None:
    """join() waits for task_done of every payload, however it was queued or removed."""
    queue = PayloadQueue(maxsize=10)
    assert queue.offer(b'a')
    queue.put_nowait(b'b')
    assert queue.offer(b'c')
    assert queue.unfinished == 3
    joined = asyncio.ensure_future(queue.join())
    assert queue.get_nowait() == b'a'
    assert queue.take(5) == [b'b', b'c']
    queue.task_done(2)
    await asyncio.sleep(0)
    assert not joined.done()  # one payload is still not marked done
    queue.task_done()
    await asyncio.wait_for(joined, 5)
    assert queue.unfinished == 0
    with pytest.raises(ValueError, match='too many'):
        queue.task_done()
    await asyncio.wait_for(queue.join(), 5)  # nothing unfinished: returns at once


async def test_buffered_data_round_trips_for_1_0_code() -> None:
    """buffered_data reads and writes the unsent payloads as newline-terminated bytes."""
    protocol = TCPProtocol()
    protocol.buffered_data = b'a:1|c\nb:2|c\n'
    assert protocol.unsent == [b'a:1|c', b'b:2|c']
    assert protocol.buffered_data == b'a:1|c\nb:2|c\n'


async def test_sending_without_a_connection_keeps_payloads() -> None:
    """A protocol that is not connected keeps what it is given as unsent."""
    tcp, udp = TCPProtocol(), UDPProtocol(512)
    tcp.send(b'x:1|c')
    assert udp.send_batch([b'y:1|c']) == 0
    assert tcp.unsent == [b'x:1|c']
    assert udp.unsent == [b'y:1|c']
    assert tcp.abort() == 0
    await tcp.shutdown()  # no transport: returns at once


async def test_udp_errors_do_not_disconnect() -> None:
    """An ICMP error for a datagram (nothing listening) leaves UDP usable."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    c = Connector('127.0.0.1', port, ip_protocol=socket.IPPROTO_UDP, shutdown_timeout=1)
    await c.start()
    for _ in range(3):
        c.incr('nobody.listens')
        await asyncio.sleep(0.05)
    assert c.processor.connected
    protocol = c.processor.protocol
    assert isinstance(protocol, UDPProtocol)
    protocol.error_received(ConnectionRefusedError())
    assert c.processor.connected
    await c.stop()
    assert c.sent == 3


async def test_closing_udp_transport_returns_payloads() -> None:
    """Payloads given to a closing datagram transport come back as unsent."""
    async with StatsdServer('udp') as server:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: UDPProtocol(512), remote_addr=(server.host, server.port))
        transport.close()
        assert protocol.send_batch([b'late:1|c']) == 0
        assert protocol.unsent == [b'late:1|c']


async def test_default_increments_overflow_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The incr() fast path counts queue overflow like every other call."""
    monkeypatch.setattr(metrics, 'DEFAULT_CACHE_SIZE', 2)
    c = Connector('127.0.0.1', 1, max_queue_size=3)
    for name in ('a', 'b', 'c', 'a', 'd'):
        c.incr(name)
    assert c.enqueued == 5
    assert c.dropped_queue_full == 2
    assert len(c._increments) == 2  # the payload cache stayed bounded
    assert c.processor.queue.take(10) == [b'counters.a:1|c', b'counters.b:1|c',
                                          b'counters.c:1|c']
    await c.stop()
