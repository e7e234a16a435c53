"""The server in front of a Graphite cluster: carbon-relay and two caches.

The server flushes to a real ``carbon-relay`` (consistent hashing, as a
Graphite cluster is usually run), which spreads the series over two real
``carbon-cache`` processes.  Every series must land in exactly one cache,
the one carbon's own hash ring names, with the values the server computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib

import pytest
from carbon.hashing import ConsistentHashRing  # type: ignore[import-untyped]

from tests.server.carbon import WRITE_TIMEOUT, CarbonCache, CarbonRelay
from tests.server.helpers import ServerProcess, send_tcp, wait_until

COUNTERS = 40
GAUGES = 40
FLUSH_INTERVAL = 0.5


def expected_points() -> dict[str, set[float]]:
    """Every series the metrics below produce, with its stored values."""
    expected: dict[str, set[float]] = {}
    for i in range(COUNTERS):
        expected[f'stats_counts.relay_test.c{i}'] = {i + 1}
        expected[f'stats.relay_test.c{i}'] = {(i + 1) / FLUSH_INTERVAL}
    for i in range(GAUGES):
        expected[f'stats.gauges.relay_test.g{i}'] = {i + 0.5}
    for stat, value in (('upper', 30), ('lower', 10), ('sum', 60), ('count', 3),
                        ('mean', 20), ('upper_90', 30), ('count_90', 3)):
        expected[f'stats.timers.relay_test.t.{stat}'] = {value}
    return expected


def metrics() -> bytes:
    """The lines to send: each name's data on one line, so that it is
    aggregated into one flush whatever the TCP segmenting."""
    lines = [f'relay_test.c{i}:{i + 1}|c' for i in range(COUNTERS)]
    lines += [f'relay_test.g{i}:{i + 0.5}|g' for i in range(GAUGES)]
    lines.append('relay_test.t:10|ms:20|ms:30|ms')
    return '\n'.join(lines).encode() + b'\n'


@pytest.mark.slow
async def test_every_series_lands_in_exactly_one_cache(tmp_path: pathlib.Path) -> None:
    """Through carbon-relay with consistent hashing over two carbon-caches,
    each series the server sends is stored by exactly the cache carbon's
    hash ring picks, with the right values, and both caches get series."""
    caches = {name: CarbonCache(tmp_path / name) for name in ('a', 'b')}
    async with contextlib.AsyncExitStack() as stack:
        for cache in caches.values():
            stack.push_async_callback(cache.stop)
        await asyncio.gather(*(cache.start() for cache in caches.values()))
        relay = CarbonRelay(tmp_path / 'relay',
                            [(cache.pickle_port, name) for name, cache in caches.items()])
        stack.push_async_callback(relay.stop)
        await relay.start()
        # Idle series are not sent again: a later flush in the same second
        # would otherwise overwrite a counter's point with a zero.
        server = await stack.enter_async_context(ServerProcess(
            '-b', '127.0.0.1:0', '-s', f'127.0.0.1:{relay.line_port}',
            '-f', str(FLUSH_INTERVAL), '--delete-idle-stats',
        ))
        await send_tcp(server.address, metrics())

        ring = ConsistentHashRing([], hash_type='carbon_ch')
        for name in caches:  # in the relay's DESTINATIONS order
            ring.add_node(('127.0.0.1', name))
        expected = expected_points()
        for series, values in expected.items():
            owner = caches[ring.get_node(series)[1]]
            await owner.wait_for_value(series, next(iter(values)))
        # The server's own series go through the relay as well.
        internal = caches[ring.get_node('statsd.numStats')[1]]
        await wait_until(lambda: 'statsd.numStats' in internal.series(), WRITE_TIMEOUT,
                         'statsd.numStats in its cache')

        stored = {name: cache.series() for name, cache in caches.items()}
        assert stored['a'] & stored['b'] == set()
        assert stored['a']
        assert stored['b']
        for name, names in stored.items():
            for one in names:
                assert ring.get_node(one) == ('127.0.0.1', name), one
        for series, values in expected.items():
            owner = caches[ring.get_node(series)[1]]
            assert set(owner.values(series)) == values, series
