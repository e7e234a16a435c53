"""Three details in which the server follows etsy statsd since 2020."""

from __future__ import annotations

import time

from tests.server.helpers import FakeCarbon, running_server, send_udp
from tests.server.test_admin import talk


async def test_graphite_stats_and_idle_timer_order_match_the_reference() -> None:
    """last_exception starts at 0 (the console says so), flush_time is whole
    milliseconds, and an idle timer sends count_ps before count."""
    async with FakeCarbon() as carbon, running_server(
        sinks=[(carbon.host, carbon.port)], admin=('127.0.0.1', 0), flush_interval=0.2
    ) as server:
        reply = (await talk(server.admin_addresses[0][1], b'stats\nquit\n')).decode()
        now = int(time.time())
        console = dict(line.split(': ') for line in reply.splitlines() if ': ' in line)
        # The reference shows "now - last_exception", so now itself.
        assert abs(int(console['graphite.last_exception']) - now) <= 2
        send_udp(server.udp_addresses[0], b'idle.t:5|ms')
        await carbon.wait_for_value('stats.timers.idle.t.upper', 5)
        await carbon.wait_for(
            lambda c: 0 in c.values('stats.timers.idle.t.count'), 'an idle flush'
        )
        names = [p.name for p in carbon.points]
        idle_count = len(names) - 1 - names[::-1].index('stats.timers.idle.t.count')
        assert names[idle_count - 1] == 'stats.timers.idle.t.count_ps'
        assert set(carbon.values('stats.statsd.graphiteStats.last_exception')) == {0}
        flush_times = carbon.values('stats.statsd.graphiteStats.flush_time')
        assert flush_times
        assert all(value == int(value) for value in flush_times)
