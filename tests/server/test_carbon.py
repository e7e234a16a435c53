"""The server against a real carbon-cache, read back from its whisper files."""

from __future__ import annotations

import os
import pathlib

import pytest
from carbon.util import TaggedSeries  # type: ignore[import-untyped]

from tests.server.carbon import WRITE_TIMEOUT, CarbonCache, carbon_cache
from tests.server.helpers import running_server, send_udp, wait_until


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


def _whisper_path(carbon: CarbonCache, series: str) -> pathlib.Path:
    """Where carbon stores a tagged `series` (named by its hash)."""
    encoded = TaggedSeries.encode(series, os.sep, hash_only=True)
    return carbon.whisper_dir / (encoded + '.wsp')


@pytest.mark.slow
async def test_two_orderings_of_a_tag_set_are_one_whisper_series(
    tmp_path: pathlib.Path,
) -> None:
    """``#b:2,a:1``, ``#a:1,b:2`` and ``,b=2,a=1`` in one interval become
    one series in carbon holding the sum.  (Carbon sorts tags too, so
    separate lines per ordering would land in one file where the last
    write wins.)"""
    async with carbon_cache(tmp_path) as carbon:
        sink = ('127.0.0.1', carbon.line_port)
        async with running_server(sinks=[sink], flush_interval=3600) as server:
            send_udp(server.udp_addresses[0],
                     b'tagtest.hits:1|c|#b:2,a:1\ntagtest.hits:2|c|#a:1,b:2\n'
                     b'tagtest.hits,b=2,a=1:4|c')
        counts = _whisper_path(carbon, 'stats_counts.tagtest.hits;a=1;b=2')
        rates = _whisper_path(carbon, 'stats.tagtest.hits;a=1;b=2')
        # Carbon writes the two files in its own time: wait for both.
        await wait_until(lambda: 7 in carbon.stored(counts) and carbon.stored(rates),
                         WRITE_TIMEOUT, f'the sum 7 in {counts}, and {rates}')
        assert carbon.stored(counts) == [7]
        assert set((carbon.whisper_dir / '_tagged').rglob('*.wsp')) == {counts, rates}
