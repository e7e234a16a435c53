"""Tier 2: the Tornado mixins in real applications, sending to a loopback statsd server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import tempfile
import textwrap
import typing

import pytest
import sprockets.http.app
import sprockets.http.testing
from tornado import httpclient, httpserver, testing, web

import sprockets_statsd.tornado
from sprockets_statsd import AbstractConnector, ConfigurationError, Connector
from tests.helpers import StatsdServer, UnixDatagramReceiver

TIMEOUT = 10.0
ENVIRONMENT = ('STATSD_HOST', 'STATSD_PORT', 'STATSD_PREFIX', 'STATSD_PROTOCOL',
               'STATSD_ENABLED')


class TimedHandler(sprockets_statsd.tornado.RequestHandler, web.RequestHandler):
    """Uses every metric method once, then answers 204."""

    async def get(self) -> None:
        with self.execution_timer('db', 'query'):
            await asyncio.sleep(0.02)
        self.increase_counter('hits', 'get')
        self.increase_counter('hits', 'get', amount=-3)
        self.record_timing(0.25, 'fixed', 7)
        self.set_status(204)

    def post(self) -> None:
        raise web.HTTPError(418)


class App(sprockets_statsd.tornado.Application, web.Application):
    """A plain Tornado application with the statsd mixin."""

    def __init__(self, **settings: typing.Any) -> None:
        super().__init__([web.url('/', TimedHandler)], **settings)


class HttpApp(sprockets_statsd.tornado.Application, sprockets.http.app.Application):
    """A sprockets.http application with the statsd mixin."""

    def __init__(self, **settings: typing.Any) -> None:
        super().__init__([web.url('/', TimedHandler)], **settings)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the STATSD_* variables of whoever runs the tests out of them."""
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> typing.AsyncIterator[str]:
    """Serve `app` on a free loopback port and yield its URL."""
    sock, port = testing.bind_unused_port()
    server = httpserver.HTTPServer(app)
    server.add_sockets([sock])
    try:
        yield f'http://127.0.0.1:{port}/'
    finally:
        server.stop()
        await asyncio.wait_for(server.close_all_connections(), TIMEOUT)


async def fetch(url: str, method: str = 'GET') -> int:
    """Make one request and return the status code."""
    client = httpclient.AsyncHTTPClient(force_instance=True)
    try:
        response = await asyncio.wait_for(
            client.fetch(url, method=method, raise_error=False,
                         body=b'' if method == 'POST' else None),
            TIMEOUT)
    finally:
        client.close()
    return response.code


def lines_starting(lines: list[bytes], head: bytes) -> list[bytes]:
    return [line for line in lines if line.startswith(head)]


def milliseconds(line: bytes) -> float:
    """The value of a timer line, checking its form on the way."""
    _, _, rest = line.partition(b':')
    value, sep, code = rest.partition(b'|')
    assert (sep, code) == (b'|', b'ms'), line
    return float(value)


async def run_app(app: sprockets_statsd.tornado.Application, *requests: str) -> int:
    """Start statsd, make the requests, stop statsd; return the last status."""
    await asyncio.wait_for(app.start_statsd(), TIMEOUT)
    status = 0
    async with serving(app) as url:
        for method in requests:
            status = await fetch(url, method)
    await asyncio.wait_for(app.stop_statsd(), TIMEOUT)
    return status


@pytest.mark.parametrize('protocol', ['tcp', 'udp'])
async def test_request_metrics_on_the_wire(protocol: str) -> None:
    """A request records its duration as timers.<Handler>.<METHOD>.<status>, plus its own metrics."""
    async with StatsdServer(protocol) as server:
        app = App(statsd={'host': server.host, 'port': server.port, 'protocol': protocol,
                          'prefix': 'applications.my-service'})
        assert await run_app(app, 'GET', 'POST') == 418
        lines = await server.wait_for_lines(6)

    head = b'applications.my-service.'
    [request] = lines_starting(lines, head + b'timers.TimedHandler.GET.204:')
    [query] = lines_starting(lines, head + b'timers.db.query:')
    [failed] = lines_starting(lines, head + b'timers.TimedHandler.POST.418:')
    # The handler slept 20 ms inside both: the values are milliseconds.
    assert 15 <= milliseconds(query) <= milliseconds(request) < TIMEOUT * 1000
    assert 0 < milliseconds(failed) < TIMEOUT * 1000
    assert head + b'counters.hits.get:1|c' in lines
    assert head + b'counters.hits.get:-3|c' in lines
    assert head + b'timers.fixed.7:250.0|ms' in lines
    assert app.statsd_connector is None


async def test_statsd_connector_is_set_between_start_and_stop() -> None:
    """start_statsd() creates a running Connector; stop_statsd() flushes and drops it."""
    async with StatsdServer('udp') as server:
        app = App(statsd={'host': server.host, 'port': server.port, 'protocol': 'udp',
                          'prefix': 'app'})
        assert app.statsd_connector is None
        await asyncio.wait_for(app.start_statsd(), TIMEOUT)
        connector = app.statsd_connector
        assert isinstance(connector, Connector)
        assert connector.processor.running.is_set()
        await asyncio.wait_for(app.start_statsd(object(), object()), TIMEOUT)
        assert app.statsd_connector is connector
        connector.incr('queued')
        await asyncio.wait_for(app.stop_statsd(object()), TIMEOUT)
        assert app.statsd_connector is None
        assert connector.processor.stopped.is_set()
        await asyncio.wait_for(app.stop_statsd(), TIMEOUT)
        assert await server.wait_for_lines(1) == [b'app.counters.queued:1|c']


async def test_concurrent_stops_flush_everything_once() -> None:
    """Two overlapping stop_statsd() calls both wait for one complete flush."""
    async with StatsdServer('tcp') as server:
        app = App(statsd={'host': server.host, 'port': server.port, 'prefix': 'app'})
        await asyncio.wait_for(app.start_statsd(), TIMEOUT)
        connector = app.statsd_connector
        assert isinstance(connector, Connector)
        for n in range(500):
            connector.incr('n', n)
        first = asyncio.ensure_future(app.stop_statsd())
        await asyncio.wait_for(app.stop_statsd(), TIMEOUT)
        assert app.statsd_connector is None
        await asyncio.wait_for(first, TIMEOUT)
        lines = await server.wait_for_lines(500)
    assert lines == [f'app.counters.n:{n}|c'.encode() for n in range(500)]
    assert connector.dropped == 0


async def test_start_during_stop_waits_and_starts_a_new_connector() -> None:
    """start_statsd() while a stop is flushing waits for it, then starts afresh."""
    async with StatsdServer('udp') as server:
        app = App(statsd={'host': server.host, 'port': server.port, 'protocol': 'udp',
                          'prefix': 'app'})
        await asyncio.wait_for(app.start_statsd(), TIMEOUT)
        old = app.statsd_connector
        # gather runs the stop first, up to its wait for the flush.
        await asyncio.wait_for(asyncio.gather(app.stop_statsd(), app.start_statsd()), TIMEOUT)
        assert isinstance(app.statsd_connector, Connector)
        assert app.statsd_connector is not old
        app.statsd_connector.incr('again')
        await asyncio.wait_for(app.stop_statsd(), TIMEOUT)
        assert await server.wait_for_lines(1) == [b'app.counters.again:1|c']


async def test_unix_socket_from_settings_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """protocol unix takes a socket path with or without unix:; a path host implies unix."""
    with tempfile.TemporaryDirectory(dir='/tmp') as directory:
        path = f'{directory}/statsd.sock'
        async with StatsdServer('unix', path=path) as server:
            for statsd in ({'protocol': 'unix', 'host': path},
                           {'protocol': 'unix', 'host': f'unix:{path}'},
                           {'host': path}):
                app = App(statsd={**statsd, 'prefix': 'app'})
                assert app.settings['statsd']['protocol'] == 'unix'
                assert app.settings['statsd']['host'] == f'unix:{path}'
                await run_app(app, 'GET')
            monkeypatch.setenv('STATSD_HOST', f'unix:{path}')
            await run_app(App(statsd={'prefix': 'env'}), 'GET')
            lines = await server.wait_for_lines(4 * 5)
    assert len(lines_starting(lines, b'app.timers.TimedHandler.GET.204:')) == 3
    assert len(lines_starting(lines, b'env.timers.TimedHandler.GET.204:')) == 1


async def test_unix_datagram_socket_from_settings_and_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """host unixgram:/path, or protocol unixgram with a path, sends Unix datagrams."""
    receiver = UnixDatagramReceiver()
    try:
        for statsd in ({'host': f'unixgram:{receiver.path}'},
                       {'protocol': 'unixgram', 'host': receiver.path},
                       {'protocol': 'udp', 'host': f'unixgram:{receiver.path}'}):
            app = App(statsd={**statsd, 'prefix': 'app'})
            assert app.settings['statsd']['protocol'] == 'unixgram'
            assert app.settings['statsd']['host'] == f'unixgram:{receiver.path}'
            await run_app(app, 'GET')
        monkeypatch.setenv('STATSD_HOST', f'unixgram:{receiver.path}')
        await run_app(App(statsd={'prefix': 'env'}), 'GET')
        lines = b'\n'.join(receiver.datagrams(4 * 5)).split(b'\n')
    finally:
        receiver.close()
    assert len(lines_starting(lines, b'app.timers.TimedHandler.GET.204:')) == 3
    assert len(lines_starting(lines, b'env.timers.TimedHandler.GET.204:')) == 1


async def test_everything_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """STATSD_HOST, STATSD_PORT, STATSD_PROTOCOL and STATSD_PREFIX configure the connector."""
    async with StatsdServer('udp') as server:
        monkeypatch.setenv('STATSD_HOST', server.host)
        monkeypatch.setenv('STATSD_PORT', str(server.port))
        monkeypatch.setenv('STATSD_PROTOCOL', 'UDP')
        monkeypatch.setenv('STATSD_PREFIX', 'from.env')
        app = App()
        assert app.settings['statsd'] == {
            'enabled': True, 'host': server.host, 'port': server.port,
            'protocol': 'udp', 'prefix': 'from.env',
        }
        await run_app(app, 'GET')
        lines = await server.wait_for_lines(5)
    assert lines_starting(lines, b'from.env.timers.TimedHandler.GET.204:')


async def test_settings_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each statsd.* setting wins over its STATSD_* variable."""
    async with StatsdServer('udp') as server:
        monkeypatch.setenv('STATSD_HOST', 'statsd.invalid')
        monkeypatch.setenv('STATSD_PORT', '1')
        monkeypatch.setenv('STATSD_PROTOCOL', 'tcp')
        monkeypatch.setenv('STATSD_PREFIX', 'from.env')
        monkeypatch.setenv('STATSD_ENABLED', 'no')
        app = App(statsd={'host': server.host, 'port': str(server.port), 'protocol': 'udp',
                          'prefix': 'from.settings', 'enabled': 'yes'})
        await run_app(app, 'GET')
        lines = await server.wait_for_lines(5)
    assert lines_starting(lines, b'from.settings.timers.TimedHandler.GET.204:')


@pytest.mark.parametrize(('environ', 'settings', 'prefix'), [
    ({}, {'service': 'svc', 'environment': 'production'}, 'applications.svc.production'),
    ({'STATSD_PREFIX': 'env'}, {'service': 'svc', 'environment': 'production'}, 'env'),
    ({'STATSD_PREFIX': ''}, {'service': 'svc', 'environment': 'staging'},
     'applications.svc.staging'),
    ({'STATSD_PREFIX': 'env'}, {'statsd': {'prefix': 'explicit'}}, 'explicit'),
    ({'STATSD_PREFIX': 'env'}, {'statsd': {'prefix': None}}, None),
    ({}, {'statsd': {'prefix': ''}}, None),
])
def test_prefix_rules(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], settings: dict[str, typing.Any],
    prefix: str | None,
) -> None:
    """statsd.prefix, then STATSD_PREFIX, then applications.<service>.<environment>."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert App(**settings).settings['statsd']['prefix'] == prefix


async def test_no_prefix_when_asked_for() -> None:
    """With statsd.prefix None the names start at the type segment."""
    async with StatsdServer('udp') as server:
        app = App(statsd={'host': server.host, 'port': server.port, 'protocol': 'udp',
                          'prefix': None})
        await run_app(app, 'GET')
        lines = await server.wait_for_lines(5)
    assert lines_starting(lines, b'timers.TimedHandler.GET.204:')
    assert b'counters.hits.get:1|c' in lines


def test_missing_prefix_is_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """Without any prefix source the application refuses to be created, and says why."""
    with pytest.raises(ConfigurationError, match=r'statsd\.prefix is not set.*STATSD_PREFIX'):
        App(service='only-a-service')
    assert any('statsd.prefix is not set' in record.getMessage()
               and record.levelno == logging.ERROR for record in caplog.records)


TRUTHY = ['1', '-1', ' 42 ', 'yes', 'YES', 'True', 'true', 't', 'T', 'on', 'On', ' on ']
FALSY = ['0', '', 'no', 'false', 'f', 'off', 'n', 'enabled', '1.0']


@pytest.mark.parametrize(('value', 'enabled'),
                         [(v, True) for v in TRUTHY] + [(v, False) for v in FALSY])
async def test_statsd_enabled_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, enabled: bool
) -> None:
    """STATSD_ENABLED is truthy for a non-zero integer or yes/true/t/on, falsy otherwise."""
    monkeypatch.setenv('STATSD_ENABLED', value)
    app = App(statsd={'host': '127.0.0.1', 'protocol': 'udp', 'prefix': 'app'})
    assert app.settings['statsd']['enabled'] is enabled
    await asyncio.wait_for(app.start_statsd(), TIMEOUT)
    assert isinstance(app.statsd_connector, Connector) is enabled
    assert isinstance(app.statsd_connector, AbstractConnector)
    await asyncio.wait_for(app.stop_statsd(), TIMEOUT)


@pytest.mark.parametrize(('value', 'enabled'), [
    (True, True), (False, False), (1, True), (0, False), ('yes', True), ('off', False),
    (None, True),
])
def test_statsd_enabled_setting(value: object, enabled: bool) -> None:
    """statsd.enabled takes a bool, an int or a string; None means the default (enabled)."""
    app = App(statsd={'host': 'localhost', 'prefix': 'app', 'enabled': value})
    assert app.settings['statsd']['enabled'] is enabled


async def test_disabled_application_serves_without_metrics() -> None:
    """With statsd disabled requests succeed and no connection is ever made."""
    async with StatsdServer('tcp') as server:
        for statsd in ({'prefix': 'app'},  # no host anywhere
                       {'host': server.host, 'port': server.port, 'prefix': 'app',
                        'enabled': False}):
            app = App(statsd=statsd)
            await asyncio.wait_for(app.start_statsd(), TIMEOUT)
            assert type(app.statsd_connector) is AbstractConnector
            async with serving(app) as url:
                assert await fetch(url) == 204
            await asyncio.wait_for(app.stop_statsd(), TIMEOUT)
        assert server.connections == 0
        assert server.lines == []


async def test_handler_without_the_application_mixin() -> None:
    """A handler in a plain Application records into a shared null connector."""
    handlers: list[sprockets_statsd.tornado.RequestHandler] = []

    class Recording(TimedHandler):
        def on_finish(self) -> None:
            handlers.append(self)
            super().on_finish()

    app = web.Application([web.url('/', Recording)])
    async with serving(app) as url:
        assert await fetch(url) == 204
        assert await fetch(url, 'POST') == 418
    assert len(handlers) == 2
    assert type(handlers[0].statsd_connector) is AbstractConnector
    assert handlers[0].statsd_connector is handlers[1].statsd_connector


async def test_handler_before_start_uses_the_null_connector() -> None:
    """Requests served before start_statsd() are answered; their metrics go nowhere."""
    async with StatsdServer('tcp') as server:
        app = App(statsd={'host': server.host, 'port': server.port, 'prefix': 'app'})
        async with serving(app) as url:
            assert await fetch(url) == 204
        assert server.connections == 0


async def test_connector_options_reach_the_processor() -> None:
    """Queue size, datagram size and the timeouts are passed to the Processor."""
    app = App(statsd={'host': '127.0.0.1', 'protocol': 'udp', 'prefix': 'app',
                      'max_queue_size': 7, 'max_udp_size': 1400, 'shutdown_timeout': 2.5,
                      'reconnect_timeout': 0.5, 'wait_timeout': 0.25})
    await asyncio.wait_for(app.start_statsd(), TIMEOUT)
    connector = app.statsd_connector
    assert isinstance(connector, Connector)
    processor = connector.processor
    assert (processor.queue.maxsize, processor.max_udp_size, processor.shutdown_timeout,
            processor.reconnect_sleep, processor.wait_timeout) == (7, 1400, 2.5, 0.5, 0.25)
    assert processor.ip_protocol == socket.IPPROTO_UDP
    await asyncio.wait_for(app.stop_statsd(), TIMEOUT)
    legacy = App(statsd={'host': '127.0.0.1', 'prefix': 'app', 'reconnect_sleep': 3})
    assert legacy.settings['statsd']['reconnect_sleep'] == 3


async def test_constant_tags() -> None:
    """tag_dialect and tags are applied to every metric, handler timings included."""
    async with StatsdServer('udp') as server:
        app = App(statsd={'host': server.host, 'port': server.port, 'protocol': 'udp',
                          'prefix': 'app', 'tag_dialect': 'dogstatsd',
                          'tags': {'env': 'test'}})
        await run_app(app, 'GET')
        lines = await server.wait_for_lines(5)
    assert b'app.counters.hits.get:1|c|#env:test' in lines
    [request] = lines_starting(lines, b'app.timers.TimedHandler.GET.204:')
    assert request.endswith(b'|ms|#env:test')


def test_resolved_settings_do_not_touch_the_callers_dict() -> None:
    """Resolved values go into a new dict in app.settings; the caller's is left alone."""
    given = {'host': 'localhost', 'prefix': 'app'}
    app = App(statsd=given)
    assert given == {'host': 'localhost', 'prefix': 'app'}
    assert app.settings['statsd'] == {'enabled': True, 'host': 'localhost', 'port': 8125,
                                      'protocol': 'tcp', 'prefix': 'app'}


@pytest.mark.parametrize(('environ', 'statsd', 'message'), [
    ({}, {'port': 'abc'}, "statsd.port must be a port number from 1 to 65535, not 'abc'"),
    ({}, {'port': 0}, 'statsd.port must be'),
    ({}, {'port': 65536}, 'statsd.port must be'),
    ({}, {'port': True}, 'statsd.port must be'),
    ({}, {'port': 8125.0}, 'statsd.port must be'),
    ({'STATSD_PORT': 'eighty'}, {}, "STATSD_PORT must be a port number from 1 to 65535, not 'eighty'"),
    ({'STATSD_PORT': '-1'}, {}, 'STATSD_PORT must be'),
    ({'STATSD_PORT': '\u00b2'}, {}, 'STATSD_PORT must be'),
    ({}, {'protocol': 'sctp'}, "statsd.protocol must be \"tcp\", \"udp\" or \"unix\", not 'sctp'"),
    ({}, {'protocol': 17}, 'statsd.protocol must be'),
    ({'STATSD_PROTOCOL': 'http'}, {}, 'STATSD_PROTOCOL must be'),
    ({}, {'enabled': []}, 'statsd.enabled must be a bool, an int or a string'),
    ({}, {'enabled': 1.5}, 'statsd.enabled must be'),
    ({}, {'prefix': 42}, 'statsd.prefix must be a string, or None'),
    ({}, {'host': 8125}, 'statsd.host must be a host name'),
    ({'STATSD_PROTOCOL': 'udp'}, {'host': '/run/statsd.sock'}, 'statsd.host .* needs protocol unix'),
    ({'STATSD_HOST': 'unix:/run/statsd.sock'}, {'protocol': 'udp'}, 'STATSD_HOST .* needs protocol unix'),
    ({}, {'tag_dialect': 'prometheus'}, 'statsd.tag_dialect must be one of dogstatsd'),
    ({}, {'tags': {'env': 'x'}}, 'statsd.tags needs statsd.tag_dialect'),
    ({}, {'tags': ['env'], 'tag_dialect': 'influxdb'}, 'statsd.tags must be a mapping'),
    ({}, {'tags': {'': 'x'}, 'tag_dialect': 'influxdb'}, 'statsd.tags: constant tag keys'),
    ({}, {'max_queue_size': 0}, 'statsd.max_queue_size must be a positive integer, not 0'),
    ({}, {'max_udp_size': 512.5}, 'statsd.max_udp_size must be a positive integer'),
    ({}, {'shutdown_timeout': -1}, 'statsd.shutdown_timeout must be a positive number'),
    ({}, {'wait_timeout': float('nan')}, 'statsd.wait_timeout must be'),
    ({}, {'reconnect_timeout': '1'}, 'statsd.reconnect_timeout must be'),
    ({}, {'reconnect_timeout': True}, 'statsd.reconnect_timeout must be'),
    ({}, {'reconnect_timeout': 1, 'reconnect_sleep': 1}, 'set one'),
    ({}, {'reconect_timeout': 1}, 'statsd.reconect_timeout is not a known setting'),
])
def test_misconfiguration_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], statsd: dict[str, typing.Any],
    message: str,
) -> None:
    """Each unusable setting or variable raises ConfigurationError naming it."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=message):
        App(statsd={'prefix': 'app', **statsd})


def test_statsd_setting_must_be_a_dict() -> None:
    """A statsd setting that is not a mapping is refused; None means empty."""
    with pytest.raises(ConfigurationError, match='the statsd setting must be a dict'):
        App(statsd='localhost')
    with pytest.raises(ConfigurationError, match=r'statsd\.prefix is not set'):
        App(statsd=None)


def test_plain_application_gets_no_hooks() -> None:
    """Without sprockets.http nothing is installed; the methods are called by hand."""
    app = App(statsd={'prefix': 'app'})
    assert not hasattr(app, 'on_start_callbacks')


def test_sprockets_http_hooks_are_installed() -> None:
    """Mixed into sprockets.http's Application, start and stop become its callbacks."""
    app = HttpApp(statsd={'prefix': 'app'})
    assert app.on_start_callbacks == [app.start_statsd]
    assert app.on_shutdown_callbacks == [app.stop_statsd]


class SprocketsHttpLifecycleTests(sprockets.http.testing.SprocketsHttpTestCase):
    """A sprockets.http application started and stopped as its runner does."""

    def get_app(self) -> web.Application:
        self.statsd = StatsdServer('tcp')
        self.io_loop.run_sync(self.statsd.start, timeout=TIMEOUT)
        self.app = HttpApp(service='my-service', environment='test',
                           statsd={'host': self.statsd.host, 'port': self.statsd.port})
        self.app.on_shutdown_callbacks.append(self.record_at_shutdown)
        return self.app

    def record_at_shutdown(self, app: HttpApp) -> None:
        """A later shutdown callback records metrics after the stop has begun."""
        # tearDown stops the application a second time, with statsd stopped.
        if app.statsd_connector is not None:
            for n in range(200):
                app.statsd_connector.incr('shutdown', n)

    def tearDown(self) -> None:
        self.io_loop.run_sync(self.statsd.stop, timeout=TIMEOUT)
        super().tearDown()

    def test_runner_lifecycle_delivers_everything(self) -> None:
        """on_start starts the connector; on_shutdown flushes what was queued, late metrics too."""
        response = self.fetch('/')
        assert response.code == 204
        connector = self.app.statsd_connector
        assert isinstance(connector, Connector)

        self.app.stop(self.io_loop, self.shutdown_limit, self.wait_timeout)
        self.io_loop.start()  # runs until the application has shut down
        assert self.app.statsd_connector is None

        lines = self.io_loop.run_sync(lambda: self.statsd.wait_for_lines(205), timeout=TIMEOUT)
        head = b'applications.my-service.test.'
        assert len(lines_starting(lines, head + b'timers.TimedHandler.GET.204:')) == 1
        assert lines_starting(lines, head + b'counters.shutdown:') == [
            head + f'counters.shutdown:{n}|c'.encode() for n in range(200)
        ]
        assert connector.dropped == 0


async def test_sprockets_http_refuses_to_start_when_misconfigured(tmp_path: typing.Any) -> None:
    """sprockets.http.run exits with the ConfigurationError logged instead of serving."""
    script = tmp_path / 'service.py'
    script.write_text(textwrap.dedent('''
        import sprockets.http
        import sprockets.http.app
        from tornado import web
        import sprockets_statsd.tornado

        class App(sprockets_statsd.tornado.Application, sprockets.http.app.Application):
            def __init__(self, **settings):
                super().__init__([], **settings)

        sprockets.http.run(App, {'service': 'svc', 'environment': 'test'}, log_config={
            'version': 1,
            'disable_existing_loggers': False,
            'handlers': {'stdout': {'class': 'logging.StreamHandler',
                                    'stream': 'ext://sys.stdout'}},
            'root': {'level': 'INFO', 'handlers': ['stdout']},
        })
    '''))
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, 'STATSD_HOST': '127.0.0.1', 'STATSD_PORT': 'not-a-port'},
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode != 0, (stdout, stderr)
    message = "STATSD_PORT must be a port number from 1 to 65535, not 'not-a-port'"
    assert f'statsd is misconfigured: {message}' in stdout.decode()
    assert f'ConfigurationError: {message}' in stderr.decode()
