"""The admin console: its commands in memory, then over TCP beside a real server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import urllib.request

import pytest

from sprockets_statsd.server._inspect import inspect_object
from sprockets_statsd.server.admin import (
    HELP,
    MAX_LINE_LENGTH,
    AdminServer,
    Console,
    ConsoleSession,
    config_lines,
    looks_like_http,
)
from sprockets_statsd.server.aggregator import Aggregator
from sprockets_statsd.server.app import ServerConfig
from sprockets_statsd.server.config import AggregatorConfig
from sprockets_statsd.server.graphite import GraphiteStats
from sprockets_statsd.server.status import ServerStatus
from tests.server.helpers import DEFAULT_TIMEOUT, running_server, send_udp, wait_until

START = 1_700_000_000


class Clock:
    def __init__(self) -> None:
        self.now = float(START)

    def __call__(self) -> float:
        return self.now


def make_console(
    backends: list[tuple[str, GraphiteStats]] | None = None,
) -> tuple[Console, Aggregator, Clock]:
    clock = Clock()
    aggregator = Aggregator(AggregatorConfig())
    console = Console(
        aggregator,
        ServerStatus(START),
        config=ServerConfig(),
        backends=lambda: backends or [],
        clock=clock,
    )
    return console, aggregator, clock


def run(console: Console, line: str) -> str:
    reply, close = console.execute(line)
    assert not close
    return reply


def test_help_lists_every_command() -> None:
    """help names every command, sets and delsets included."""
    console, _, _ = make_console()
    assert run(console, 'help') == HELP
    for command in ('stats', 'counters', 'timers', 'gauges', 'sets', 'delcounters',
                    'deltimers', 'delgauges', 'delsets', 'health', 'config', 'quit'):
        assert command in HELP


def test_unknown_and_empty_input_is_an_error() -> None:
    """Anything but a command answers ERROR, as the reference does."""
    console, _, _ = make_console()
    for line in ('bogus', '', 'HELP', 'statz', 'delsets-now'):
        assert run(console, line) == 'ERROR\n'


def test_quit_closes_without_a_reply() -> None:
    """quit answers nothing and asks for the connection to close."""
    console, _, _ = make_console()
    assert console.execute('quit') == ('', True)


def test_health_reports_and_sets_the_status() -> None:
    """health answers the status; health up/down (any case) sets it; other
    words leave it alone."""
    console, _, _ = make_console()
    assert run(console, 'health') == 'health: up\n'
    assert run(console, 'health up') == 'health: up\n'
    assert run(console, 'health DOWN') == 'health: down\n'
    assert not console.status.healthy
    assert run(console, 'health sideways') == 'health: down\n'
    assert run(console, 'health up') == 'health: up\n'
    assert console.status.healthy


def test_stats_reports_uptime_messages_and_each_backend() -> None:
    """stats: uptime, seconds since the last message, bad lines of every
    flush and of the interval in progress, then each backend, then END."""
    stats = GraphiteStats(last_flush=START - 5, last_exception=START - 60,
                          flush_time=1.5, flush_length=1234)
    console, aggregator, clock = make_console([('graphite', stats)])
    aggregator.receive(b'good:1|c\nbad line')
    console.status.flushed(aggregator.flush(START), START)
    aggregator.receive(b'worse')
    clock.now = START + 30
    assert run(console, 'stats') == (
        'uptime: 30\n'
        'messages.last_msg_seen: 0\n'
        'messages.bad_lines_seen: 2\n'
        'graphite.last_flush: 35\n'
        'graphite.last_exception: 90\n'
        'graphite.flush_time: 1.5\n'
        'graphite.flush_length: 1234\n'
        'END\n\n'
    )
    aggregator.flush(START + 30)
    clock.now = START + 42
    assert 'messages.last_msg_seen: 12\n' in run(console, 'stats')


def test_dumps_show_the_interval_in_progress() -> None:
    """counters, timers, gauges and sets dump the live aggregator like
    Node's util.inspect, then END."""
    console, aggregator, _ = make_console()
    aggregator.receive(b'hits:2|c\nlat:5|ms\nlat:1|ms\ntemp:-1.5|g\nusers:bob|s\nusers:ann|s')
    assert run(console, 'counters') == (
        '{\n'
        "  'statsd.bad_lines_seen': 0,\n"
        "  'statsd.packets_received': 1,\n"
        "  'statsd.metrics_received': 6,\n"
        '  hits: 2\n'
        '}\nEND\n\n'
    )
    assert run(console, 'timers') == '{ lat: [ 5, 1 ] }\nEND\n\n'
    assert run(console, 'gauges') == '{ temp: -1.5 }\nEND\n\n'
    assert run(console, 'sets') == "{ users: Set(2) { 'ann', 'bob' } }\nEND\n\n"


@pytest.mark.parametrize(('command', 'kind', 'packet'), [
    ('delcounters', 'counters', b'api.a:1|c\napi.b.c:1|c\napix:1|c\nother:1|c'),
    ('deltimers', 'timers', b'api.a:1|ms\napi.b.c:1|ms\napix:1|ms\nother:1|ms'),
    ('delgauges', 'gauges', b'api.a:1|g\napi.b.c:1|g\napix:1|g\nother:1|g'),
    ('delsets', 'sets', b'api.a:1|s\napi.b.c:1|s\napix:1|s\nother:1|s'),
])
def test_delete_by_exact_name_or_prefix(command: str, kind: str, packet: bytes) -> None:
    """del* takes exact names and prefix.* (every depth); each deletion is
    reported, a miss says not found, END closes the reply."""
    console, aggregator, _ = make_console()
    aggregator.receive(packet)
    reply = run(console, f'{command} api.* other nothing')
    assert reply == (
        'deleted: api.a\ndeleted: api.b.c\ndeleted: other\n'
        'metric nothing not found\nEND\n\n'
    )
    current = getattr(aggregator, f'current_{kind}')()
    assert set(current) - {k for k in current if k.startswith('statsd.')} == {'apix'}
    assert run(console, command) == 'END\n\n'


def test_deleted_timers_and_gauges_leave_no_trace() -> None:
    """A deleted timer's count and a deleted gauge's TTL go too, so the
    next flush does not resurrect them."""
    console, aggregator, _ = make_console()
    aggregator.receive(b't:1|ms\ng:1|g')
    run(console, 'deltimers t')
    run(console, 'delgauges g')
    snapshot = aggregator.flush(START)
    assert 't' not in snapshot.timer_data
    assert 'g' not in snapshot.gauges


def test_internal_counters_are_zeroed_not_deleted() -> None:
    """Deleting statsd.* counters zeroes them: the server keeps counting."""
    console, aggregator, _ = make_console()
    aggregator.receive(b'x:1|c')
    assert 'deleted: statsd.packets_received' in run(console, 'delcounters statsd.*')
    aggregator.receive(b'x:1|c')
    counters = aggregator.current_counters()
    assert counters['statsd.packets_received'] == 1
    assert counters['x'] == 2


def test_config_lists_every_setting_like_the_reference() -> None:
    """config: a blank line, then name: value, nested as name > sub: value."""
    console, _, _ = make_console()
    reply = run(console, 'config')
    assert reply.startswith('\n')
    lines = reply.splitlines()[1:]
    assert 'aggregator > flush_interval: 10' in lines
    assert 'aggregator > percent_thresholds: 90' in lines
    assert 'aggregator > legacy_namespace: true' in lines
    assert 'aggregator > delete_counters: null' in lines
    assert 'binds > 0: :8125' in lines
    assert 'default_admin: 127.0.0.1:8126' in lines
    assert 'sinks: ' in lines
    assert len(lines) == len(dataclasses.fields(ServerConfig)) - 1 + len(
        dataclasses.fields(AggregatorConfig)
    )


def test_config_lines_write_histograms_and_lists() -> None:
    """Histograms as metric=bins, lists joined by commas."""
    config = ServerConfig(aggregator=AggregatorConfig(
        histograms=(('api.', (10, 100, float('inf'))),), percent_thresholds=(90, 99.5),
    ), sinks=(('a', 2003), ('b', 2004)))
    lines = config_lines(config)
    assert 'aggregator > histograms: api.=10,100,Infinity' in lines
    assert 'aggregator > percent_thresholds: 90,99.5' in lines
    assert 'sinks > 1: b:2004' in lines


def test_inspect_breaks_long_objects_and_cuts_long_arrays() -> None:
    """Like util.inspect: one line up to 80 columns, keys quoted when not
    identifiers, arrays beyond 100 items cut with a count."""
    assert inspect_object({}) == '{}'
    assert inspect_object({'a': []}) == '{ a: [] }'
    assert inspect_object({"it's": 1}) == "{ 'it\\'s': 1 }"
    assert inspect_object({'s': {'\n'}}) == "{ s: Set(1) { '\\n' } }"
    long = inspect_object({'lat': [float(i) for i in range(150)]})
    assert long.startswith('{\n  lat: [\n    0, 1, 2,')
    assert long.endswith('99, ... 50 more items\n  ]\n}')
    assert all(len(line) <= 80 for line in long.splitlines())
    one = inspect_object({'s': {f'm{i}' for i in range(101)}})
    assert '... 1 more item\n' in one


def test_session_frames_lines_and_bounds_them() -> None:
    """Lines may arrive in pieces or several at once; \\r\\n works; a line
    over the bound answers ERROR once and the session carries on."""
    console, _, _ = make_console()
    session = ConsoleSession(console, max_line_length=20)
    assert session.feed(b'hea') == b''
    assert session.feed(b'lth\r\nhelp\n') == b'health: up\n' + HELP.encode()
    assert session.feed(b'x' * 15) == b''
    assert session.feed(b'x' * 10) == b'ERROR\n'
    assert session.feed(b'y' * 100) == b''
    assert session.feed(b'yyy\nhealth\n') == b'health: up\n'
    assert session.feed(b'z' * 30 + b'\nhealth\n') == b'ERROR\nhealth: up\n'
    assert session.feed(b'quit\nhealth\n') == b''
    assert session.closed
    assert session.feed(b'health\n') == b''
    assert session.end() == b''


def test_session_runs_a_last_line_without_newline_at_the_end() -> None:
    """A client that closes after a command without newline gets its reply."""
    console, _, _ = make_console()
    session = ConsoleSession(console)
    assert session.feed(b'health') == b''
    assert session.end() == b'health: up\n'
    assert ConsoleSession(console).end() == b''


async def talk(port: int, data: bytes) -> bytes:
    """Send `data` to the console, read until the server closes."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection('127.0.0.1', port), DEFAULT_TIMEOUT
    )
    writer.write(data)
    reply = await asyncio.wait_for(reader.read(), DEFAULT_TIMEOUT)
    writer.close()
    return reply


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=DEFAULT_TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_console_over_tcp_beside_a_running_server() -> None:
    """Every command over a real connection to a running server; health
    down makes /health fail for load balancers, health up restores it."""
    async with running_server(
        admin=('127.0.0.1', 0), load_sinks=(('127.0.0.1', 0),), flush_interval=60,
    ) as server:
        port = server.admin_addresses[0][1]
        http = server.http_addresses[0][1]
        send_udp(server.udp_addresses[0], b'app.hits:3|c\napp.lat:9|ms\napp.temp:4|g\napp.ids:a|s')
        await wait_until(lambda: server.aggregator.current_counters().get('app.hits') == 3)
        reply = (await talk(port, b'counters\ntimers\ngauges\nsets\nstats\nconfig\n'
                                  b'help\nnonsense\nquit\nhealth\n')).decode()
        assert 'app.hits' in reply
        assert "'app.lat': [ 9 ]" in reply
        assert "'app.temp': 4" in reply
        assert "'app.ids': Set(1) { 'a' }" in reply
        assert 'uptime: ' in reply
        assert 'graphite.flush_length: ' not in reply  # no Graphite sink here
        assert 'frame_length: 60' in reply
        assert reply.count('END\n\n') == 5
        assert 'ERROR\n' in reply
        assert not reply.endswith('health: up\n')  # nothing after quit
        deleted = (await talk(port, b'delcounters app.*\ndeltimers app.lat\n'
                                    b'delgauges app.temp\ndelsets app.ids\nquit\n')).decode()
        assert deleted.count('deleted: ') == 4

        assert await asyncio.to_thread(get, f'http://127.0.0.1:{http}/health') == (200, b'up\n')
        assert await talk(port, b'health down\nquit\n') == b'health: down\n'
        assert await asyncio.to_thread(get, f'http://127.0.0.1:{http}/health') == (503, b'down\n')
        assert await talk(port, b'health up\nquit\n') == b'health: up\n'
        assert await asyncio.to_thread(get, f'http://127.0.0.1:{http}/health') == (200, b'up\n')
        status, body = await asyncio.to_thread(get, f'http://127.0.0.1:{http}/1')
        assert status == 200
        assert json.loads(body)['Stat'] == {}  # nothing flushed yet


async def test_stats_names_each_of_several_graphite_sinks() -> None:
    """With several sinks, each reports under its own name."""
    async with running_server(
        admin=('127.0.0.1', 0), sinks=(('127.0.0.1', 9), ('127.0.0.1', 19)),
        reconnect_max_delay=60, shutdown_timeout=0.1,
    ) as server:
        reply = (await talk(server.admin_addresses[0][1], b'stats\nquit\n')).decode()
    assert 'graphite[127.0.0.1:9].flush_length: 0\n' in reply
    assert 'graphite[127.0.0.1:19].last_flush: ' in reply


async def test_one_bad_client_does_not_affect_others() -> None:
    """A client that floods one endless line and one that never reads its
    replies are each their own problem: another client is served at once."""
    async with running_server(admin=('127.0.0.1', 0), default_load_sink=None) as server:
        port = server.admin_addresses[0][1]
        _, flood = await asyncio.open_connection('127.0.0.1', port)
        flood.write(b'x' * (MAX_LINE_LENGTH * 4))
        send_udp(server.udp_addresses[0], b'\n'.join(b'k%d:1|c' % i for i in range(2000)))
        await wait_until(lambda: len(server.aggregator.current_counters()) > 2000)
        _, deaf = await asyncio.open_connection('127.0.0.1', port)
        deaf.write(b'counters\n' * 200)  # megabytes of replies, never read
        await asyncio.wait_for(deaf.drain(), DEFAULT_TIMEOUT)
        assert await talk(port, b'health\nquit\n') == b'health: up\n'
        flood.write(b'\nhealth\n')
        await asyncio.wait_for(flood.drain(), DEFAULT_TIMEOUT)
        flood.close()
        deaf.close()


async def test_connections_beyond_the_limit_are_turned_away() -> None:
    """Past max_connections a client is told so and closed; the others stay."""
    console, _, _ = make_console()
    admin = AdminServer(console, max_connections=1)
    admin.bind('127.0.0.1', 0)
    await admin.start()
    try:
        port = admin.addresses[0][1]
        reader, writer = await asyncio.open_connection('127.0.0.1', port)
        writer.write(b'health\n')
        assert await asyncio.wait_for(reader.readline(), DEFAULT_TIMEOUT) == b'health: up\n'
        assert await talk(port, b'health\n') == b'ERROR too many connections\n'
        writer.write(b'quit\n')
        assert await asyncio.wait_for(reader.read(), DEFAULT_TIMEOUT) == b''
        writer.close()
    finally:
        await asyncio.wait_for(admin.stop(), DEFAULT_TIMEOUT)


async def test_idle_clients_are_closed_and_stop_closes_the_rest() -> None:
    """A silent client is dropped after the idle timeout; stop() closes
    connections still open."""
    console, _, _ = make_console()
    admin = AdminServer(console, idle_timeout=0.2)
    admin.bind('127.0.0.1', 0)
    await admin.start()
    port = admin.addresses[0][1]
    idle_reader, idle = await asyncio.open_connection('127.0.0.1', port)
    assert await asyncio.wait_for(idle_reader.read(), DEFAULT_TIMEOUT) == b''
    idle.close()
    admin._idle_timeout = 60
    reader, writer = await asyncio.open_connection('127.0.0.1', port)
    writer.write(b'health\n')
    assert await asyncio.wait_for(reader.readline(), DEFAULT_TIMEOUT) == b'health: up\n'
    await asyncio.wait_for(admin.stop(), DEFAULT_TIMEOUT)
    assert await asyncio.wait_for(reader.read(), DEFAULT_TIMEOUT) == b''
    writer.close()


async def test_stop_before_start_releases_the_sockets() -> None:
    """A console that was bound but never started closes its sockets."""
    console, _, _ = make_console()
    admin = AdminServer(console)
    admin.bind('127.0.0.1', 0)
    address = admin.addresses[0]
    await admin.stop()
    admin2 = AdminServer(console)
    admin2.bind(*address)
    await admin2.stop()


async def test_stats_of_a_single_sink_and_a_command_without_newline() -> None:
    """One sink reports as graphite, like the reference; a client that ends
    its connection after a command without newline still gets the reply."""
    async with running_server(admin=('127.0.0.1', 0), default_load_sink=None) as server:
        reader, writer = await asyncio.open_connection(
            '127.0.0.1', server.admin_addresses[0][1]
        )
        writer.write(b'stats')
        writer.write_eof()
        reply = (await asyncio.wait_for(reader.read(), DEFAULT_TIMEOUT)).decode()
        writer.close()
    assert 'graphite.flush_length: ' in reply
    assert reply.endswith('END\n\n')


async def test_a_failing_command_closes_only_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unexpected error is logged and ends that connection alone."""
    def broken() -> list[tuple[str, GraphiteStats]]:
        raise RuntimeError('backend status unavailable')

    console = Console(Aggregator(AggregatorConfig()), ServerStatus(START), backends=broken)
    admin = AdminServer(console)
    admin.bind('127.0.0.1', 0)
    await admin.start()
    try:
        port = admin.addresses[0][1]
        other_reader, other = await asyncio.open_connection('127.0.0.1', port)
        assert await talk(port, b'stats\n') == b''
        other.write(b'health\n')
        assert await asyncio.wait_for(other_reader.readline(), DEFAULT_TIMEOUT) == b'health: up\n'
        other.close()
    finally:
        await asyncio.wait_for(admin.stop(), DEFAULT_TIMEOUT)
    assert 'admin console: a connection failed' in caplog.text


@pytest.mark.parametrize('line', [
    'POST / HTTP/1.1', 'GET /index.html HTTP/1.0', 'post /x', 'PUT * HTTP/1.1',
    'OPTIONS http://127.0.0.1:8126/ HTTP/1.1', 'Host: 127.0.0.1:8126',
    'Content-Type: text/plain', '  User-Agent: x',
])
def test_http_request_lines_are_recognised(line: str) -> None:
    """Request lines (a method and a path or URL) and header lines are HTTP."""
    assert looks_like_http(line)


@pytest.mark.parametrize('line', [
    'stats', 'counters', 'health down', 'delcounters a.* b:c', 'help', 'quit',
    'config', 'get', 'post', 'deltimers http://x', '',
])
def test_console_commands_are_not_http(line: str) -> None:
    """No console command, with any arguments, is taken for HTTP."""
    assert not looks_like_http(line)


async def test_an_http_post_is_closed_without_executing_anything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A browser's cross-protocol POST whose body holds console commands is
    answered with nothing and closed: health stays up, no metric deleted,
    and the refusal is logged."""
    async with running_server(
        admin=('127.0.0.1', 0), load_sinks=(('127.0.0.1', 0),), flush_interval=60,
    ) as server:
        port = server.admin_addresses[0][1]
        send_udp(server.udp_addresses[0], b'victim.hits:3|c')
        await wait_until(lambda: server.aggregator.current_counters().get('victim.hits') == 3)
        body = b'health down\ndelcounters victim.*\n'
        request = (b'POST / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n'
                   b'Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s'
                   % (port, len(body), body))
        assert await talk(port, request) == b''
        # Headers alone (a request whose first line went elsewhere) too.
        assert await talk(port, b'Host: x\r\n\r\nhealth down\n') == b''
        assert server.status.health == 'up'
        assert server.aggregator.current_counters().get('victim.hits') == 3
        assert 'sent an HTTP request' in caplog.text
        assert await talk(port, b'health\nquit\n') == b'health: up\n'
