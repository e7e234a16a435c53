"""Past one machine: etsy's proxy.js in front of three of our servers, and
carbon-c-relay in front of two carbon-caches behind them.

Every component is the real program: the proxy shards names over the
servers by consistent hashing and health-checks their admin consoles; the
servers flush to carbon-c-relay, which spreads the series over the caches
by carbon's consistent hash.  The test sends known counts through the
proxy and reads every series back from the whisper files.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import pathlib
import re
import signal
import time
import typing

import pytest
from carbon.hashing import ConsistentHashRing  # type: ignore[import-untyped]

from tests.server.carbon import WRITE_TIMEOUT, CarbonCache
from tests.server.cluster import CarbonCRelay, StatsdProxy, proxy_ring
from tests.server.helpers import ServerProcess

#: Seconds between our servers' flushes.  Two, so that one server's
#: consecutive flushes never share a whisper second (1 s resolution), even
#: when a flush runs a little late.
FLUSH_INTERVAL = 2.0

#: The proxy's health check interval (and timeout), in seconds.
CHECK_INTERVAL = 1.0

#: Counter names sent through the proxy; name i gets i % 3 + 1 lines in
#: each round, packed 20 lines to a datagram as clients do.
NAMES = [f'topo.c{i}' for i in range(90)]
LINES_PER_DATAGRAM = 20

#: Seconds for the proxy's ring to follow a change of a node's health:
#: a check interval, a check timeout, and room for a loaded machine.
RING_TIMEOUT = 4 * CHECK_INTERVAL + 5

#: Seconds for a round to reach the whisper files: a flush, carbon's write.
ROUND_TIMEOUT = FLUSH_INTERVAL + WRITE_TIMEOUT

_ADMIN = re.compile(r'admin console on (\S+?):(\d+)')


def lines_of(name: str) -> int:
    """How many ``:1|c`` lines `name` gets in one round."""
    return int(name.rsplit('c', 1)[1]) % 3 + 1


class Topology:
    """The running components and what was sent through them."""

    def __init__(self, caches: dict[str, CarbonCache], nodes: list[ServerProcess],
                 admin_ports: list[int], proxy: StatsdProxy) -> None:
        self.caches = caches
        self.nodes = nodes
        self.admin_ports = admin_ports
        self.proxy = proxy
        self.ids = proxy.ids
        #: Lines sent per name, and lines whose loss the test caused.
        self.sent: collections.Counter[str] = collections.Counter()
        self.lost: collections.Counter[str] = collections.Counter()
        #: Lines each node (by ring id) should have received so far.
        self.received: collections.Counter[str] = collections.Counter()
        #: When the stored totals were last seen complete.
        self.settled = 0.0

    def send_round(self, ring: set[str], *, last: str | None = None) -> dict[str, str]:
        """Send one round of every name through the proxy.

        :param ring: the nodes in the proxy's ring now
        :param last: a name whose lines go in a datagram of their own, sent
            after all the others
        :returns: the node each name was sent to
        """
        placement = proxy_ring(sorted(ring), NAMES)
        lines = [f'{name}:1|c'.encode()
                 for name in NAMES if name != last for _ in range(lines_of(name))]
        datagrams = [b'\n'.join(lines[i:i + LINES_PER_DATAGRAM])
                     for i in range(0, len(lines), LINES_PER_DATAGRAM)]
        if last is not None:
            datagrams.append(b'\n'.join([f'{last}:1|c'.encode()] * lines_of(last)))
        self.proxy.send(*datagrams)
        for name in NAMES:
            self.sent[name] += lines_of(name)
            self.received[placement[name]] += lines_of(name)
        return placement

    def stored(self, series: str) -> float:
        """The sum of every point of `series`, over both caches."""
        return sum(sum(cache.values(series)) for cache in self.caches.values())

    def missing(self, names: typing.Iterable[str] = NAMES) -> dict[str, tuple[float, int]]:
        """Names whose stored total is not what was sent less what was lost."""
        out = {}
        for name in names:
            want = self.sent[name] - self.lost[name]
            got = self.stored(f'stats_counts.{name}')
            if got != want:
                out[name] = (got, want)
        return out

    async def settle(self, names: typing.Iterable[str] = NAMES) -> None:
        """Wait until every one of `names` is stored with its exact total."""
        names = list(names)
        deadline = time.monotonic() + ROUND_TIMEOUT
        while wrong := self.missing(names):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f'stored totals differ (got, want): {wrong}\n'
                    f'proxy.js said:\n{self.proxy.output()}')
            await asyncio.sleep(0.2)
        self.settled = time.time()

    async def next_second(self) -> None:
        """Wait for the wall clock to leave the second of the last stored
        point, so that a name's new owner never writes into that second
        (whisper keeps one value per second: the later write wins)."""
        # The condition is the clock itself: wait out the rest of the second.
        await asyncio.sleep(max(0.0, int(self.settled) + 1 - time.time()))

    def node_received(self, index: int) -> float:
        """Lines node `index` flushed, from its own metrics_received."""
        return self.stored(f'stats_counts.statsd.node{index}.metrics_received')

    async def settle_nodes(self, indexes: typing.Iterable[int]) -> None:
        """Wait until each node's stored metrics_received is what the
        proxy's ring says it was sent."""
        indexes = list(indexes)
        deadline = time.monotonic() + ROUND_TIMEOUT
        while True:
            counts = {i: self.node_received(i) for i in indexes}
            want = {i: self.received[self.ids[i]] for i in indexes}
            if counts == want:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f'lines per node {counts}, expected {want}')
            await asyncio.sleep(0.2)

    async def admin(self, index: int, command: str) -> str:
        """Run one admin console command on node `index`."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection('127.0.0.1', self.admin_ports[index]), 5.0)
        try:
            writer.write(command.encode() + b'\n')
            return (await asyncio.wait_for(reader.readline(), 5.0)).decode()
        finally:
            writer.close()
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def topology(tmp_path: pathlib.Path) -> typing.AsyncIterator[Topology]:
    """Two carbon-caches, carbon-c-relay, three servers, proxy.js."""
    async with contextlib.AsyncExitStack() as stack:
        caches = {name: CarbonCache(tmp_path / name) for name in ('a', 'b')}
        for cache in caches.values():
            stack.push_async_callback(cache.stop)
        await asyncio.gather(*(cache.start() for cache in caches.values()))
        relay = CarbonCRelay(tmp_path / 'relay',
                             [(cache.line_port, name) for name, cache in caches.items()])
        stack.push_async_callback(relay.stop)
        await relay.start()
        nodes = []
        admin_ports = []
        for i in range(3):
            node = await stack.enter_async_context(ServerProcess(
                '-b', '127.0.0.1:0', '--admin', '127.0.0.1:0',
                '-s', f'127.0.0.1:{relay.port}', '-f', str(FLUSH_INTERVAL),
                '--delete-idle-stats', '--prefix-stats', f'statsd.node{i}',
            ))
            match = _ADMIN.search(''.join(node.stderr))
            assert match, node.stderr
            nodes.append(node)
            admin_ports.append(int(match[2]))
        proxy = StatsdProxy(
            tmp_path / 'proxy',
            [('127.0.0.1', node.port, admin) for node, admin in zip(nodes, admin_ports, strict=True)],
            check_interval=CHECK_INTERVAL,
        )
        stack.push_async_callback(proxy.stop)
        await proxy.start()
        await proxy.wait_for_ring(set(proxy.ids), RING_TIMEOUT)
        yield Topology(caches, nodes, admin_ports, proxy)


@pytest.mark.slow
async def test_sharded_counts_arrive_exactly_once_and_a_lost_node_costs_one_interval(
    tmp_path: pathlib.Path,
) -> None:
    """Through proxy.js, three servers, carbon-c-relay and two caches:

    1. every count arrives exactly once, each server gets exactly the names
       the proxy's ring gives it, and each series lives in the one cache
       carbon's ring names;
    2. ``health down`` on a server's admin console drains it: the proxy
       moves its names to the other two and nothing is lost; ``health up``
       brings them back;
    3. a server that dies with an interval in progress (frozen, then
       killed) loses exactly that interval's lines; the proxy notices at a
       health check, only the dead server's names move, and the next round
       arrives whole.
    """
    async with topology(tmp_path) as topo:
        everyone = set(topo.ids)
        placement = topo.send_round(everyone)
        assert {placement[name] for name in NAMES} == everyone  # all three get names
        await topo.settle()
        await topo.settle_nodes(range(3))

        # Each series is in the cache carbon's ring (carbon_ch) picks.
        ring = ConsistentHashRing([], hash_type='carbon_ch')
        for name in topo.caches:
            ring.add_node(('127.0.0.1', name))
        stored = {name: cache.series() for name, cache in topo.caches.items()}
        assert stored['a'] & stored['b'] == set()
        assert all(stored.values())
        for cache_name, names in stored.items():
            for series in names:
                assert ring.get_node(series) == ('127.0.0.1', cache_name), series

        # 2. Drain node 1, send a round, bring it back, send a round.
        assert await topo.admin(1, 'health down') == 'health: down\n'
        await topo.proxy.wait_for_ring(everyone - {topo.ids[1]}, RING_TIMEOUT)
        await topo.next_second()
        drained = topo.send_round(everyone - {topo.ids[1]})
        assert topo.ids[1] not in drained.values()
        for name in NAMES:  # only the drained node's names moved
            if placement[name] != topo.ids[1]:
                assert drained[name] == placement[name], name
        await topo.settle()
        await topo.settle_nodes(range(3))
        assert await topo.admin(1, 'health up') == 'health: up\n'
        await topo.proxy.wait_for_ring(everyone, RING_TIMEOUT)
        await topo.next_second()
        assert topo.send_round(everyone) == placement
        await topo.settle()
        await topo.settle_nodes(range(3))

        # 3. Freeze node 0 so that its interval in progress is known, send a
        # round, make sure the proxy handed every line on (the last datagram
        # goes to another node), then kill it.
        victim = topo.nodes[0].process
        assert victim is not None
        victim_names = [n for n in NAMES if placement[n] == topo.ids[0]]
        others = [n for n in NAMES if placement[n] != topo.ids[0]]
        victim.send_signal(signal.SIGSTOP)
        topo.send_round(everyone, last=others[-1])
        await topo.settle(others)
        victim.send_signal(signal.SIGKILL)
        await asyncio.wait_for(victim.wait(), 10)
        for name in victim_names:
            topo.lost[name] += lines_of(name)
        topo.received[topo.ids[0]] -= sum(lines_of(n) for n in victim_names)
        survivors = everyone - {topo.ids[0]}
        await topo.proxy.wait_for_ring(survivors, RING_TIMEOUT)
        await topo.next_second()
        moved = topo.send_round(survivors)
        for name in others:  # only the dead node's names moved
            assert moved[name] == placement[name], name
        assert {moved[name] for name in victim_names} <= survivors
        await topo.settle()
        await topo.settle_nodes([1, 2])

        lost = sum(topo.lost.values())
        assert lost == sum(lines_of(n) for n in victim_names) > 0
        assert 'Removing node 127.0.0.1:' in topo.proxy.output()
