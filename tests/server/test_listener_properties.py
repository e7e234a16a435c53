"""Arbitrary bytes against the UDP and TCP listeners (hypothesis).

The listeners must be transparent: what the aggregator computes from the
bytes sent over a socket equals what it computes from the same bytes handed
to it directly (with over-long TCP lines counted as bad lines), and nothing
a client sends stops a listener.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sprockets_statsd.server import binding, listeners
from sprockets_statsd.server.aggregator import Aggregator, Snapshot
from sprockets_statsd.server.config import AggregatorConfig
from tests.server.helpers import send_udp, wait_until

MAX_LINE = 100
SENTINEL = b'sentinel'
GOOD = b'good.key:1|c'
CONFIG = AggregatorConfig(flush_interval=1)
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Plausible statsd lines, good and bad, to mix with raw bytes.
statsd_lines = st.builds(
    lambda name, value, kind, rate, tags: b'%s:%s|%s%s%s' % (name, value, kind, rate, tags),
    st.sampled_from([b'a', b'b.c', b'x y', b'd/e', b'', b'g;k=v', b'\xff\xfe']),
    st.sampled_from([b'1', b'-1', b'+2', b'1.5', b'NaN', b'1e3', b'', b'0x1', b'x']),
    st.sampled_from([b'c', b'ms', b'g', b's', b'h', b'd', b'x', b'', b'c\r']),
    st.sampled_from([b'', b'|@0.5', b'|@0', b'|@x', b'|@2']),
    st.sampled_from([b'', b'|#t:1', b'|#a,b:c', b'|#']),
)
chunks_of_bytes = st.one_of(st.binary(max_size=300), statsd_lines)
packets = st.lists(chunks_of_bytes, max_size=8).map(b'\n'.join)


class Switch:
    """Forwards packets to the current example's aggregator."""

    def __init__(self) -> None:
        self.target = Aggregator(CONFIG)
        self.sentinels = 0

    def receive(self, packet: bytes) -> None:
        if packet == SENTINEL:
            self.sentinels += 1
        else:
            self.target.receive(packet)


@dataclasses.dataclass
class Rig:
    loop: asyncio.AbstractEventLoop
    switch: Switch
    udp: listeners.UDPListener
    tcp: listeners.StreamListener

    def run(self, coroutine: typing.Coroutine[typing.Any, typing.Any, None]) -> None:
        self.loop.run_until_complete(asyncio.wait_for(coroutine, 30))


@pytest.fixture(scope='module')
def rig() -> typing.Iterator[Rig]:
    """UDP and TCP listeners on one loop, shared by every example."""
    loop = asyncio.new_event_loop()
    switch = Switch()
    udp_socks, tcp_socks = binding.bind_sockets('127.0.0.1', 0, udp_receive_buffer=1 << 22)

    async def start() -> Rig:
        udp = listeners.UDPListener(udp_socks[0], switch)
        udp.start()
        tcp = listeners.StreamListener(tcp_socks[0], switch, max_line_length=MAX_LINE)
        await tcp.start()
        return Rig(loop, switch, udp, tcp)

    rig = loop.run_until_complete(start())
    try:
        yield rig
    finally:
        rig.udp.close()
        loop.run_until_complete(rig.tcp.close())
        loop.close()
    # Nothing any example sent made a listener fail.
    assert rig.udp.errors == rig.tcp.errors == 0


def same_aggregates(got: Snapshot, expected: Snapshot, *, packets: bool) -> None:
    assert dict(got.counters) | {'statsd.packets_received': 0} == dict(
        expected.counters
    ) | {'statsd.packets_received': 0}
    assert dict(got.timers) == dict(expected.timers)
    assert dict(got.timer_counters) == dict(expected.timer_counters)
    assert dict(got.gauges) == dict(expected.gauges)
    assert dict(got.sets) == dict(expected.sets)
    assert got.bad_lines_seen == expected.bad_lines_seen
    assert got.metrics_received == expected.metrics_received
    if packets:
        assert got.packets_received == expected.packets_received


@PROPERTY_SETTINGS
@given(st.lists(packets, min_size=1, max_size=10))
def test_udp_listener_is_transparent_to_arbitrary_datagrams(
    rig: Rig, garbage: list[bytes]
) -> None:
    """Arbitrary datagrams, each with a good line after the noise: the
    aggregator sees exactly the datagrams sent, so the good lines count."""
    rig.switch.target = received = Aggregator(CONFIG)
    expected = Aggregator(CONFIG)
    datagrams = [noise + b'\n' + GOOD for noise in garbage]
    for datagram in datagrams:
        expected.receive(datagram)
    seen = rig.switch.sentinels
    # Loopback keeps the order: the sentinel comes after every datagram.
    send_udp(rig.udp.address, *datagrams, SENTINEL)
    rig.run(wait_until(lambda: rig.switch.sentinels > seen, what='the sentinel'))
    now = time.time()
    got = received.flush(now)
    same_aggregates(got, expected.flush(now), packets=True)
    assert got.counters['good.key'] >= len(datagrams)


def model_stream(stream: bytes) -> bytes:
    """What the TCP listener should hand on for `stream`, in one packet."""
    return b'\n'.join(
        listeners.LINE_TOO_LONG if len(line) > MAX_LINE else line
        for line in stream.split(b'\n')
    )


@PROPERTY_SETTINGS
@given(st.lists(st.one_of(packets, st.binary(min_size=MAX_LINE, max_size=400)),
                min_size=1, max_size=8), st.data())
def test_tcp_listener_is_transparent_to_arbitrary_streams(
    rig: Rig, pieces: list[bytes], data: st.DataObject
) -> None:
    """An arbitrary stream, cut into arbitrary chunks, with a good line
    after each piece: lines reach the aggregator whole whatever the chunking,
    over-long lines count as bad lines, and the good lines count."""
    rig.switch.target = received = Aggregator(CONFIG)
    stream = b''.join(piece + b'\n' + GOOD + b'\n' for piece in pieces)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=6)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    expected = Aggregator(CONFIG)
    expected.receive(model_stream(stream))

    accepted = rig.tcp.accepted

    async def send() -> None:
        sock = socket.create_connection(rig.tcp.address[:2])
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with sock:
            for chunk in chunks:
                sock.sendall(chunk)
        # Closed by the client: the listener has handled everything once
        # the connection is gone on its side too.
        await wait_until(lambda: rig.tcp.accepted > accepted and not rig.tcp.connections,
                         what='the connection to end')

    rig.run(send())
    now = time.time()
    got = received.flush(now)
    same_aggregates(got, expected.flush(now), packets=False)
    assert got.counters['good.key'] >= len(pieces)
