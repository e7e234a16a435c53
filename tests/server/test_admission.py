"""Bounds on stream connections: how many, how long idle, how much partial data."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import re
import resource
import socket
import typing
import urllib.request

import pytest

from sprockets_statsd.server._admission import Admission
from sprockets_statsd.server.aggregator import Aggregator
from sprockets_statsd.server.config import AggregatorConfig
from sprockets_statsd.server.listeners import StreamListener
from tests.server.helpers import (
    DEFAULT_TIMEOUT,
    FakeCarbon,
    ServerProcess,
    running_server,
    wait_until,
)

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(address: typing.Any) -> Connection:
    if isinstance(address, str):
        opening = asyncio.open_unix_connection(address)
    else:
        opening = asyncio.open_connection(address[0], address[1])
    return await asyncio.wait_for(opening, DEFAULT_TIMEOUT)


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Whether the server ended the connection (EOF or reset)."""
    try:
        return await asyncio.wait_for(reader.read(1), DEFAULT_TIMEOUT) == b''
    except ConnectionError:
        return True


def stream_address(server: typing.Any, kind: str) -> typing.Any:
    return next(a for a in server.tcp_addresses if isinstance(a, str) == (kind == 'unix'))


@pytest.mark.parametrize('kind', ['tcp', 'unix'])
async def test_connections_beyond_the_limit_are_refused_and_counted(
    kind: str, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """With max_connections=3, the fourth and fifth connections are closed at
    once and counted; the three served ones are read; when one ends, a new
    connection is served again; the refusals are logged once."""
    async with running_server(
        max_connections=3, flush_interval=3600, unix_socket=str(tmp_path / 'statsd.sock'),
    ) as server:
        address = stream_address(server, kind)
        served = [await connect(address) for _ in range(3)]
        await wait_until(lambda: server.admission.open == 3, what='3 open')
        refused = [await connect(address) for _ in range(2)]
        for reader, writer in refused:
            assert await closed_by_server(reader)
            writer.close()
        assert server.admission.refused == 2
        for _, writer in served:
            writer.write(b'conn:1|c\n')
        await wait_until(lambda: server.aggregator.current_counters().get('conn') == 3)
        served[0][1].close()
        await wait_until(lambda: server.admission.open == 2, what='one closed')
        reader, writer = await connect(address)
        writer.write(b'conn:1|c\n')
        await wait_until(lambda: server.aggregator.current_counters().get('conn') == 4)
        assert server.admission.refused == 2
        assert caplog.text.count('refused a connection') == 1
        for _, w in [*served[1:], (reader, writer)]:
            w.close()


async def test_a_silent_connection_is_closed_and_its_last_line_counts() -> None:
    """A connection silent for longer than idle_timeout is closed by the
    server; its unfinished last line is taken in, as at end of stream."""
    async with running_server(idle_timeout=0.2, flush_interval=3600) as server:
        reader, writer = await connect(server.tcp_addresses[0])
        writer.write(b'idle:5|c')  # no newline: a partial line
        assert await closed_by_server(reader)
        await wait_until(lambda: server.aggregator.current_counters().get('idle') == 5)
        assert server.admission.idle_closed == 1
        assert server.admission.open == 0
        writer.close()


async def test_a_connection_that_keeps_talking_is_not_idle() -> None:
    """Data arriving more often than the idle timeout keeps a connection."""
    async with running_server(idle_timeout=0.5, flush_interval=3600) as server:
        _reader, writer = await connect(server.tcp_addresses[0])
        for count in range(1, 9):
            writer.write(b'busy:1|c\n')
            await wait_until(
                lambda n=count: server.aggregator.current_counters().get('busy') == n)
            await asyncio.sleep(0.1)  # the client's own pace, not a synchronisation
        assert server.admission.idle_closed == 0
        writer.close()


async def test_partial_lines_of_all_connections_share_one_bound() -> None:
    """Unfinished lines held by all connections together stay within the
    bound; a line that would exceed it counts as bad, and the connection
    goes on with its next line."""
    aggregator = Aggregator(AggregatorConfig())
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    admission = Admission(max_partial_bytes=100)
    listener = StreamListener(sock, aggregator, admission=admission)
    await listener.start()
    try:
        first = await connect(listener.address)
        second = await connect(listener.address)
        first[1].write(b'p:1|c\n' + b'a' * 60)
        await wait_until(lambda: admission.partial_bytes == 60)
        second[1].write(b'b' * 60)
        await wait_until(lambda: admission.partial_dropped == 1)
        assert admission.partial_bytes == 60
        second[1].write(b'bbb\nq:2|c\n')  # ends the dropped line, then a good one
        await wait_until(lambda: aggregator.current_counters().get('q') == 2)
        assert aggregator.current_counters()['statsd.bad_lines_seen'] == 1
        for _, writer in (first, second):
            writer.close()
        await wait_until(lambda: admission.open == 0 and admission.partial_bytes == 0)
    finally:
        await listener.close()


def _lowered_limit(limit: int) -> typing.Callable[[], None]:
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return lower


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=DEFAULT_TIMEOUT) as reply:
        return reply.status, reply.read()


async def test_descriptors_stay_in_reserve_under_a_low_rlimit() -> None:
    """A server limited to 200 descriptors serves only as many stream
    connections as fit beside its reserve (and says so); 150 connections
    then leave HTTP, the admin console and the Graphite sink working, and
    refusals and accept failures are logged once, not once each, without
    tracebacks."""
    async with FakeCarbon() as carbon:
        process = ServerProcess(
            '-b', '127.0.0.1:0', '-f', '0.2', '-s', f'127.0.0.1:{carbon.port}',
            '--http', '127.0.0.1:0', '--admin', '127.0.0.1:0', '-v',
            preexec_fn=_lowered_limit(200),
        )
        async with process:
            fit = re.search(r'only (\d+) stream connections fit', ''.join(process.stderr))
            assert fit, process.stderr
            limit = int(fit[1])
            assert 0 < limit < 150
            clients = []
            with contextlib.ExitStack() as stack:
                for _ in range(150):
                    reader, writer = await connect(process.address)
                    stack.callback(writer.close)
                    writer.write(b'conn:1|c\n')
                    clients.append(reader)
                # A descriptor the server opens for itself while the clients
                # come in (a sink's connection, say) takes the lowest free
                # number, below the reserve: one connection fewer fits then.
                await carbon.wait_for(
                    lambda c: sum(c.values('stats_counts.conn')) >= limit - 1,
                    f'{limit - 1} connections served')
                await carbon.wait_for_flushes(len(carbon.timestamps()) + 2)
                served = sum(carbon.values('stats_counts.conn'))
                assert served in (limit - 1, limit)
                http = process.endpoint('load sink')
                status, body = await asyncio.to_thread(_get, f'http://{http}/health')
                assert (status, body) == (200, b'up\n')
                admin_host, admin_port = process.endpoint('admin console').rsplit(':', 1)
                reader, writer = await connect((admin_host, int(admin_port)))
                writer.write(b'health\nquit\n')
                assert await asyncio.wait_for(reader.read(), DEFAULT_TIMEOUT) == b'health: up\n'
                writer.close()
                stats = await asyncio.to_thread(_get, f'http://{http}/15')
                assert json.loads(stats[1])['Stat']['conn'] == served
            status, _, stderr = await process.stop()
        assert status == 0
        # At most once per ten seconds each, and never a traceback per
        # failed accept.
        assert stderr.count('refused a connection') <= 2, stderr
        assert stderr.count('cannot accept connections') <= 2, stderr
        assert 'Traceback' not in stderr, stderr
