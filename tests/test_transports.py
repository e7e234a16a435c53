"""Addresses, the in-memory server double, and Unix datagram sockets on both clients."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Iterator

import pytest

from sprockets_statsd import ConfigurationError, Connector, UnixDatagramProtocol
from sprockets_statsd.client import UnixDatagramStatsClient
from sprockets_statsd.transports import Address, MemoryServer, parse_address, unix_socket
from tests.helpers import UnixDatagramReceiver

TCP, UDP = socket.IPPROTO_TCP, socket.IPPROTO_UDP
FAST = {'reconnect_sleep': 0.01, 'max_reconnect_sleep': 0.05, 'shutdown_timeout': 2.0}
#: Bounds the loops that fill a receiver's queue: far more datagrams than
#: any kernel queues for one socket, so the loop ends by a refusal.
FILL_LIMIT = 200_000


@pytest.fixture
def dgram() -> Iterator[UnixDatagramReceiver]:
    """A Unix datagram receiver in a temporary directory, removed afterwards."""
    receiver = UnixDatagramReceiver()
    yield receiver
    receiver.close()


def test_hosts_are_parsed_in_one_place() -> None:
    """unix:, an absolute path, unixgram: and network hosts give the documented address."""
    assert unix_socket('unix:/run/s.sock') == ('unix', '/run/s.sock')
    assert unix_socket('/run/s.sock') == ('unix', '/run/s.sock')
    assert unix_socket('unixgram:/run/d.sock') == ('unixgram', '/run/d.sock')
    assert unix_socket('unixbox.example.com') is None
    assert parse_address('unixgram:/d', 0, 0) == Address('unixgram', '/d')
    assert parse_address('statsd', 8125, UDP) == Address('udp', 'statsd', 8125)
    assert str(parse_address('statsd', 8125, TCP)) == 'statsd:8125'
    assert str(parse_address('unix:/s', None, None)) == '/s'


@pytest.mark.parametrize(('host', 'port', 'protocol', 'message'), [
    ('', 8125, TCP, 'host must name'),
    ('unix:', 8125, TCP, r'unix: needs a path'),
    ('unixgram:', 8125, TCP, r'unixgram: needs a path'),
    ('statsd', 0, TCP, 'port must be a port number from 1 to 65535'),
    ('statsd', 70000, TCP, 'port must be a port number from 1 to 65535'),
    ('statsd', 8125, 132, 'ip_protocol must be'),
])
def test_bad_addresses_are_configuration_errors(host: str, port: int, protocol: int,
                                                 message: str) -> None:
    """Every unusable host, port or protocol raises ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=message):
        parse_address(host, port, protocol)


async def test_memory_server_as_a_datagram_server() -> None:
    """The in-memory double packs like UDP when asked to, and counts what it got."""
    server = MemoryServer(datagram=True)
    c = Connector('statsd.test', 8125, ip_protocol=UDP, transport_factory=server, **FAST)
    await c.start()
    for i in range(50):
        c.incr('m', i)
    lines = await server.wait_for_lines(50)
    await c.stop()
    assert lines == [f'counters.m:{i}|c'.encode() for i in range(50)]
    assert len(server.packets) < 50  # packed several to a datagram
    assert c.sent == 50


async def test_connector_sends_unix_datagrams(dgram: UnixDatagramReceiver) -> None:
    """host='unixgram:/path' delivers every metric, packed up to 8192 bytes a datagram."""
    try:
        c = Connector(f'unixgram:{dgram.path}', **FAST)
        assert c.processor.unix_path == dgram.path
        assert c.processor.max_udp_size == 8192
        await c.start()
        for i in range(1000):
            c.incr('uds', i)
        c.gauge('neg', -3)
        await asyncio.wait_for(c.stop(), 5)
        datagrams = dgram.datagrams(1002)
        assert all(len(d) <= 8192 for d in datagrams)
        lines = b'\n'.join(datagrams).split(b'\n')
        assert lines == [f'counters.uds:{i}|c'.encode() for i in range(1000)] + [
            b'gauges.neg:0|g', b'gauges.neg:-3|g']
        assert (c.sent, c.dropped) == (1001, 0)
    finally:
        dgram.close()


async def test_connector_drops_and_counts_when_the_socket_is_missing(
        dgram: UnixDatagramReceiver, caplog: pytest.LogCaptureFixture) -> None:
    """No socket at the path: payloads are dropped and counted; a later server gets the rest."""
    dgram.stop()  # nothing at the path now
    c = Connector(f'unixgram:{dgram.path}', **FAST)
    await c.start()
    c.incr('lost')
    c.gauge('lost.too', -1)  # two lines, one payload
    await asyncio.wait_for(c.processor.queue.join(), 5)
    assert (c.sent, c.dropped_send_failed) == (0, 2)
    assert any('refused 2 payloads' in r.getMessage() for r in caplog.records)
    back = UnixDatagramReceiver(dgram.path)  # a server (re)starts at the same path
    try:
        c.incr('found')
        await asyncio.wait_for(c.stop(), 5)
        assert back.datagram() == b'counters.found:1|c'
        assert (c.sent, c.dropped, c.enqueued) == (1, 2, 3)
    finally:
        back.close()
        dgram.close()


async def test_a_full_receiver_queue_drops_and_counts_without_blocking() -> None:
    """A receiver that never reads: once its queue is full sends are dropped, counted."""
    receiver = UnixDatagramReceiver(rcvbuf=4096)
    protocol = UnixDatagramProtocol.open(receiver.path, 8192)
    try:
        attempts = 0
        while protocol.dropped == 0 and attempts < FILL_LIMIT:
            protocol.send_batch([b'fill.the.queue:1|c'])
            attempts += 1
        assert protocol.dropped == 1
        assert protocol.sent == attempts - 1
        assert protocol.last_error is not None
        assert protocol.last_error.errno in (errno.EAGAIN, errno.ENOBUFS)
    finally:
        assert protocol.transport is not None
        protocol.transport.close()
        receiver.close()


def test_sync_client_sends_unix_datagrams(dgram: UnixDatagramReceiver) -> None:
    """UnixDatagramStatsClient sends each metric, and pipelines packed to 8192 bytes."""
    client = UnixDatagramStatsClient(dgram.path, prefix='app', tag_dialect='dogstatsd')
    try:
        client.incr('hits')
        client.timing('took', 12.5, tags={'env': 'ci'})
        assert dgram.datagrams(2) == [b'app.hits:1|c', b'app.took:12.5|ms|#env:ci']
        with client.pipeline() as pipe:
            for i in range(1000):
                pipe.gauge('level', i)
        datagrams = dgram.datagrams(1000)
        assert 1 < len(datagrams) < 10
        assert all(len(d) <= 8192 for d in datagrams)
        dgram.assert_quiet(client)
        assert client.dropped == 0
    finally:
        client.close()
        dgram.close()


def test_sync_client_drops_and_counts_when_nothing_listens(
        dgram: UnixDatagramReceiver) -> None:
    """A missing socket, then a full queue: dropped and counted, never raised."""
    dgram.stop()
    client = UnixDatagramStatsClient(dgram.path)
    try:
        client.incr('nobody')
        client.gauge('nobody', 1)
        assert client.dropped_send_failed == 2
        full = UnixDatagramReceiver(dgram.path, rcvbuf=4096)
        attempts = 0
        while client.dropped_send_failed == 2 and attempts < FILL_LIMIT:
            client.incr('fill')
            attempts += 1
        assert client.dropped_send_failed == 3  # the queue filled: one more refusal
        assert full.datagram() == b'fill:1|c'  # the rest were delivered
        full.close()
    finally:
        client.close()
        dgram.close()


@pytest.mark.parametrize('size', [0, -1, 65_508, True, '8192'])
def test_sync_client_checks_its_datagram_size(size: object) -> None:
    """max_datagram_size outside 1..65507 (or not an int) is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match='max_datagram_size must be an int'):
        UnixDatagramStatsClient('/run/statsd.sock', max_datagram_size=size)  # type: ignore[arg-type]


def test_sync_client_needs_a_path() -> None:
    """An empty socket path is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match='socket_path'):
        UnixDatagramStatsClient('')


def test_datagram_protocol_counts_each_payload_of_a_packed_batch(
        dgram: UnixDatagramReceiver) -> None:
    """Losses and deliveries are counted per payload, a two-line gauge being one payload."""
    negative_gauge = b'g:0|g\ng:-1|g'
    payloads = [b'a' * 40 + b':1|c', negative_gauge] * 10
    protocol = UnixDatagramProtocol.open(dgram.path, 100)
    try:
        assert protocol.send_batch(list(payloads)) == 20
        datagrams = dgram.datagrams(30)
        assert b'\n'.join(datagrams) == b'\n'.join(payloads)
        assert all(negative_gauge in d or b'g:' not in d for d in datagrams)  # never split
        dgram.stop()  # the server goes away
        assert protocol.send_batch(list(payloads)) == 0
        assert (protocol.sent, protocol.dropped) == (20, 20)
        assert protocol.transport is not None
        protocol.transport.abort()
        assert protocol.send_batch([b'late:1|c']) == 0  # closed: kept, not lost
        assert protocol.unsent == [b'late:1|c']
    finally:
        if protocol.transport is not None:
            protocol.transport.close()


def test_sync_client_replaces_text_utf8_cannot_carry(dgram: UnixDatagramReceiver) -> None:
    """A lone surrogate in a set member is sent as '?', not raised."""
    client = UnixDatagramStatsClient(dgram.path)
    try:
        client.set('members', 'x\ud800')
        assert dgram.datagram() == b'members:x?|s'
    finally:
        client.close()


def test_sync_pipeline_counts_every_metric_of_a_refused_datagram(
        dgram: UnixDatagramReceiver) -> None:
    """A refused datagram of a pipeline counts each metric it held, not one."""
    dgram.stop()
    client = UnixDatagramStatsClient(dgram.path, max_datagram_size=512)
    try:
        with client.pipeline() as pipe:
            for i in range(300):
                pipe.gauge('level', -i)  # two lines for the negative ones
        assert client.dropped_send_failed == 300
    finally:
        client.close()
