"""Daemon mode, the pid file and SIGHUP, with real processes.

Each process test runs a tiny TCP server (``SCRIPT``, written to a temporary
directory) through :func:`sprockets_statsd.server.daemon.run`: it answers
``pong <line>`` to a line and logs every request, so that the tests can see
which log file a running daemon writes to.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
import typing

import pytest

from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.server import daemon, logs

#: Seconds any one step (a start, a reply, a log line, an exit) may take on
#: a loaded machine before the test fails.
DEADLINE = 20.0

SCRIPT = '''\
"""A trivial TCP server run as the statsd server would be."""
import argparse, asyncio, logging, signal, sys
from sprockets_statsd.server import daemon, logs

log = logging.getLogger('trivial')


async def serve() -> int:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def handle(reader, writer):
        line = (await reader.readline()).decode().strip()
        log.info('request served', extra={'request': line})
        writer.write(f'pong {line}\\n'.encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, '127.0.0.1', 0)
    log.info('listening', extra={'port': server.sockets[0].getsockname()[1]})
    async with server:
        await stop.wait()
    log.info('stopped')
    return 0


parser = argparse.ArgumentParser()
parser.add_argument('--pidfile')
parser.add_argument('--log-file')
parser.add_argument('--foreground', action='store_true')
args = parser.parse_args()
logs.configure_logging(logging.INFO, args.log_file)
try:
    status = daemon.run(serve, daemonize=not args.foreground, pidfile=args.pidfile)
except daemon.PidFileError as exc:
    print(f'trivial: {exc}', file=sys.stderr)
    status = 1
sys.exit(status)
'''

_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def log_records(path: pathlib.Path) -> list[dict[str, str]]:
    """The logfmt records of a log file, parsed (none if it is missing)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [
        {k: json.loads(v) if v.startswith('"') else v for k, v in _PAIR.findall(line)}
        for line in text.splitlines()
    ]


def poll(predicate: typing.Callable[[], typing.Any], what: str) -> typing.Any:
    """Wait until `predicate()` is truthy (returning it) or fail after DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {DEADLINE} s waiting for {what}')
        time.sleep(0.02)
    return result


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, not yet reaped by init, does not)."""
    try:
        stat = pathlib.Path(f'/proc/{pid}/stat').read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(')')[2].split()[0] not in ('Z', 'X')


def read_pid(path: pathlib.Path) -> int | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return int(text) if text.endswith('\n') and text.strip().isdigit() else None


@dataclasses.dataclass
class Daemon:
    """Paths and handles of one test daemon."""

    root: pathlib.Path
    pidfile: pathlib.Path
    log_file: pathlib.Path
    pid: int = 0
    port: int = 0

    def command(self, *extra: str) -> list[str]:
        return [sys.executable, str(self.root / 'trivial.py'), '--pidfile', str(self.pidfile),
                '--log-file', str(self.log_file), *extra]

    def start(self) -> subprocess.CompletedProcess[str]:
        """Run the script; return once the daemon logged its port."""
        done = subprocess.run(self.command(), capture_output=True, text=True,
                              timeout=DEADLINE, env=_environment(), check=False)
        assert done.returncode == 0, done
        # The daemon's own log names its pid; the pid file may still hold a
        # stale one until the daemon has replaced it, so it is read second.
        listening = poll(lambda: [r for r in log_records(self.log_file)
                                  if r.get('msg') == 'listening'], 'the listening line')
        self.pid = int(listening[-1]['pid'])
        self.port = int(listening[-1]['port'])
        poll(lambda: read_pid(self.pidfile) == self.pid, f'pid {self.pid} in the pid file')
        return done

    def request(self, text: str) -> str:
        with socket.create_connection(('127.0.0.1', self.port), timeout=DEADLINE) as sock:
            sock.sendall(text.encode() + b'\n')
            return sock.makefile().readline()

    def stop(self) -> None:
        """Kill the daemon if a test left it running."""
        if self.pid and self.pid != os.getpid() and alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
            poll(lambda: not alive(self.pid), f'pid {self.pid} to die')


def _environment() -> dict[str, str]:
    # The daemon changes to /, so the checkout must be importable from there.
    root = str(pathlib.Path(__file__).resolve().parents[2])
    path = os.environ.get('PYTHONPATH')
    return dict(os.environ, PYTHONPATH=f'{root}{os.pathsep}{path}' if path else root)


@pytest.fixture
def trivial(tmp_path: pathlib.Path) -> typing.Iterator[Daemon]:
    """A daemon description, with the script written; killed at the end."""
    (tmp_path / 'trivial.py').write_text(SCRIPT)
    subject = Daemon(tmp_path, tmp_path / 'run' / 'trivial.pid', tmp_path / 'trivial.log')
    subject.pidfile.parent.mkdir()
    yield subject
    subject.stop()


@pytest.mark.slow
def test_detaches_and_serves(trivial: Daemon) -> None:
    """The command exits 0 at once while a detached daemon, in a session
    of its own, in /, with its standard streams on /dev/null, writes its pid
    to the pid file, logs to the log file and serves."""
    done = trivial.start()
    assert done.stdout == done.stderr == ''
    assert trivial.pid != os.getpid()
    assert alive(trivial.pid)
    assert os.getsid(trivial.pid) != os.getsid(0)
    assert os.readlink(f'/proc/{trivial.pid}/cwd') == '/'
    for fd in (0, 1, 2):
        assert os.readlink(f'/proc/{trivial.pid}/fd/{fd}') == os.devnull
    assert trivial.request('hello') == 'pong hello\n'
    served = poll(lambda: [r for r in log_records(trivial.log_file)
                           if r['msg'] == 'request served'], 'the request line')
    assert served[0]['request'] == 'hello'
    assert {r['pid'] for r in log_records(trivial.log_file)} == {str(trivial.pid)}


@pytest.mark.slow
def test_sighup_reopens_the_log_file(trivial: Daemon) -> None:
    """After logrotate-style renaming, the daemon keeps writing to the
    renamed file until SIGHUP; then it writes to a new file of the old name."""
    trivial.start()
    rotated = trivial.log_file.with_suffix('.log.1')
    trivial.log_file.rename(rotated)
    assert trivial.request('before') == 'pong before\n'
    poll(lambda: any(r.get('request') == 'before' for r in log_records(rotated)),
         'the request logged to the renamed file')
    assert not trivial.log_file.exists()
    os.kill(trivial.pid, signal.SIGHUP)
    reopened = poll(lambda: log_records(trivial.log_file), 'a new log file')
    assert reopened[0]['msg'] == 'SIGHUP received: log files reopened'
    assert reopened[0]['reopened'] == '1'
    assert trivial.request('after') == 'pong after\n'
    poll(lambda: any(r.get('request') == 'after' for r in log_records(trivial.log_file)),
         'the request logged to the new file')
    assert alive(trivial.pid)
    assert not any(r.get('request') == 'after' for r in log_records(rotated))


@pytest.mark.slow
def test_sigterm_stops_and_removes_the_pid_file(trivial: Daemon) -> None:
    """SIGTERM ends the daemon through its own shutdown and the pid file
    is removed on the way out."""
    trivial.start()
    os.kill(trivial.pid, signal.SIGTERM)
    poll(lambda: not alive(trivial.pid), 'the daemon to exit')
    assert not trivial.pidfile.exists()
    assert log_records(trivial.log_file)[-1]['msg'] == 'stopped'


@pytest.mark.slow
def test_second_instance_is_refused(trivial: Daemon) -> None:
    """A second start with the same pid file fails before detaching, with
    status 1 and a message naming the running pid; the first keeps running
    and keeps its pid file."""
    trivial.start()
    second = subprocess.run(trivial.command(), capture_output=True, text=True,
                            timeout=DEADLINE, env=_environment(), check=False)
    assert second.returncode == 1
    assert f'held by a running server (pid {trivial.pid})' in second.stderr
    assert read_pid(trivial.pidfile) == trivial.pid
    assert trivial.request('still') == 'pong still\n'
    assert [r['msg'] for r in log_records(trivial.log_file)].count('listening') == 1


@pytest.mark.slow
def test_stale_pid_file_is_replaced(trivial: Daemon) -> None:
    """A pid file left by a killed server (nobody holds its lock) is taken
    over, whatever pid it names, and the takeover is logged."""
    trivial.pidfile.write_text(f'{os.getpid()}\n')  # a live pid, but no lock
    trivial.start()
    assert trivial.pid != os.getpid()
    stale = [r for r in log_records(trivial.log_file) if r['msg'] == 'replaced a stale pid file']
    assert stale[0]['stale_pid'] == str(os.getpid())
    assert stale[0]['path'] == str(trivial.pidfile)


@pytest.mark.slow
def test_unusable_pid_file_fails_before_detaching(trivial: Daemon) -> None:
    """A pid file in a missing directory is reported on the terminal with
    status 1, and no daemon starts."""
    trivial.pidfile = trivial.root / 'missing' / 'trivial.pid'
    done = subprocess.run(trivial.command(), capture_output=True, text=True,
                          timeout=DEADLINE, env=_environment(), check=False)
    assert done.returncode == 1
    assert f'pid file {trivial.pidfile} cannot be created' in done.stderr
    assert not any(r['msg'] == 'listening' for r in log_records(trivial.log_file))


@pytest.mark.slow
def test_foreground_with_pid_file(trivial: Daemon) -> None:
    """In the foreground the process itself writes its pid; SIGTERM ends
    it with status 0 and removes the file."""
    with subprocess.Popen(trivial.command('--foreground'), env=_environment()) as process:
        try:
            assert poll(lambda: read_pid(trivial.pidfile), 'the pid file') == process.pid
            poll(lambda: any(r['msg'] == 'listening' for r in log_records(trivial.log_file)),
                 'the listening line')
            process.send_signal(signal.SIGTERM)
            assert process.wait(DEADLINE) == 0
        finally:
            process.kill()
    assert not trivial.pidfile.exists()


# In-process tests of the pieces, for what a subprocess cannot show.

def test_pid_file_lock_excludes_a_second_holder(tmp_path: pathlib.Path) -> None:
    """Two PidFile objects for one path: the second cannot lock while the
    first holds it, and can once the first released (and removed) it."""
    path = tmp_path / 'statsd.pid'
    first = daemon.PidFile(str(path))
    with first:
        assert read_pid(path) == os.getpid()
        second = daemon.PidFile(str(path))
        with pytest.raises(daemon.PidFileError, match=rf'held by a running server \(pid {os.getpid()}\)'):
            second.acquire()
        with pytest.raises(RuntimeError, match='is not locked'):
            second.write()
    assert not path.exists()
    with daemon.PidFile(str(path)) as third:
        assert third.stale_pid is None
        assert read_pid(path) == os.getpid()


def test_pid_file_path_is_made_absolute(tmp_path: pathlib.Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative pid file path is resolved at construction, before any
    change of directory."""
    monkeypatch.chdir(tmp_path)
    assert daemon.PidFile('x.pid').path == str(tmp_path / 'x.pid')


def test_run_in_the_foreground(root_logging: logging.Logger, tmp_path: pathlib.Path) -> None:
    """run() returns main's status, holds the pid file with this process's
    pid while main runs, reopens the log file on SIGHUP and removes the pid
    file afterwards."""
    log_file = tmp_path / 'statsd.log'
    pidfile = tmp_path / 'statsd.pid'
    logs.configure_logging(logging.INFO, str(log_file))
    seen: list[int | None] = []

    async def main() -> int:
        seen.append(read_pid(pidfile))
        log_file.rename(tmp_path / 'statsd.log.1')
        os.kill(os.getpid(), signal.SIGHUP)
        deadline = asyncio.get_running_loop().time() + DEADLINE
        while not log_file.exists():
            assert asyncio.get_running_loop().time() < deadline, 'no new log file'
            await asyncio.sleep(0.01)
        return 7

    assert daemon.run(main, pidfile=str(pidfile)) == 7
    assert seen == [os.getpid()]
    assert not pidfile.exists()
    assert [r['msg'] for r in log_records(log_file)] == ['SIGHUP received: log files reopened']
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


def test_daemonize_without_python_daemon(root_logging: logging.Logger, tmp_path: pathlib.Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Without python-daemon, asking to daemonize is a configuration error
    raised in the calling process, and the pid file it created is removed."""
    monkeypatch.setitem(sys.modules, 'daemon', None)
    pidfile = tmp_path / 'statsd.pid'
    logs.configure_logging(logging.INFO, str(tmp_path / 'statsd.log'))

    async def main() -> int:
        raise AssertionError('must not run')

    with pytest.raises(ConfigurationError, match='--daemonize needs python-daemon'):
        daemon.run(main, daemonize=True, pidfile=str(pidfile))
    assert not pidfile.exists()


def test_pid_file_in_a_missing_directory(tmp_path: pathlib.Path) -> None:
    """A pid file that cannot be created is a PidFileError naming the path
    and the fix."""
    path = tmp_path / 'missing' / 'statsd.pid'
    with pytest.raises(daemon.PidFileError, match='create its directory') as exc:
        daemon.PidFile(str(path)).acquire()
    assert str(path) in str(exc.value)


def test_acquire_twice_and_release_twice(tmp_path: pathlib.Path) -> None:
    """Acquiring a held lock again and releasing a released one do nothing."""
    pid_file = daemon.PidFile(str(tmp_path / 'statsd.pid'))
    pid_file.acquire()
    fd = pid_file.fileno()
    pid_file.acquire()
    assert pid_file.fileno() == fd
    pid_file.release()
    pid_file.release()
    with pytest.raises(RuntimeError):
        pid_file.fileno()


def test_pid_file_replaced_while_locking(tmp_path: pathlib.Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """When the locked file turns out to have been replaced (a stopping
    server removed it meanwhile), acquire tries the new file; if that keeps
    happening it gives up with an error."""
    checks: list[bool] = [False]
    real = daemon._same_file
    monkeypatch.setattr(daemon, '_same_file',
                        lambda fd, path: checks.pop() if checks else real(fd, path))
    with daemon.PidFile(str(tmp_path / 'statsd.pid')):
        assert checks == []
    monkeypatch.setattr(daemon, '_same_file', lambda fd, path: False)
    with pytest.raises(daemon.PidFileError, match='keeps being replaced'):
        daemon.PidFile(str(tmp_path / 'statsd.pid')).acquire()


def test_forked_child_leaves_the_pid_file(tmp_path: pathlib.Path) -> None:
    """A forked child that releases the PidFile it inherited neither removes
    the file nor drops the lock: only the process that wrote it does."""
    path = tmp_path / 'statsd.pid'
    with daemon.PidFile(str(path)) as pid_file:
        child = os.fork()
        if child == 0:  # pragma: no cover - the child's coverage is not collected
            try:
                pid_file.release()
            finally:
                os._exit(0)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert read_pid(path) == os.getpid()
        with pytest.raises(daemon.PidFileError, match='held by a running server'):
            daemon.PidFile(str(path)).acquire()
    assert not path.exists()


def test_log_files_are_kept_across_detaching(root_logging: logging.Logger,
                                             tmp_path: pathlib.Path) -> None:
    """The descriptors python-daemon must not close are the log file's; the
    standard streams (redirected to /dev/null instead) are not listed."""
    handler = logs.configure_logging(logging.INFO, str(tmp_path / 'statsd.log'))
    assert isinstance(handler, logs.ReopenableFileHandler)
    assert handler.stream is not None
    stderr = logging.StreamHandler(sys.stderr)
    root_logging.addHandler(stderr)
    assert handler.stream.fileno() in daemon._kept_descriptors()
    assert 2 not in daemon._kept_descriptors()


class _FakeContext:
    """Stands in for python-daemon's DaemonContext: records, never forks."""

    made: typing.ClassVar[list[_FakeContext]] = []

    def __init__(self, **kwargs: typing.Any) -> None:
        self.kwargs = kwargs
        self.events: list[str] = []
        self.made.append(self)

    def open(self) -> None:
        self.events.append('open')

    def close(self) -> None:
        self.events.append('close')


def test_detach_arguments(root_logging: logging.Logger, tmp_path: pathlib.Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """What run() asks python-daemon for: a detached process that keeps the
    log file and the locked pid file open, keeps the umask, ignores SIGHUP
    until the loop handles it; the pid is written after detaching and the
    context closed at the end."""
    fake = type(sys)('daemon')
    fake.DaemonContext = _FakeContext  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, 'daemon', fake)
    _FakeContext.made.clear()
    handler = logs.configure_logging(logging.INFO, str(tmp_path / 'statsd.log'))
    assert isinstance(handler, logs.ReopenableFileHandler)
    assert handler.stream is not None
    pidfile = tmp_path / 'statsd.pid'
    kept: set[str] = set()
    old_umask = os.umask(0o027)
    try:
        async def main() -> int:
            assert _FakeContext.made[0].events == ['open']
            assert read_pid(pidfile) == os.getpid()
            kept.update(os.readlink(f'/proc/self/fd/{fd}')
                        for fd in _FakeContext.made[0].kwargs['files_preserve'])
            return 3

        assert daemon.run(main, daemonize=True, pidfile=str(pidfile)) == 3
    finally:
        os.umask(old_umask)
    (context,) = _FakeContext.made
    assert context.events == ['open', 'close']
    kwargs = context.kwargs
    assert kwargs['detach_process'] is True
    assert kwargs['umask'] == 0o027
    assert {str(tmp_path / 'statsd.log'), str(pidfile)} <= kept
    assert kwargs['signal_map'][signal.SIGHUP] is None
    assert kwargs['signal_map'][signal.SIGTERM] == 'terminate'
    assert not pidfile.exists()
    assert [r['msg'] for r in log_records(tmp_path / 'statsd.log')] == ['running as a daemon']


def test_detach_without_a_log_file_warns(root_logging: logging.Logger,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Daemonizing while logging to standard error says, on standard error
    and before detaching, that the log will be lost."""
    fake = type(sys)('daemon')
    fake.DaemonContext = _FakeContext  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, 'daemon', fake)
    logs.configure_logging(logging.WARNING)

    async def main() -> int:
        return 0

    assert daemon.run(main, daemonize=True) == 0
    assert 'daemonizing without a log file' in capsys.readouterr().err
