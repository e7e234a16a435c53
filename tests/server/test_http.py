"""The load sink's HTTP endpoints end to end, and how they are configured."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import socket
import sys
import threading
import typing
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.server import binding, cli, http
from sprockets_statsd.server.aggregator import Aggregator
from sprockets_statsd.server.app import Server, ServerConfig
from sprockets_statsd.server.config import AggregatorConfig
from sprockets_statsd.server.frames import Frame, FrameStore, Window
from sprockets_statsd.server.http import DEFAULT_LOAD_PORT, QueryService
from sprockets_statsd.server.prometheus import StatsdCollector
from sprockets_statsd.server.status import ServerStatus
from tests.server.helpers import (
    DEFAULT_TIMEOUT,
    ServerProcess,
    free_ports,
    running_server,
    send_udp,
    wait_until,
)


class Reply(typing.NamedTuple):
    status: int
    content_type: str
    body: bytes

    def json(self) -> typing.Any:
        return json.loads(self.body)


def _get(url: str, method: str) -> Reply:
    request = urllib.request.Request(url, method=method, data=b'' if method == 'POST' else None)
    try:
        with urllib.request.urlopen(request, timeout=DEFAULT_TIMEOUT) as response:
            return Reply(response.status, response.headers['Content-Type'], response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.headers['Content-Type'], exc.read())


async def get(server: Server, path: str, method: str = 'GET') -> Reply:
    """Request `path` from the server's first HTTP address."""
    host, port = server.http_addresses[0][:2]
    return await asyncio.to_thread(_get, f'http://{host}:{port}{path}', method)


async def stat(server: Server, path: str) -> dict[str, typing.Any]:
    reply = await get(server, path)
    assert reply.status == 200
    return typing.cast(dict[str, typing.Any], reply.json()['Stat'])


async def wait_for_stat(server: Server, path: str, name: str, value: float) -> None:
    """Poll `path` until its Stat gives `name` the value `value`."""
    deadline = asyncio.get_running_loop().time() + DEFAULT_TIMEOUT
    while (found := (await stat(server, path)).get(name)) != value:
        assert asyncio.get_running_loop().time() < deadline, f'{name}={found} at {path}'
        await asyncio.sleep(0.05)


def load_server(**settings: typing.Any) -> typing.AsyncContextManager[Server]:
    """A server with a load sink on a free loopback port and fast frames."""
    settings.setdefault('load_sinks', (('127.0.0.1', 0),))
    settings.setdefault('default_admin', None)
    settings.setdefault('frame_length', 0.5)
    settings.setdefault('flush_interval', 0.1)
    return running_server(**settings)


async def test_load_sink_answers_n_and_n_full_in_json() -> None:
    """GET /N aggregates the last N frames as JSON; /N/full only complete
    frames, so what is flushed now shows there once its frame is over."""
    async with load_server() as server:
        send_udp(server.udp_addresses[0], b'hits:2|c\nlat:10|ms\nlat:30|ms\ntemp:7|g\nids:a|s')
        await wait_for_stat(server, '/15', 'hits', 2)
        reply = await get(server, '/15')
        assert reply.content_type == 'application/json'
        body = reply.json()
        assert set(body) == {'last_frame_time', 'Stat'}
        assert isinstance(body['last_frame_time'], int)
        found = body['Stat']
        assert found['stats.timers.lat.mean'] == 20
        assert found['stats.timers.lat.upper'] == 30
        assert found['stats.timers.lat.lower'] == 10
        assert found['stats.timers.lat.count'] == 2
        assert found['stats.timers.lat.sum'] == 40
        assert found['stats.gauges.temp'] == 7
        assert found['stats.sets.ids.count'] == 1
        await wait_for_stat(server, '/15/full', 'hits', 2)
        send_udp(server.udp_addresses[0], b'hits:3|c')
        await wait_for_stat(server, '/15', 'hits', 5)


async def test_bad_paths_and_methods() -> None:
    """N outside 1..15 is a 400 in JSON; other paths 404; POST 405."""
    async with load_server() as server:
        for path in ('/0', '/16', '/999999', '/0/full'):
            reply = await get(server, path)
            assert reply.status == 400
            assert reply.json() == {'error': 'N must be from 1 to 15'}
        for path in ('/abc', '/1/partial', '/-1', '/1/full/x'):
            assert (await get(server, path)).status == 404
        assert (await get(server, '/1', 'POST')).status == 405


async def test_values_past_the_largest_double_saturate() -> None:
    """A gauge pushed past the largest double reads the largest double (the
    server's one rule for every output), keeping the JSON valid."""
    async with load_server() as server:
        send_udp(server.udp_addresses[0], b'huge:1e308|g\nhuge:+1e308|g')
        deadline = asyncio.get_running_loop().time() + DEFAULT_TIMEOUT
        while 'stats.gauges.huge' not in (found := await stat(server, '/1')):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        assert found['stats.gauges.huge'] == sys.float_info.max


async def test_metrics_health_and_overview_share_the_port() -> None:
    """/metrics (Prometheus text), /health and / are served on the load
    sink's port."""
    async with load_server() as server:
        send_udp(server.udp_addresses[0], b'page.views:4|c|#env:test')
        await wait_for_stat(server, '/15', 'page.views;env=test', 4)
        metrics = await get(server, '/metrics')
        assert metrics.status == 200
        assert metrics.content_type == 'text/plain; version=0.0.4; charset=utf-8'
        families = {f.name: f for f in text_string_to_metric_families(metrics.body.decode())}
        sample = families['page_views'].samples[0]
        assert sample.labels == {'env': 'test'}
        assert sample.value == 4
        health = await get(server, '/health')
        assert (health.status, health.body) == (200, b'up\n')
        page = await get(server, '/?filter=VIEWS')
        assert page.content_type == 'text/html; charset=utf-8'
        assert b'page.views;env=test' in page.body
        assert b'statsd.packets_received' not in page.body
        assert (await get(server, '/')).body.count(b'class="metric"') > 1


async def test_default_load_sink_when_there_is_no_sink() -> None:
    """Without sinks the load sink is served beside the stdout output."""
    stdout = io.BytesIO()
    async with running_server(
        stdout=stdout, default_load_sink=('127.0.0.1', 0), default_admin=None,
        flush_interval=0.1,
    ) as server:
        assert server.http_addresses
        assert 'load sink http://127.0.0.1:' in server.describe()
        send_udp(server.udp_addresses[0], b'both:1|c')
        await wait_for_stat(server, '/1', 'both', 1)
        await wait_until(lambda: b'stats_counts.both 1 ' in stdout.getvalue())


async def test_load_sinks_alone_write_nothing_to_stdout() -> None:
    """Explicit load sinks are sinks: no stdout output, no default port."""
    stdout = io.BytesIO()
    async with load_server(stdout=stdout, default_load_sink=('127.0.0.1', 1)) as server:
        send_udp(server.udp_addresses[0], b'quiet:1|c')
        await wait_for_stat(server, '/1', 'quiet', 1)
        assert len(server.http_addresses) == 1
    assert stdout.getvalue() == b''
    assert server.sinks == [server.query]  # the load sink alone: no stream sink


async def test_graphite_sinks_alone_serve_no_http() -> None:
    """With only Graphite sinks there is no HTTP endpoint and no frames."""
    async with running_server(
        sinks=(('127.0.0.1', 9),), default_admin=None, shutdown_timeout=0.1,
    ) as server:
        assert server.http_addresses == []
        assert server.frames is None
        server.flush()
        assert 'load sink' not in server.describe()


async def test_taken_default_ports_only_warn(caplog: pytest.LogCaptureFixture) -> None:
    """The default load sink and admin console on taken ports are logged
    and skipped: the server still starts."""
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger='sprockets_statsd.server.listeners'):
            async with running_server(
                default_load_sink=('127.0.0.1', port), default_admin=('127.0.0.1', port),
            ) as server:
                assert server.http_addresses == []
                assert server.admin_addresses == []
                assert server.frames is None
                server.flush()  # without frames to feed
    assert f'cannot serve the load sink on its default address 127.0.0.1:{port}' in caplog.text
    assert f'cannot serve the admin console on its default address 127.0.0.1:{port}' in caplog.text


@pytest.mark.parametrize('field', ['load_sinks', 'admin'])
async def test_taken_explicit_ports_are_errors(field: str) -> None:
    """An explicitly requested port that is taken fails start() naming it,
    and leaves nothing bound."""
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        value: typing.Any = ('127.0.0.1', port)
        server = Server(ServerConfig(
            aggregator=AggregatorConfig(flush_interval=1),
            binds=(('127.0.0.1', 0),),
            default_admin=None,
            load_sinks=(('127.0.0.1', 0),) if field == 'admin' else (value,),
            **({'admin': value} if field == 'admin' else {}),
        ), stdout=io.BytesIO())
        with pytest.raises(OSError, match=f'127.0.0.1:{port}'):
            await asyncio.wait_for(server.start(), DEFAULT_TIMEOUT)
        udp = server.udp_addresses[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(udp)


@pytest.mark.parametrize(('settings', 'field'), [
    ({'frame_length': 0}, 'frame_length'),
    ({'frame_length': float('inf')}, 'frame_length'),
    ({'load_sinks': (('', 70000),)}, 'load_sinks'),
    ({'admin': ('', -1)}, 'admin'),
    ({'default_admin': ('', 65536)}, 'default_admin'),
    ({'default_load_sink': ('', 'x')}, 'default_load_sink'),
])
def test_bad_query_settings_are_refused(settings: dict[str, typing.Any], field: str) -> None:
    """ServerConfig refuses unusable HTTP and console settings by name."""
    with pytest.raises(ConfigurationError, match=field):
        ServerConfig(**settings)


def settings(*argv: str, **environ: str) -> ServerConfig:
    return cli.settings_from(list(argv), environ)[0]


def test_defaults_serve_the_load_sink_and_console_on_loopback() -> None:
    """Out of the box: load sink on 127.0.0.1:8082, console on 127.0.0.1:8126."""
    config = settings()
    assert config == ServerConfig()
    assert config.default_load_sink == ('127.0.0.1', DEFAULT_LOAD_PORT)
    assert config.default_admin == ('127.0.0.1', 8126)
    assert config.frame_length == 60


def test_gstatsd_load_type_makes_every_sink_a_load_sink() -> None:
    """-s HOST:PORT -t load (in any order) serves HTTP there, as gstatsd."""
    assert settings('-s', 'localhost:8082', '-t', 'load').load_sinks == (('localhost', 8082),)
    config = settings('-t', 'load', '-s', '0.0.0.0:8082', '-s', '8083')
    assert config.load_sinks == (('0.0.0.0', 8082), ('localhost', 8083))
    assert config.sinks == ()
    assert settings('-s', '2003', '-t', 'graphite').sinks == (('localhost', 2003),)
    assert settings(STATSD_SINK='9000', STATSD_SINK_TYPE='load').load_sinks == (
        ('localhost', 9000),)


def test_http_adds_load_sinks_beside_graphite_sinks() -> None:
    """--http is the explicit form, and the way to mix both kinds."""
    config = settings('-s', 'carbon:2003', '--http', ':8082', '--http', '[::1]:8083')
    assert config.sinks == (('carbon', 2003),)
    assert config.load_sinks == (('127.0.0.1', 8082), ('::1', 8083))
    config = settings('-s', '8082', '-t', 'load', '--http', '0.0.0.0:9000')
    assert config.load_sinks == (('localhost', 8082), ('0.0.0.0', 9000))
    assert settings(STATSD_HTTP='1,2').load_sinks == (('127.0.0.1', 1), ('127.0.0.1', 2))


def test_off_switches_the_defaults_off() -> None:
    """--http off drops the default load sink; --admin off the console;
    --admin PORT moves it (loopback unless a host is given)."""
    assert settings('--http', 'off').default_load_sink is None
    assert settings('--admin', 'OFF').default_admin is None
    assert settings(STATSD_ADMIN='off').default_admin is None
    assert settings('--admin', '9126').admin == ('127.0.0.1', 9126)
    assert settings('--admin', '0.0.0.0:9126').admin == ('0.0.0.0', 9126)
    assert settings('--load-frame-length', '0.5').frame_length == 0.5


@pytest.mark.parametrize(('argv', 'message'), [
    (['-t', 'load', '-t', 'graphite'], '-t/--type: graphite and load both given'),
    (['-t', 'pickle'], "'pickle': the sink types are graphite and load"),
    (['--http', 'off', '--http', '8082'], '--http: "off" cannot be combined'),
    (['--http', 'nowhere'], '--http'),
    (['--admin', '[::1'], '--admin'),
    (['--load-frame-length', '0'], '--load-frame-length'),
])
def test_bad_query_arguments_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Conflicting or bad options exit with status 2 and say why."""
    with pytest.raises(SystemExit) as exc:
        settings(*argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


async def test_process_with_gstatsd_load_sink_arguments() -> None:
    """The real command `-s 127.0.0.1:PORT -t load` answers /1 with what it
    received over UDP."""
    port, = free_ports()
    async with ServerProcess(
        '-b', '127.0.0.1:0', '-s', f'127.0.0.1:{port}', '-t', 'load', '-f', '0.1',
        '--admin', 'off', '--load-frame-length', '5',
    ) as process:
        assert f'load sink http://127.0.0.1:{port}/' in ''.join(process.stderr)
        send_udp(process.address, b'cli.hits:6|c')
        deadline = asyncio.get_running_loop().time() + DEFAULT_TIMEOUT
        while True:
            reply = await asyncio.to_thread(_get, f'http://127.0.0.1:{port}/15', 'GET')
            if reply.json()['Stat'].get('cli.hits') == 6:
                break
            assert asyncio.get_running_loop().time() < deadline, reply
            await asyncio.sleep(0.05)
        status, stdout, stderr = await process.stop()
    assert status == 0, stderr
    assert stdout == b''  # a load sink is a sink: nothing on stdout
    assert not re.search(r'ERROR|Traceback', stderr)


async def test_a_flush_the_load_sink_cannot_take_is_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If merging a flush fails, the error is logged and the sinks and the
    server carry on."""
    stdout = io.BytesIO()
    async with running_server(stdout=stdout, default_load_sink=('127.0.0.1', 0),
                              default_admin=None, flush_interval=60) as server:
        assert server.frames is not None

        def broken(*args: object) -> None:
            raise RuntimeError('no room')

        monkeypatch.setattr(server.frames, 'merged', broken)
        server.flush()
    assert 'the load sink could not take in a flush' in caplog.text
    assert b'statsd.numStats' in stdout.getvalue()


def test_a_flush_submitted_without_an_event_loop_is_merged_at_once() -> None:
    """Outside an event loop (an embedding that flushes by hand) the load
    sink merges the flush before submit() returns."""
    frames = FrameStore(60.0, clock=lambda: 600.0)
    sink = QueryService(frames, StatsdCollector(), ServerStatus(600.0))
    aggregator = Aggregator(AggregatorConfig())
    aggregator.receive(b'hits:2|c')
    sink.submit(aggregator.flush(600.0))
    assert frames.window(1).counters()['hits'] == 2
    assert b'hits_total 2.0' in sink.collector.exposition()


def held_merges(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[FrameStore, QueryService, Aggregator, threading.Event]:
    """A load sink whose merges into its frames wait until the event is set."""
    frames = FrameStore(60.0, clock=lambda: 600.0)
    sink = QueryService(frames, StatsdCollector(), ServerStatus(600.0))
    merging = threading.Event()
    merged = frames.merged

    def slow(*args: typing.Any) -> Frame:
        merging.wait(DEFAULT_TIMEOUT)
        return merged(*args)

    monkeypatch.setattr(frames, 'merged', slow)
    return frames, sink, Aggregator(AggregatorConfig()), merging


async def test_flushes_are_merged_in_order_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Flushes submitted back to back are merged one after the other in a
    worker thread; answers and close() wait for the ones under way."""
    frames, sink, aggregator, merging = held_merges(monkeypatch)
    for value in (1, 2, 3):
        aggregator.receive(b'hits:%d|c' % value)
        sink.submit(aggregator.flush(600.0))
    assert frames.frames() == ()  # nothing taken in on the loop
    await sink.close(0.01)  # gives up waiting after its timeout
    assert frames.frames() == ()
    answer = asyncio.ensure_future(sink.load(1))
    merging.set()
    body = await asyncio.wait_for(answer, DEFAULT_TIMEOUT)
    assert json.loads(body)['Stat']['hits'] == 6
    assert frames.generation == 3
    await asyncio.wait_for(sink.close(DEFAULT_TIMEOUT), DEFAULT_TIMEOUT)


async def test_flushes_beyond_the_merges_waiting_are_left_out_and_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While MAX_WAITING_MERGES flushes wait to be merged into the frames,
    a further one is left out of them, counted and logged (once per ten
    seconds); once the merges caught up, flushes are taken in again."""
    frames, sink, aggregator, merging = held_merges(monkeypatch)
    extra = 3
    for value in range(1, http.MAX_WAITING_MERGES + extra + 1):
        aggregator.receive(b'hits:%d|c' % value)
        sink.submit(aggregator.flush(600.0))
    assert sink.flushes_left_out == extra
    assert caplog.text.count('flushes behind') == 1
    merging.set()
    await asyncio.wait_for(sink.settled(), DEFAULT_TIMEOUT)
    kept = sum(range(1, http.MAX_WAITING_MERGES + 1))
    assert frames.window(1).counters()['hits'] == kept
    aggregator.receive(b'hits:100|c')
    sink.submit(aggregator.flush(600.0))
    await asyncio.wait_for(sink.settled(), DEFAULT_TIMEOUT)
    assert frames.window(1).counters()['hits'] == kept + 100
    assert sink.flushes_left_out == extra
    await asyncio.wait_for(sink.close(DEFAULT_TIMEOUT), DEFAULT_TIMEOUT)


async def test_a_new_frame_sums_the_complete_frames_of_the_windows_asked_for(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When a flush starts a new frame, the sums of the complete frames of
    the windows asked for in the last frame are made in the thread, before
    they are asked for again; if that fails, it is logged and flushes are
    still merged."""
    now = [6_000.0]
    frames = FrameStore(60.0, clock=lambda: now[0])
    sink = QueryService(frames, StatsdCollector(), ServerStatus(600.0))
    aggregator = Aggregator(AggregatorConfig())

    async def flush_in_next_frame() -> None:
        now[0] += 60
        aggregator.receive(b'hits:1|c')
        sink.submit(aggregator.flush(now[0]))
        await asyncio.wait_for(sink.settled(), DEFAULT_TIMEOUT)

    for _ in range(3):
        await flush_in_next_frame()
    await sink.load(15)
    await sink.load(3, full=True)
    await flush_in_next_frame()
    complete = tuple((f.index, f.flushes) for f in frames.frames()[:-1])
    assert frames.sums.get(complete) is not None  # for /15
    assert frames.sums.get(complete[:2]) is not None  # for /3/full
    await sink.load(15)

    def broken(self: Window) -> None:
        raise RuntimeError('no sums')

    monkeypatch.setattr(Window, 'keep_sums', broken)
    await flush_in_next_frame()
    assert 'the load sink could not sum its frames' in caplog.text
    monkeypatch.undo()
    await flush_in_next_frame()
    assert frames.frames()[-1].index == 106
    assert json.loads(await sink.load(1))['Stat']['hits'] == 1


async def test_a_new_frame_keeps_the_default_window_ready_unasked() -> None:
    """From the server's start, at each new frame, the sum of /15's
    complete frames is made (rolled on from the last frame's), asked for
    or not; its names are laid out too once some /N has been asked for
    (here /1), never before; its first answer then adds only the newest
    frame and is the same as load_report's."""
    now = [6_000.0]
    frames = FrameStore(60.0, clock=lambda: now[0])
    sink = QueryService(frames, StatsdCollector(), ServerStatus(600.0))
    aggregator = Aggregator(AggregatorConfig())
    layouts = sink.reports._layouts._kept
    for value in range(1, 7):
        now[0] += 60
        aggregator.receive(b'hits:%d|c\nmore.%d:1|c\nlatency:%d|ms' % (value, value, value))
        sink.submit(aggregator.flush(now[0]))
        await asyncio.wait_for(sink.settled(), DEFAULT_TIMEOUT)
        complete = tuple((f.index, f.flushes) for f in frames.frames()[:-1])
        if value <= 3:
            assert not layouts.items()  # not queried yet: no names laid out
        if value == 3:
            await sink.load(1)
        if len(complete) >= 2:
            assert frames.sums.get(complete) is not None
    window = frames.window(15)
    keys, _ = window.counter_totals()
    names = (list(window.other_stat()), keys)
    kept = layouts.get(names)  # laid out already, not by get()
    assert kept is not None
    body = await sink.load(15)
    assert json.loads(body) == http.load_report(frames, 15)
    assert layouts.get(names) is kept
    await asyncio.wait_for(sink.close(DEFAULT_TIMEOUT), DEFAULT_TIMEOUT)


def test_bind_tcp_shares_one_free_port_across_families(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name with an IPv4 and an IPv6 address and port 0: both addresses
    on one free port, the IPv6 socket IPv6 only."""
    if not socket.has_ipv6:  # pragma: no cover - IPv6 is there on CI
        pytest.skip('no IPv6')
    real = socket.getaddrinfo

    def both(*args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        return [*real('127.0.0.1', args[1], type=socket.SOCK_STREAM),
                *real('::1', args[1], type=socket.SOCK_STREAM)]

    monkeypatch.setattr(socket, 'getaddrinfo', both)
    sockets = binding.bind_tcp('loopbacks.example', 0)
    try:
        assert [sock.family for sock in sockets] == [socket.AF_INET, socket.AF_INET6]
        assert len({sock.getsockname()[1] for sock in sockets}) == 1
        assert sockets[1].getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        for sock in sockets:
            sock.close()


def test_bind_tcp_binds_each_resolved_address_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A resolver that lists an address twice does not make bind fail, and
    a failure after the first address closes the first again."""
    real = socket.getaddrinfo

    def doubled(*args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        found = real('127.0.0.1', args[1], type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        return found + found

    monkeypatch.setattr(socket, 'getaddrinfo', doubled)
    sockets = binding.bind_tcp('twice.example', 0)
    port = sockets[0].getsockname()[1]
    assert len(sockets) == 1
    for sock in sockets:
        sock.close()

    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        blocked = taken.getsockname()[1]

        def then_taken(*args: typing.Any, **kwargs: typing.Any) -> typing.Any:
            free = real('127.0.0.1', port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            used = real('127.0.0.1', blocked, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            return free + used

        monkeypatch.setattr(socket, 'getaddrinfo', then_taken)
        with pytest.raises(OSError, match='in use'):
            binding.bind_tcp('partly.example', port)
    monkeypatch.undo()
    again = binding.bind_tcp('127.0.0.1', port)  # the first was released
    for sock in again:
        sock.close()


async def test_metrics_are_rendered_once_per_flush() -> None:
    """Scrapes between two flushes share one rendering; a flush makes the
    next scrape render again, with the new totals."""
    async with load_server(flush_interval=3600) as server:
        assert server.query is not None
        send_udp(server.udp_addresses[0], b'scraped:2|c')
        await wait_until(lambda: server.aggregator.current_counters().get('scraped') == 2)
        server.flush()
        first = await server.query.exposition()
        assert b'scraped_total 2.0' in first
        assert await server.query.exposition() is first
        assert (await get(server, '/metrics')).body == first
        send_udp(server.udp_addresses[0], b'scraped:3|c')
        await wait_until(lambda: server.aggregator.current_counters().get('scraped') == 3)
        server.flush()
        assert b'scraped_total 5.0' in await server.query.exposition()


async def test_concurrent_scrapes_share_one_rendering() -> None:
    """Scrapes that arrive while /metrics is being rendered wait for that
    one rendering instead of starting their own; the body is complete."""
    async with load_server(flush_interval=3600) as server:
        assert server.query is not None
        send_udp(server.udp_addresses[0],
                 b'\n'.join(f'shared.n{i}:{i}|c'.encode() for i in range(2000)))
        await wait_until(lambda: len(server.aggregator.current_counters()) >= 2003)
        server.flush()
        bodies = await asyncio.wait_for(
            asyncio.gather(*(server.query.exposition() for _ in range(3))), DEFAULT_TIMEOUT
        )
        assert bodies[0] is bodies[1] is bodies[2]
        scraped = await asyncio.wait_for(
            asyncio.gather(*(get(server, '/metrics') for _ in range(3))), DEFAULT_TIMEOUT
        )
        for response in scraped:
            assert response.body == bodies[0]
            assert b'shared_n1999_total 1999.0' in response.body


@pytest.mark.parametrize(('request_head', 'status'), [
    (b'GET /?filter=' + b'x' * 20_000 + b' HTTP/1.1\r\nHost: x\r\n\r\n', b'414'),
    (b'GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ' + b'y' * 20_000 + b'\r\n\r\n', b'431'),
])
async def test_oversized_requests_get_a_status_line(request_head: bytes, status: bytes) -> None:
    """A query string or headers beyond the 16 KiB bound are answered with
    414 or 431, not a connection closed without a word."""
    async with load_server() as server:
        host, port = server.http_addresses[0][:2]
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), DEFAULT_TIMEOUT)
        try:
            writer.write(request_head)
            line = await asyncio.wait_for(reader.readline(), DEFAULT_TIMEOUT)
        finally:
            writer.close()
        assert line.split(b' ')[:2] == [b'HTTP/1.1', status]


async def test_concurrent_load_queries_share_one_report() -> None:
    """Requests for /N between two flushes share one report computed in a
    thread; a flush makes the next request compute it again."""
    async with load_server(flush_interval=3600) as server:
        assert server.query is not None
        send_udp(server.udp_addresses[0], b'\n'.join(b'n.%d:1|c' % i for i in range(500)))
        await wait_until(lambda: len(server.aggregator.current_counters()) >= 503)
        server.flush()
        bodies = await asyncio.wait_for(
            asyncio.gather(*(server.query.load(15) for _ in range(3))), DEFAULT_TIMEOUT)
        assert bodies[0] is bodies[1] is bodies[2]
        assert json.loads(bodies[0])['Stat']['n.499'] == 1
        response = await get(server, '/15')
        assert response.body == bodies[0]
        assert response.content_type == 'application/json'
        server.flush()
        again = await asyncio.wait_for(server.query.load(15), DEFAULT_TIMEOUT)
        assert again is not bodies[0]
        assert json.loads(again)['Stat']['n.499'] == 1
        with pytest.raises(ValueError, match='count must be from 1 to 15'):
            await server.query.load(16)
