"""The real server in daemon mode: detach, pid file, SIGHUP, final flush."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import signal
import sys

import pytest

from tests.server.helpers import FakeCarbon, send_udp, wait_until

REPOSITORY = str(pathlib.Path(__file__).resolve().parents[2])

DEADLINE = 20.0
_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def records(path: pathlib.Path) -> list[dict[str, str]]:
    """The logfmt records of a log file (none if it is missing)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [{k: json.loads(v) if v.startswith('"') else v for k, v in _PAIR.findall(line)}
            for line in text.splitlines()]


def alive(pid: int) -> bool:
    try:
        stat = pathlib.Path(f'/proc/{pid}/stat').read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(')')[2].split()[0] not in ('Z', 'X')


async def run_cli(*args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith('STATSD_')}
    env['PYTHONPATH'] = REPOSITORY
    process = await asyncio.create_subprocess_exec(
        sys.executable, '-m', 'sprockets_statsd.server', *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode is not None
    return process.returncode, err.decode()


@pytest.mark.slow
async def test_daemon_mode_end_to_end(tmp_path: pathlib.Path) -> None:
    """-D detaches (status 0) and the daemon writes its pid file, logs to
    --log-file, reopens it on SIGHUP, refuses a second instance, and on
    SIGTERM delivers its final flush and removes the pid file."""
    pidfile, log = tmp_path / 'statsd.pid', tmp_path / 'statsd.log'
    async with FakeCarbon() as carbon:
        args = ('-D', '--pidfile', str(pidfile), '--log-file', str(log), '-v',
                '-b', '127.0.0.1:0', '-s', f'127.0.0.1:{carbon.port}', '-f', '3600',
                '--http', 'off', '--admin', 'off')
        status, err = await run_cli(*args)
        assert (status, err) == (0, '')
        await wait_until(lambda: pidfile.exists() and pidfile.read_text().endswith('\n'),
                         DEADLINE, 'the pid file')
        pid = int(pidfile.read_text())
        try:
            await wait_until(lambda: any('listening on udp' in r.get('msg', '')
                                         for r in records(log)), DEADLINE, 'the startup line')
            startup = next(r for r in records(log) if 'listening on udp' in r.get('msg', ''))
            assert startup['pid'] == str(pid)
            port = int(re.search(r'udp 127\.0\.0\.1:(\d+)', startup['msg'])[1])  # type: ignore[index]

            status, err = await run_cli(*args)
            assert status == 1
            assert f'(pid {pid})' in err

            log.rename(tmp_path / 'statsd.log.1')
            os.kill(pid, signal.SIGHUP)
            await wait_until(lambda: bool(records(log)), DEADLINE, 'a new log file')
            assert records(log)[0]['msg'] == 'SIGHUP received: log files reopened'

            send_udp(('127.0.0.1', port), b'daemon_test.final:42|g')
            os.kill(pid, signal.SIGTERM)
            await carbon.wait_for_value('stats.gauges.daemon_test.final', 42)
            await wait_until(lambda: not alive(pid), DEADLINE, 'the daemon to exit')
            assert not pidfile.exists()
            assert records(log)[-1]['msg'] == 'stopped'
        finally:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
