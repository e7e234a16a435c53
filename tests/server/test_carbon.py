"""The server against a real carbon-cache, read back from its whisper files."""

from __future__ import annotations

import pathlib

import pytest

from tests.server.carbon import carbon_cache
from tests.server.helpers import running_server, send_udp


@pytest.mark.slow
async def test_flushes_land_in_whisper(tmp_path: pathlib.Path) -> None:
    """Counters, timers and gauges sent to the server end up in carbon's
    whisper files, from periodic flushes and from the final flush on stop."""
    async with carbon_cache(tmp_path) as carbon:
        sink = ('127.0.0.1', carbon.line_port)
        async with running_server(sinks=[sink], flush_interval=1.0) as server:
            send_udp(server.udp_addresses[0],
                     b'carbon_test.hits:3|c\ncarbon_test.hits:4|c\n'
                     b'carbon_test.rt:100|ms\ncarbon_test.rt:200|ms\n'
                     b'carbon_test.temp:21.5|g')
            await carbon.wait_for_value('stats_counts.carbon_test.hits', 7)
            await carbon.wait_for_value('stats.timers.carbon_test.rt.upper', 200)
            await carbon.wait_for_value('stats.timers.carbon_test.rt.mean', 150)
            await carbon.wait_for_value('stats.gauges.carbon_test.temp', 21.5)
        # No periodic flush within the hour: only the final one delivers.
        async with running_server(sinks=[sink], flush_interval=3600) as server:
            send_udp(server.udp_addresses[0], b'carbon_test.final:-4|g')
        await carbon.wait_for_value('stats.gauges.carbon_test.final', -4)
