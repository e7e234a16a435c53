"""The server end to end on the test's event loop: listeners, flushes, sinks."""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import socket
import time
import typing

import pytest

from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.server.app import Server, ServerConfig
from sprockets_statsd.server.config import AggregatorConfig
from tests.server.helpers import (
    DEFAULT_TIMEOUT,
    FakeCarbon,
    SteppingClock,
    running_server,
    send_tcp,
    send_udp,
    wait_until,
)


async def test_udp_tcp_and_unix_reach_graphite(tmp_path: os.PathLike[str]) -> None:
    """Metrics sent over UDP, TCP and the Unix socket all reach the sink."""
    path = os.path.join(tmp_path, 'statsd.sock')
    async with FakeCarbon() as carbon, running_server(
        sinks=[(carbon.host, carbon.port)], unix_socket=path
    ) as server:
        udp, tcp = server.udp_addresses[0], server.tcp_addresses[0]
        assert udp[1] == tcp[1]
        send_udp(udp, b'hits:1|c\nhits:2|c')
        await send_tcp(tcp, b'hits:4|c\nlatency:20|ms\n')
        await send_tcp(path, b'hits:8|c\ntemp:-3|g\n')
        await carbon.wait_for(lambda c: sum(c.values('stats_counts.hits')) == 15,
                              f'15 hits (got {carbon.values("stats_counts.hits")})')
        await carbon.wait_for_value('stats.timers.latency.upper', 20)
        await carbon.wait_for_value('stats.gauges.temp', -3)


async def test_ipv6_loopback() -> None:
    """The server listens on ::1 when asked to and flushes what it gets there."""
    async with FakeCarbon('::1') as carbon, running_server(
        sinks=[('::1', carbon.port)], binds=[('::1', 0)]
    ) as server:
        address = server.udp_addresses[0]
        assert address[0] == '::1'
        send_udp(address, b'six:1|c')
        await send_tcp(server.tcp_addresses[0], b'six:1|c\n')
        await carbon.wait_for(lambda c: sum(c.values('stats_counts.six')) == 2, 'two')


@pytest.mark.skipif(not socket.has_dualstack_ipv6(), reason='no dual-stack IPv6')
async def test_default_host_takes_ipv4_and_ipv6() -> None:
    """With no host, one bind serves IPv4 and IPv6 clients."""
    async with FakeCarbon() as carbon, running_server(
        sinks=[(carbon.host, carbon.port)], binds=[('', 0)]
    ) as server:
        port = server.udp_addresses[0][1]
        send_udp(('127.0.0.1', port), b'both:1|c')
        send_udp(('::1', port), b'both:1|c')
        await send_tcp(('127.0.0.1', port), b'both:1|c\n')
        await send_tcp(('::1', port), b'both:1|c\n')
        await carbon.wait_for(lambda c: sum(c.values('stats_counts.both')) == 4, 'four')


async def test_stop_delivers_the_last_interval() -> None:
    """Stopping takes in what is queued, flushes it and delivers it."""
    async with FakeCarbon() as carbon:
        async with running_server(
            sinks=[(carbon.host, carbon.port)], flush_interval=3600
        ) as server:
            # Queued in the kernel at once on loopback; stop() must drain it.
            send_udp(server.udp_addresses[0], b'final:7|c')
        # The server has stopped: its one and only flush must be there.
        assert carbon.values('stats_counts.final') == [7]
        assert len(carbon.timestamps()) == 1


async def test_each_sink_gets_every_flush_and_keeps_its_own_stats() -> None:
    """Two sinks receive the same flushes; a sink that is down does not hold
    the other back, and each reports its own graphiteStats."""
    async with FakeCarbon() as up, FakeCarbon() as down:
        await down.stop()
        async with running_server(
            sinks=[(up.host, up.port), (down.host, down.port)],
            reconnect_max_delay=0.05,
        ) as server:
            send_udp(server.udp_addresses[0], b'shared:1|c')
            await up.wait_for_flushes(3)
            good, bad = server.sinks
            assert good.connected
            assert not bad.connected
            await down.start()
            await down.wait_for_flushes(3)
        assert up.timestamps() == down.timestamps()
        assert up.values('stats_counts.shared')[0] == 1
        assert down.values('stats_counts.shared')[0] == 1


async def test_outage_loses_no_flush_and_repeats_none() -> None:
    """A sink down for several flushes gets every flush when it is back:
    no timestamp missing, none twice."""
    clock = SteppingClock()
    async with FakeCarbon() as carbon:
        async with running_server(
            sinks=[(carbon.host, carbon.port)],
            wall_clock=clock,
            reconnect_max_delay=0.1,
        ) as server:
            await carbon.wait_for_flushes(2)
            await carbon.stop()
            sink = server.sinks[0]
            await wait_until(lambda: sink.buffered_flushes >= 3, what='3 buffered flushes')
            await carbon.start()
            await wait_until(lambda: sink.buffered_flushes == 0 and len(carbon.timestamps()) >= 6,
                             what='the backlog to drain')
        stamps = carbon.timestamps()
        assert stamps == [clock.start + clock.step * n for n in range(1, clock.readings + 1)]
        assert sink.dropped_flushes == 0


async def test_flushes_are_aligned_to_the_start_and_do_not_drift() -> None:
    """Flush k happens at start + k intervals, not later by the time earlier
    flushes took: a slow flush does not push back the following ones."""
    interval, flushes, cost = 0.2, 8, 0.1
    loop = asyncio.get_running_loop()
    moments: list[float] = []

    def slow_clock() -> float:
        moments.append(loop.time())
        time.sleep(cost)  # a flush that blocks the loop for a while
        return time.time()

    start = loop.time()
    async with running_server(flush_interval=interval, wall_clock=slow_clock):
        await wait_until(lambda: len(moments) >= flushes, what=f'{flushes} flushes')
        for k, moment in enumerate(moments[:flushes], 1):
            assert moment >= start + k * interval - 0.001
        # Drifting, flush 8 would come at >= 8 * (0.2 + 0.1) = 2.4 s.
        assert moments[flushes - 1] - start < flushes * interval + 0.5


async def test_default_sink_writes_graphite_lines_to_stdout() -> None:
    """Without sinks, each flush's Graphite lines go to standard output."""
    stdout = io.BytesIO()
    async with running_server(stdout=stdout) as server:
        send_udp(server.udp_addresses[0], b'printed:3|c')
        await wait_until(lambda: b'stats_counts.printed 3 ' in stdout.getvalue(),
                         what='the printed line')


async def test_bind_failure_names_the_address_and_leaves_nothing_open() -> None:
    """A port already taken fails start() with the address in the message."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(('127.0.0.1', 0))
        port = taken.getsockname()[1]
        server = Server(ServerConfig(
            aggregator=AggregatorConfig(flush_interval=1),
            binds=(('127.0.0.1', 0), ('127.0.0.1', port)),
        ), stdout=io.BytesIO())
        with pytest.raises(OSError, match=f'127.0.0.1:{port}'):
            await asyncio.wait_for(server.start(), DEFAULT_TIMEOUT)
        first = server.udp_addresses[0]
    # The first bind succeeded and was released again.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(first)


@pytest.mark.parametrize(('settings', 'field'), [
    ({'binds': ()}, 'binds'),
    ({'binds': (('', 70000),)}, 'binds'),
    ({'sinks': (('carbon', 0),)}, 'sinks'),
    ({'udp_receive_buffer': 0}, 'udp_receive_buffer'),
    ({'max_line_length': -1}, 'max_line_length'),
    ({'sink_buffer_flushes': 0}, 'sink_buffer_flushes'),
    ({'shutdown_timeout': -1.0}, 'shutdown_timeout'),
    ({'reconnect_max_delay': 0.0}, 'reconnect_max_delay'),
])
def test_bad_server_settings_are_refused(settings: dict[str, typing.Any], field: str) -> None:
    """ServerConfig refuses unusable values with a message naming the field."""
    with pytest.raises(ConfigurationError, match=field):
        ServerConfig(**settings)


def test_unix_socket_alone_is_enough() -> None:
    """A server may listen on a Unix socket only."""
    assert ServerConfig(binds=(), unix_socket='/run/statsd.sock').binds == ()


async def test_a_final_flush_right_after_a_regular_one_gets_a_later_timestamp() -> None:
    """Stopping in the same second as a regular flush: the final flush is
    stamped a second later, so its partial interval does not replace the
    full one in Graphite, and both reach the sink."""
    async with FakeCarbon() as carbon:
        async with running_server(
            sinks=[(carbon.host, carbon.port)],
            flush_interval=3600,
            wall_clock=lambda: 1_700_000_000.4,
        ) as server:
            send_udp(server.udp_addresses[0], b'a:1|c')
            await wait_until(lambda: server.aggregator.current_counters().get('a') == 1)
            server.flush()  # the regular flush
            await carbon.wait_for_flushes(1)
            send_udp(server.udp_addresses[0], b'a:2|c')
            await wait_until(lambda: server.aggregator.current_counters().get('a') == 2)
        await carbon.wait_for_flushes(2)
        assert carbon.timestamps() == [1_700_000_000, 1_700_000_001]
        assert carbon.values('stats_counts.a') == [1, 2]


async def test_the_final_flush_waits_for_the_next_second_on_the_real_clock() -> None:
    """With the real clock, a stop right after a regular flush makes the final
    flush wait (at most a second) until the clock rounds to a later second,
    so its timestamp is later but never ahead of the clock's rounding."""
    async with FakeCarbon() as carbon:
        async with running_server(
            sinks=[(carbon.host, carbon.port)], flush_interval=1.0,
        ):
            await carbon.wait_for_flushes(1)
        await carbon.wait_for_flushes(2)
        stamps = carbon.timestamps()
        assert all(a < b for a, b in itertools.pairwise(stamps)), stamps
        assert stamps[-1] <= round(time.time())
