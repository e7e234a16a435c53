"""The command line: options, environment variables, errors, signals."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import subprocess
import sys

import pytest

from sprockets_statsd.server import _options, cli
from sprockets_statsd.server.app import ServerConfig
from sprockets_statsd.server.config import AggregatorConfig
from tests.server.helpers import FakeCarbon, ServerProcess, send_udp


def settings(*argv: str, **environ: str) -> tuple[ServerConfig, int]:
    return cli.settings_from(list(argv), environ)


def error_of(capsys: pytest.CaptureFixture[str], *argv: str, **environ: str) -> str:
    """Run settings_from expecting exit status 2; return the error output."""
    with pytest.raises(SystemExit) as exc:
        settings(*argv, **environ)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1, err
    return err


def test_defaults_match_gstatsd_and_etsy_statsd() -> None:
    """No options: every interface on 8125, stdout, 10 s, 90th percentile."""
    config, level = settings()
    assert config == ServerConfig()
    assert config.binds == (('', 8125),)
    assert config.sinks == ()
    assert config.aggregator == AggregatorConfig()
    assert level == logging.WARNING


def test_gstatsd_style_arguments() -> None:
    """gstatsd's -b, -s (repeatable), -t, -f, -p, -x and -v are understood."""
    config, level = settings(
        '-b', 'foo:8126', '-s', '2003', '-s', 'stats2:2004', '-s', '[::1]:2005',
        '-t', 'graphite', '-f', '0.5', '-p', '90', '-p', '-5', '-x', 'app', '-vv',
    )
    assert config.binds == (('foo', 8126),)
    assert config.sinks == (('localhost', 2003), ('stats2', 2004), ('::1', 2005))
    assert config.aggregator.flush_interval == 0.5
    assert config.aggregator.percent_thresholds == (90.0, -5.0)
    assert config.aggregator.key_prefix == 'app'
    assert level == logging.DEBUG


@pytest.mark.parametrize(('text', 'expected'), [
    ('8125', ('', 8125)),
    (':8125', ('', 8125)),
    ('127.0.0.1:0', ('127.0.0.1', 0)),
    ('[::1]:8125', ('::1', 8125)),
    ('[::]:9', ('::', 9)),
])
def test_bind_forms(text: str, expected: tuple[str, int]) -> None:
    """Bind addresses: bare port, :port, host:port and [v6]:port."""
    assert cli.parse_address(text) == expected


def test_server_options() -> None:
    """The server's own options reach its configuration."""
    config, _ = settings(
        '--unix-socket', '/tmp/s.sock', '--unix-socket-mode', '660',
        '--udp-receive-buffer', '16M', '--max-line-length', '4k',
        '--shutdown-timeout', '2.5', '--sink-buffer-bytes', '1048576',
        '--sink-buffer-flushes', '30',
    )
    assert config.unix_socket == '/tmp/s.sock'
    assert config.unix_socket_mode == 0o660
    assert config.udp_receive_buffer == 16 * 1024 * 1024
    assert config.max_line_length == 4096
    assert config.shutdown_timeout == 2.5
    assert config.sink_buffer_bytes == 1024 * 1024
    assert config.sink_buffer_flushes == 30


def test_aggregator_switches() -> None:
    """Namespace, prefixes, suffix, deletion, histogram and timer options."""
    config, _ = settings(
        '--no-legacy-namespace', '--global-prefix', 'g', '--prefix-counter', 'c',
        '--prefix-timer', 't', '--prefix-gauge', '', '--prefix-set', 's',
        '--global-suffix', 'host1', '--prefix-stats', 'me', '--no-flush-counts',
        '--no-key-name-sanitize', '--delete-idle-stats', '--no-delete-gauges',
        '--gauges-max-ttl', '3', '--histogram', 'api.=10,100,inf',
        '--histogram', 'db=1', '--timer-metrics', 'upper,count_ps',
    )
    assert config.aggregator == AggregatorConfig(
        legacy_namespace=False, global_prefix='g', prefix_counter='c',
        prefix_timer='t', prefix_gauge='', prefix_set='s', global_suffix='host1',
        prefix_stats='me', flush_counts=False, key_name_sanitize=False,
        delete_idle_stats=True, delete_gauges=False, gauges_max_ttl=3,
        histograms=(('api.', (10.0, 100.0, math.inf)), ('db', (1.0,))),
        calculated_timer_metrics=('upper', 'count_ps'),
    )


def test_every_option_from_the_environment() -> None:
    """Each option has a STATSD_* variable; lists are comma-separated."""
    config, level = settings(
        STATSD_BIND='127.0.0.1:9125,[::1]:9125', STATSD_SINK='a:1,b:2',
        STATSD_SINK_TYPE='graphite', STATSD_FLUSH='2', STATSD_PERCENT='90,99.9',
        STATSD_KEY_PREFIX='svc', STATSD_UNIX_SOCKET='/tmp/x',
        STATSD_UNIX_SOCKET_MODE='600', STATSD_UDP_RECEIVE_BUFFER='1M',
        STATSD_MAX_LINE_LENGTH='100', STATSD_SHUTDOWN_TIMEOUT='1',
        STATSD_SINK_BUFFER_BYTES='2M', STATSD_SINK_BUFFER_FLUSHES='5',
        STATSD_LEGACY_NAMESPACE='false', STATSD_GLOBAL_PREFIX='gp',
        STATSD_PREFIX_COUNTER='pc', STATSD_PREFIX_TIMER='pt',
        STATSD_PREFIX_GAUGE='pg', STATSD_PREFIX_SET='ps',
        STATSD_GLOBAL_SUFFIX='sx', STATSD_PREFIX_STATS='st',
        STATSD_FLUSH_COUNTS='no', STATSD_KEY_NAME_SANITIZE='0',
        STATSD_DELETE_IDLE_STATS='yes', STATSD_DELETE_COUNTERS='false',
        STATSD_DELETE_TIMERS='true', STATSD_DELETE_SETS='on',
        STATSD_DELETE_GAUGES='off', STATSD_GAUGES_MAX_TTL='2',
        STATSD_HISTOGRAM='a=1,2;b=3,inf', STATSD_TIMER_METRICS='mean',
        STATSD_LOG_LEVEL='info',
    )
    assert config == ServerConfig(
        aggregator=AggregatorConfig(
            flush_interval=2, percent_thresholds=(90, 99.9), key_prefix='svc',
            legacy_namespace=False, global_prefix='gp', prefix_counter='pc',
            prefix_timer='pt', prefix_gauge='pg', prefix_set='ps',
            global_suffix='sx', prefix_stats='st', flush_counts=False,
            key_name_sanitize=False, delete_idle_stats=True,
            delete_counters=False, delete_timers=True, delete_sets=True,
            delete_gauges=False, gauges_max_ttl=2,
            histograms=(('a', (1, 2)), ('b', (3, math.inf))),
            calculated_timer_metrics=('mean',),
        ),
        binds=(('127.0.0.1', 9125), ('::1', 9125)), unix_socket='/tmp/x',
        unix_socket_mode=0o600, sinks=(('a', 1), ('b', 2)),
        udp_receive_buffer=1024 * 1024, max_line_length=100,
        shutdown_timeout=1, sink_buffer_bytes=2 * 1024 * 1024,
        sink_buffer_flushes=5,
    )
    assert level == logging.INFO


def test_command_line_wins_over_environment() -> None:
    """An option given on the command line replaces its variable entirely."""
    config, level = settings(
        '-s', 'here:2003', '-f', '3', '-v',
        STATSD_SINK='there:2003,elsewhere:2003', STATSD_FLUSH='7',
        STATSD_LOG_LEVEL='error',
    )
    assert config.sinks == (('here', 2003),)
    assert config.aggregator.flush_interval == 3
    assert level == logging.INFO


@pytest.mark.parametrize(('argv', 'names'), [
    (['-f', '0'], '-f/--flush'),
    (['-f', 'soon'], '-f/--flush'),
    (['-b', '::1:8125'], '-b/--bind'),
    (['-b', 'host:99999'], '-b/--bind'),
    (['-s', 'host:'], '-s/--sink'),
    (['-s', ':0'], '-s/--sink'),
    (['-t', 'pickle'], '-t/--type'),
    (['-p', '101'], '-p/--percent'),
    (['-x', 'bad prefix'], '-x/--prefix'),
    (['--udp-receive-buffer', 'lots'], '--udp-receive-buffer'),
    (['--gauges-max-ttl', '0'], '--gauges-max-ttl'),
    (['--histogram', 'x=3,1'], '--histogram'),
    (['--unix-socket-mode', '9'], '--unix-socket-mode'),
    (['--nonsense'], '--nonsense'),
])
def test_bad_arguments_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], names: str
) -> None:
    """A bad argument exits with status 2 and a one-line message naming it."""
    err = error_of(capsys, *argv)
    assert names in err
    assert err.startswith('sprockets-statsd-server: error:')


@pytest.mark.parametrize(('name', 'value'), [
    ('STATSD_FLUSH', '-1'),
    ('STATSD_BIND', 'nowhere'),
    ('STATSD_DELETE_IDLE_STATS', 'maybe'),
    ('STATSD_LOG_LEVEL', 'loud'),
    ('STATSD_PERCENT', '90,x'),
])
def test_bad_environment_values_exit_2_naming_the_variable(
    capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    """A bad variable exits with status 2 and a one-line message naming it."""
    assert name in error_of(capsys, **{name: value})


def test_help_lists_every_variable(capsys: pytest.CaptureFixture[str]) -> None:
    """--help names the environment variable of every option."""
    with pytest.raises(SystemExit) as exc:
        settings('--help')
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in _options.options():
        assert option.env in text
    assert 'STATSD_LOG_LEVEL' in text


def test_console_script_prints_the_version() -> None:
    """The installed console script runs the same command line."""
    script = os.path.join(os.path.dirname(sys.executable), 'sprockets-statsd-server')
    result = subprocess.run([script, '--version'], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0
    assert result.stdout.startswith('sprockets-statsd-server 2.')


def test_process_rejects_a_bad_option_with_status_2() -> None:
    """The real process: a bad option gives one line on stderr, status 2."""
    result = subprocess.run(
        [sys.executable, '-m', 'sprockets_statsd.server', '-f', '0'],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "sprockets-statsd-server: error: argument -f/--flush: '0': "
        'expected a number > 0 (see --help)'
    ]


async def test_runs_alone_printing_flushes_to_stdout() -> None:
    """`python -m sprockets_statsd.server` alone prints Graphite lines and
    says on stderr where it listens; SIGINT stops it with status 0."""
    async with ServerProcess('-b', '127.0.0.1:0', '-f', '0.2') as server:
        send_udp(server.address, b'alone:5|c')
        status, stdout, stderr = await server.stop(signal.SIGINT)
    assert status == 0, stderr
    assert b'stats_counts.alone 5 ' in stdout
    assert f'listening on udp 127.0.0.1:{server.port}, tcp 127.0.0.1:{server.port}' in stderr


async def test_sigterm_delivers_the_last_interval_to_every_sink() -> None:
    """SIGTERM: stop receiving, flush, deliver to each sink, exit 0."""
    async with FakeCarbon() as one, FakeCarbon() as two, ServerProcess(
        '-b', '127.0.0.1:0', '-f', '60', '-s', f'127.0.0.1:{one.port}',
        '-s', f'127.0.0.1:{two.port}',
    ) as server:
        # Queued in the server's socket at once on loopback: the final
        # flush must include it.
        send_udp(server.address, b'late:3|c', b'late:4|c')
        status, _, stderr = await server.stop(signal.SIGTERM)
        assert status == 0, stderr
        assert one.values('stats_counts.late') == [7]
        assert two.values('stats_counts.late') == [7]


async def test_environment_configures_the_process() -> None:
    """STATSD_* variables configure a real process."""
    async with FakeCarbon() as carbon, ServerProcess(env={
        'STATSD_BIND': '127.0.0.1:0', 'STATSD_SINK': f'127.0.0.1:{carbon.port}',
        'STATSD_FLUSH': '0.2', 'STATSD_KEY_PREFIX': 'env',
    }) as server:
        send_udp(server.address, b'var:1|c')
        await carbon.wait_for_value('stats_counts.env.var', 1)
        status, _, stderr = await server.stop()
        assert status == 0, stderr


async def test_bind_failure_exits_1_with_the_address() -> None:
    """A port already in use: one error line naming it, exit status 1."""
    async with FakeCarbon() as carbon:
        process = await asyncio.create_subprocess_exec(
            sys.executable, '-m', 'sprockets_statsd.server',
            '-b', f'127.0.0.1:{carbon.port}', '-f', '1',
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert f'127.0.0.1:{carbon.port}' in err.decode()


def test_unix_datagram_and_container_options() -> None:
    """--unix-datagram (made absolute), its mode and --keep-container-id."""
    config, _ = settings(
        '--unix-datagram', 'dsd.socket', '--unix-datagram-mode', '620',
        '--keep-container-id',
    )
    assert config.unix_datagram == os.path.abspath('dsd.socket')
    assert config.unix_datagram_mode == 0o620
    assert config.aggregator.keep_container_id
    assert not settings()[0].aggregator.keep_container_id
