"""Queries while 100k lines/s arrive: no data lost, no torn answers.

The server runs as its own process and a second process sends paced load,
so that neither shares an interpreter with the test, which queries every
endpoint and the admin console as fast as they answer.  Over TCP the
totals must match exactly.  Over UDP the kernel may drop datagrams when
the machine is busy, so the loss is measured and recorded, not required
to be zero.  The figures go to test-artifacts/query-load.txt.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
import sys
import time
import typing

import tornado.httpclient
from prometheus_client.parser import text_string_to_metric_families

from tests.server.helpers import DEFAULT_TIMEOUT, ServerProcess

RATE = 100_000  # lines per second
SECONDS = 2.0
TIMER_SHARE = 10  # one line in ten is a timer
#: Lines per UDP datagram, as a client that packs its metrics sends them.
LINES_PER_DATAGRAM = 20
ARTIFACT = pathlib.Path(__file__).resolve().parents[2] / 'test-artifacts' / 'query-load.txt'

# Paced sender: batches every 10 ms, sleeping until each batch is due.
_SENDER = r'''
import json, socket, sys, time
protocol, host, port, rate, seconds, share, per_datagram = sys.argv[1:8]
port, rate, seconds, share = int(port), int(rate), float(seconds), int(share)
per_datagram = int(per_datagram)
per_batch, interval = rate // 100, 0.01
lines = [b'load.%s:1|c\n' % protocol.encode()] * (per_batch - per_batch // share)
lines += [b'load.%s_ms:5|ms\n' % protocol.encode()] * (per_batch // share)
if protocol == 'tcp':
    sock = socket.create_connection((host, port))
    payloads = [b''.join(lines)]
else:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payloads = [b''.join(lines[i:i + per_datagram]).rstrip(b'\n')
                for i in range(0, len(lines), per_datagram)]
batches = int(seconds / interval)
start = time.perf_counter()
for n in range(batches):
    delay = start + n * interval - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
    for payload in payloads:
        if protocol == 'tcp':
            sock.sendall(payload)
        else:
            sock.sendto(payload, (host, port))
elapsed = time.perf_counter() - start
sock.close()
print(json.dumps({'lines': batches * per_batch, 'timers': batches * (per_batch // share),
                  'seconds': elapsed}))
'''


class Endpoints:
    """The server process's HTTP and admin ports, from its startup line."""

    def __init__(self, process: ServerProcess) -> None:
        text = ''.join(process.stderr)
        http = re.search(r'load sink http://127\.0\.0\.1:(\d+)/', text)
        admin = re.search(r'admin console on 127\.0\.0\.1:(\d+)', text)
        assert http, text
        assert admin, text
        self.http = f'http://127.0.0.1:{http[1]}'
        self.admin = int(admin[1])
        self.pid = process.process.pid if process.process else 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    fields = pathlib.Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # USER_HZ is 100 on Linux


class Queries:
    """Queries every endpoint in turn and checks each answer."""

    def __init__(self, endpoints: Endpoints, protocol: str) -> None:
        self.endpoints = endpoints
        self.name = f'load.{protocol}'
        self.client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
        self.done = 0
        self.last_json = 0.0
        self.last_prometheus = 0.0

    async def fetch(self, path: str) -> bytes:
        response = await self.client.fetch(
            self.endpoints.http + path, request_timeout=DEFAULT_TIMEOUT
        )
        assert response.code == 200
        return typing.cast(bytes, response.body)

    async def admin(self, command: bytes) -> bytes:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection('127.0.0.1', self.endpoints.admin), DEFAULT_TIMEOUT
        )
        writer.write(command + b'\nquit\n')
        reply = await asyncio.wait_for(reader.read(), DEFAULT_TIMEOUT)
        writer.close()
        assert reply.endswith(b'END\n\n'), reply[-200:]
        return reply

    async def total(self) -> float:
        """The counter over the whole window, which must never go down."""
        stat = json.loads(await self.fetch('/15'))['Stat']
        value = float(stat.get(self.name, 0))
        assert value >= self.last_json, (value, self.last_json)
        self.last_json = value
        return value

    async def prometheus_total(self) -> float:
        text = (await self.fetch('/metrics')).decode()
        name = self.name.replace('.', '_')
        values = [s.value for f in text_string_to_metric_families(text)
                  for s in f.samples if s.name == name + '_total']
        value = values[0] if values else 0.0
        assert value >= self.last_prometheus, (value, self.last_prometheus)
        self.last_prometheus = value
        return value

    async def round(self) -> None:
        """One query of each kind."""
        await self.total()
        json.loads(await self.fetch('/1'))
        json.loads(await self.fetch('/5/full'))
        await self.prometheus_total()
        assert b'statsd overview' in await self.fetch('/?filter=load')
        assert (await self.fetch('/health')) == b'up\n'
        await self.admin(b'counters')
        await self.admin(b'stats')
        self.done += 8

    async def run_until(self, finished: asyncio.Future[typing.Any]) -> None:
        while not finished.done():
            await self.round()


async def send(protocol: str, port: int) -> dict[str, float]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, '-c', _SENDER, protocol, '127.0.0.1', str(port), str(RATE),
        str(SECONDS), str(TIMER_SHARE), str(LINES_PER_DATAGRAM),
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), SECONDS + 60)
    assert process.returncode == 0
    return typing.cast(dict[str, float], json.loads(stdout))


async def run_load(protocol: str) -> dict[str, float]:
    """Send for SECONDS while querying; return what was sent and received."""
    async with ServerProcess(
        '-b', '127.0.0.1:0', '-f', '0.5', '--http', '127.0.0.1:0',
        '--admin', '127.0.0.1:0',
    ) as process:
        endpoints = Endpoints(process)
        queries = Queries(endpoints, protocol)
        try:
            cpu = cpu_seconds(endpoints.pid)
            sender = asyncio.ensure_future(send(protocol, process.port))
            started = time.perf_counter()
            await asyncio.wait_for(queries.run_until(sender), SECONDS + 60)
            sent = await sender
            query_seconds = time.perf_counter() - started
            queries_during = queries.done
            cpu = cpu_seconds(endpoints.pid) - cpu
            # Everything sent is in the server once a flush follows the
            # sender's close (TCP), or once the count stops moving (UDP).
            deadline = asyncio.get_running_loop().time() + DEFAULT_TIMEOUT
            previous = -1.0
            while (received := await queries.total()) != sent['lines'] - sent['timers']:
                if protocol == 'udp' and received == previous:
                    break
                previous = received
                assert asyncio.get_running_loop().time() < deadline, (received, sent)
                await asyncio.sleep(1.0 if protocol == 'udp' else 0.1)
            stat = json.loads(await queries.fetch('/15'))['Stat']
            prometheus = await queries.prometheus_total()
        finally:
            queries.client.close()
        status, _, stderr = await process.stop()
    assert status == 0, stderr
    return {
        'sent_lines': sent['lines'],
        'send_rate': sent['lines'] / sent['seconds'],
        'counter_sent': sent['lines'] - sent['timers'],
        'counter_received': received,
        'timer_sent': sent['timers'],
        'timer_received': stat.get(f'stats.timers.load.{protocol}_ms.count', 0),
        'prometheus_total': prometheus,
        'bad_lines': stat.get('statsd.bad_lines_seen', 0),
        'queries': queries_during,
        'query_rate': queries_during / query_seconds,
        'server_cpu': cpu / sent['seconds'],
    }


def record(protocol: str, figures: dict[str, float]) -> None:
    ARTIFACT.parent.mkdir(exist_ok=True)
    lost = figures['counter_sent'] - figures['counter_received']
    line = (
        f'{time.strftime("%Y-%m-%dT%H:%M:%S")} {protocol}: sent {figures["sent_lines"]:.0f} '
        f'lines at {figures["send_rate"]:.0f}/s, counter {figures["counter_received"]:.0f}'
        f'/{figures["counter_sent"]:.0f} received ({lost:.0f} lost, '
        f'{100 * lost / figures["counter_sent"]:.3f} %), timer count '
        f'{figures["timer_received"]:.0f}/{figures["timer_sent"]:.0f}, '
        f'{figures["queries"]:.0f} queries at {figures["query_rate"]:.0f}/s, '
        f'server CPU {100 * figures["server_cpu"]:.0f} % of a core\n'
    )
    with ARTIFACT.open('a') as out:
        out.write(line)
    print(line, end='')


async def test_queries_during_100k_lines_per_second_over_tcp_lose_nothing() -> None:
    """Over TCP every line arrives: with every endpoint and the console
    queried throughout, the totals are exact and never went down."""
    figures = await run_load('tcp')
    record('tcp', figures)
    assert figures['counter_received'] == figures['counter_sent']
    assert figures['timer_received'] == figures['timer_sent']
    assert figures['prometheus_total'] == figures['counter_sent']
    assert figures['bad_lines'] == 0
    assert figures['send_rate'] > RATE * 0.8  # the load really was there
    assert figures['queries'] >= 8


async def test_queries_during_100k_lines_per_second_over_udp_are_measured() -> None:
    """Over UDP the same load is measured: whatever arrived is counted
    exactly once, and every query answered throughout."""
    figures = await run_load('udp')
    record('udp', figures)
    assert 0 < figures['counter_received'] <= figures['counter_sent']
    # Measured at no loss on two cores, even with two busy processes beside
    # it; 1 % leaves room for a slower machine and still catches a receive
    # path that falls behind.
    assert figures['counter_received'] >= figures['counter_sent'] * 0.99
    assert figures['timer_received'] <= figures['timer_sent']
    assert figures['prometheus_total'] == figures['counter_received']
    assert figures['bad_lines'] == 0
    assert figures['queries'] >= 8
