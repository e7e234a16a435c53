"""End to end through real clients: datadogpy's DogStatsd and our own, over UDP and Unix datagrams."""

from __future__ import annotations

import asyncio
import math
import os
import socket
import stat
import typing
import urllib.request

import pytest
from datadog.dogstatsd.base import DogStatsd
from prometheus_client.parser import text_string_to_metric_families

from sprockets_statsd.client import StatsClient, UnixDatagramStatsClient
from sprockets_statsd.server.app import Server
from tests.server.helpers import DEFAULT_TIMEOUT, FakeCarbon, running_server

HISTOGRAMS = {'histograms': (('lat*', (15.0, math.inf)),)}


def _metrics(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The server's /metrics, as ``{(sample name, sorted labels): value}``."""
    host, port = server.http_addresses[0][:2]
    with urllib.request.urlopen(f'http://{host}:{port}/metrics', timeout=DEFAULT_TIMEOUT) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def _wait_for_metric(
    server: Server, name: str, labels: dict[str, str], value: float
) -> None:
    """Poll /metrics (in a thread) until `name{labels}` has `value`."""
    wanted = (name, tuple(sorted(labels.items())))
    deadline = asyncio.get_running_loop().time() + DEFAULT_TIMEOUT
    found: float | None = None
    while (found := (await asyncio.to_thread(_metrics, server)).get(wanted)) != value:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f'{name}{labels} is {found}, not {value}')
        await asyncio.sleep(0.05)


def _dogstatsd(**settings: typing.Any) -> DogStatsd:
    """A DogStatsd client that sends every call at once, without telemetry."""
    return DogStatsd(
        disable_telemetry=True,
        disable_buffering=True,
        constant_tags=['env:prod'],
        **settings,
    )


def _send_with_datadogpy(client: DogStatsd) -> None:
    """Every kind, tags after the constant ones (``region:eu,env:prod``)."""
    client.increment('page.views', tags=['region:eu'])
    client.increment('page.views', 2, tags=['region:eu'])
    client.histogram('lat', 10, tags=['region:eu'])
    client.distribution('lat', 30, tags=['region:eu'])
    client.timing('lat', 20, tags=['region:eu'])
    client.gauge('temp', 21.5, tags=['region:eu'])
    client.gauge_with_timestamp('stamped', 7, timestamp=1_700_000_000)  # 1.3
    client.set('users', 'ann', tags=['region:eu'])
    client.event('deploy', 'v1 is out', tags=['region:eu'])
    client.service_check('db.up', DogStatsd.OK, tags=['region:eu'], message='fine')
    client.flush()


async def _check_datadogpy_results(carbon: FakeCarbon, server: Server) -> None:
    tags = ';env=prod;region=eu'
    await carbon.wait_for(
        lambda c: sum(c.values(f'stats_counts.page.views{tags}')) == 3, '3 page views'
    )
    await carbon.wait_for(
        lambda c: c.values(f'stats.timers.lat.count{tags}')[-1:] == [3], '3 timer values'
    )
    assert carbon.values(f'stats.timers.lat.sum{tags}')[-1] == 60
    assert carbon.values(f'stats.gauges.temp{tags}')[-1] == 21.5
    assert carbon.values('stats.gauges.stamped;env=prod')[-1] == 7
    assert carbon.values(f'stats.sets.users.count{tags}')[-1] == 1
    await carbon.wait_for(
        lambda c: sum(c.values('stats_counts.statsd.events_seen')) == 1
        and sum(c.values('stats_counts.statsd.service_checks_seen')) == 1,
        'one event and one service check',
    )
    assert sum(carbon.values('stats_counts.statsd.bad_lines_seen')) == 0
    # Nothing of the container id reached any name.
    assert not [p.name for p in carbon.points if 'abc123' in p.name or 'c:' in p.name]
    labels = {'env': 'prod', 'region': 'eu'}
    await _wait_for_metric(server, 'page_views_total', labels, 3)
    await _wait_for_metric(server, 'lat_seconds_count', labels, 3)
    # h, d and ms alike fall into the --histogram bins: 10 ms <= 15 ms.
    await _wait_for_metric(server, 'lat_seconds_bucket', {**labels, 'le': '0.015'}, 1)
    await _wait_for_metric(server, 'lat_seconds_bucket', {**labels, 'le': '+Inf'}, 3)
    await _wait_for_metric(server, 'temp', labels, 21.5)


async def test_datadogpy_over_udp() -> None:
    """datadogpy's DogStatsd with tags and a container id, over UDP.

    Its lines carry ``|#tags|c:<container>`` and ``|T``; the flushed
    Graphite lines and /metrics show the tags as sent, nothing else.
    """
    async with FakeCarbon() as carbon, running_server(
        sinks=[(carbon.host, carbon.port)], load_sinks=(('127.0.0.1', 0),),
        aggregator=HISTOGRAMS,
    ) as server:
        host, port = server.udp_addresses[0][:2]
        client = _dogstatsd(host=host, port=port, container_id='abc123')
        try:
            await asyncio.to_thread(_send_with_datadogpy, client)
        finally:
            client.close_socket()
        await _check_datadogpy_results(carbon, server)


async def test_datadogpy_over_a_unix_datagram_socket(tmp_path: os.PathLike[str]) -> None:
    """datadogpy's ``socket_path`` transport reaches --unix-datagram."""
    path = os.path.join(tmp_path, 'dsd.socket')
    async with FakeCarbon() as carbon, running_server(
        sinks=[(carbon.host, carbon.port)],
        load_sinks=(('127.0.0.1', 0),),
        unix_datagram=path,
        aggregator=HISTOGRAMS,
    ) as server:
        assert path in server.udp_addresses
        client = _dogstatsd(socket_path=path, container_id='abc123')
        try:
            await asyncio.to_thread(_send_with_datadogpy, client)
        finally:
            client.close_socket()
        await _check_datadogpy_results(carbon, server)


@pytest.mark.parametrize('dialect', ['dogstatsd', 'influxdb', 'graphite'])
async def test_our_client_in_every_dialect_is_one_series(dialect: str) -> None:
    """Our own sync client in each dialect, and datadogpy, add to one series."""
    async with FakeCarbon() as carbon, running_server(
        sinks=[(carbon.host, carbon.port)], load_sinks=(('127.0.0.1', 0),)
    ) as server:
        host, port = server.udp_addresses[0][:2]
        ours = StatsClient(host, port, tag_dialect=dialect, tags={'region': 'eu'})
        dog = _dogstatsd(host=host, port=port)
        try:
            ours.incr('page.views', 2, tags={'env': 'prod'})
            ours.timing('lat', 15, tags={'env': 'prod'})
            dog.increment('page.views', tags=['region:eu'])
        finally:
            ours.close()
            dog.close_socket()
        tags = ';env=prod;region=eu'
        await carbon.wait_for(
            lambda c: sum(c.values(f'stats_counts.page.views{tags}')) == 3, '3 views'
        )
        await carbon.wait_for_value(f'stats.timers.lat.upper{tags}', 15)
        assert not [p.name for p in carbon.points if p.name.startswith('stats_counts.page.views,')]
        await _wait_for_metric(
            server, 'page_views_total', {'env': 'prod', 'region': 'eu'}, 3
        )


async def test_our_unix_datagram_client_in_every_dialect(tmp_path: os.PathLike[str]) -> None:
    """Our UnixDatagramStatsClient reaches --unix-datagram; every dialect and
    a pipeline of them add to one series per tag set."""
    path = os.path.join(tmp_path, 'statsd.dgram')
    async with FakeCarbon() as carbon, running_server(
        sinks=[(carbon.host, carbon.port)], binds=(), unix_datagram=path
    ) as server:
        clients = [
            UnixDatagramStatsClient(path, tag_dialect=dialect, tags={'region': 'eu'})
            for dialect in ('dogstatsd', 'influxdb', 'graphite')
        ]
        try:
            for client in clients:
                client.incr('jobs', tags={'env': 'prod'})
                with client.pipeline() as pipe:
                    pipe.incr('jobs', 2, tags={'env': 'prod'})
                    pipe.timing('job.time', 7, tags={'env': 'prod'})
        finally:
            for client in clients:
                client.close()
        assert server.udp_addresses == [path]
        await carbon.wait_for(
            lambda c: sum(c.values('stats_counts.jobs;env=prod;region=eu')) == 9, '9 jobs'
        )
        await carbon.wait_for_value('stats.timers.job.time.count;env=prod;region=eu', 3)


async def test_unix_datagram_socket_file(tmp_path: os.PathLike[str]) -> None:
    """The socket file gets its mode, replaces a stale one and is removed on exit."""
    path = os.path.join(tmp_path, 'statsd.dgram')
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(path)
    stale.close()
    async with FakeCarbon() as carbon, running_server(
        sinks=[(carbon.host, carbon.port)],
        binds=(),
        unix_datagram=path,
        unix_datagram_mode=0o660,
    ) as server:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        assert 'unix-dgram ' + path in server.describe()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b'hits:1|c\nhits:2|c', path)
            sock.sendto(b'lat:1:2:3|d', path)
        await carbon.wait_for(lambda c: sum(c.values('stats_counts.hits')) == 3, '3 hits')
        await carbon.wait_for_value('stats.timers.lat.count', 3)
    assert not _exists(path)


def _exists(path: str) -> bool:
    return os.path.exists(path)


def _write(path: str, text: str) -> None:
    with open(path, 'w') as file:
        file.write(text)


def _read(path: str) -> str:
    with open(path) as file:
        return file.read()


async def test_unix_datagram_path_that_is_not_a_socket(tmp_path: os.PathLike[str]) -> None:
    """A regular file at the path is not replaced: the server does not start."""
    path = os.path.join(tmp_path, 'file')
    _write(path, 'keep me')
    with pytest.raises(OSError, match='cannot listen on'):
        async with running_server(unix_datagram=path):
            pass  # pragma: no cover
    assert _read(path) == 'keep me'
