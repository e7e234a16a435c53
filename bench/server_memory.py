"""Server memory benchmark: RSS for 10k, 100k and 1M distinct metric names.

Strategy: for each case the server runs fresh as a subprocess (``python -m
sprockets_statsd.server -b 127.0.0.1:0 -f F``) with no sink, so each flush
goes to its standard output, which a thread here reads and scans for the
flush's ``statsd.numStats``, ``stats.statsd.processing_time`` and
``stats.statsd.graphiteStats.calculationtime`` lines (everything else is
discarded).  The names are sent over one TCP connection (faster than UDP
for bulk, and nothing is lost), one line per name.  The names are all in
once two flushes in a row report the same ``numStats`` of at least the
number sent (it only grows while names arrive); RSS (``VmRSS`` of
``/proc/<pid>/status``) is read half an interval after that second flush,
when the flush's output buffers are gone and what remains is the
aggregator's state.  ``VmHWM`` is the peak, reached during a flush.  The
baseline is the RSS of a server that has received nothing.

With the default ``deleteIdleStats`` off, names stay until a restart, so
this is also what the server holds for good after a client sent that many
names once.  ``--delete-idle`` measures instead with ``--delete-idle-stats``
on: RSS once every name has been flushed and then deleted as idle.

Run from the repository root::

    .venv/bin/python bench/server_memory.py                 # ~1.5 minutes
    .venv/bin/python bench/server_memory.py --quick         # ~10 s smoke test
    .venv/bin/python bench/server_memory.py --ref HEAD      # the committed server
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import pathlib
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import typing

__all__ = ['Case', 'Result', 'main', 'measure']

HERE = pathlib.Path(__file__).resolve().parent
HOST = '127.0.0.1'
#: Whole-run bound: a case that has not finished by then fails the run.
CASE_TIMEOUT = 120.0
#: Bytes per send() of the metric lines.
CHUNK = 256 * 1024

#: Frames the load sink keeps (sprockets_statsd.server.frames.FRAME_COUNT).
FRAME_COUNT = 15

_WATCHED = (b'statsd.numStats', b'stats.statsd.processing_time',
            b'stats.statsd.graphiteStats.calculationtime')
_LISTENING = re.compile(r'listening on udp (?:\[([^\]]+)\]|([^:]+)):(\d+)')


@dataclasses.dataclass(frozen=True)
class Case:
    """One measurement: `names` distinct names of one metric type."""

    kind: str  # 'counter' or 'timer'
    names: int
    flush_interval: float
    delete_idle: bool = False
    #: Run with the load sink, its frames as long as the flush interval,
    #: and measure once all FRAME_COUNT frames hold every name.
    load_sink: bool = False

    def lines(self) -> typing.Iterator[bytes]:
        """The metric lines, one per name, in chunks of about CHUNK bytes."""
        template = 'mem.{kind}.n{i:07d}:{value}|{type}\n'
        kind, mtype = ('c', 'c') if self.kind == 'counter' else ('t', 'ms')
        batch: list[str] = []
        size = 0
        for i in range(self.names):
            line = template.format(kind=kind, i=i, value=i % 1000 + 1, type=mtype)
            batch.append(line)
            size += len(line)
            if size >= CHUNK:
                yield ''.join(batch).encode()
                batch, size = [], 0
        if batch:
            yield ''.join(batch).encode()


@dataclasses.dataclass
class Result:
    """What one case measured (memory in KiB, times in seconds)."""

    case: Case
    baseline_kib: int
    steady_kib: int
    peak_kib: int
    send_seconds: float
    flush_bytes: int
    processing_ms: float
    calculation_ms: float

    @property
    def bytes_per_name(self) -> float:
        return (self.steady_kib - self.baseline_kib) * 1024 / self.case.names


class _Output:
    """Drains the server's standard output and notes each flush."""

    def __init__(self, fd: int | socket.socket) -> None:
        self._fd = fd
        self._cond = threading.Condition()
        #: One dict per flush: the watched names' values and 'bytes'.
        self.flushes: list[dict[bytes | str, float]] = []
        self._current: dict[bytes | str, float] = {'bytes': 0}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if isinstance(self._fd, socket.socket):
            with self._fd as listener:  # a fake Graphite receiver
                connection, _ = listener.accept()
            with connection:
                self._scan(connection.recv)
        else:
            self._scan(lambda size: os.read(typing.cast(int, self._fd), size))

    def _scan(self, read: typing.Callable[[int], bytes]) -> None:
        tail = b''
        while chunk := read(1 << 20):
            self._current['bytes'] += len(chunk)
            data = tail + chunk
            end = data.rfind(b'\n') + 1
            tail, data = data[end:], data[:end]
            for name in _WATCHED:
                at = data.find(name + b' ')
                while at >= 0:
                    if at == 0 or data[at - 1] == 10:  # at a line start
                        value = data[at + len(name) + 1:data.index(b'\n', at)].split(b' ')[0]
                        self._current[name] = float(value)
                    at = data.find(name + b' ', at + 1)
            if _WATCHED[0] in self._current and _WATCHED[-1] in self._current:
                with self._cond:
                    self.flushes.append(self._current)
                    self._current = {'bytes': 0}
                    self._cond.notify_all()

    def wait(self, predicate: typing.Callable[[list[dict[bytes | str, float]]], bool],
             timeout: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.flushes), timeout):
                raise TimeoutError(f'no {what} within {timeout:g} s')


def _memory(pid: int) -> dict[str, int]:
    status = pathlib.Path(f'/proc/{pid}/status').read_text()
    return {k: int(v.split()[0]) for k, v in re.findall(r'^(Vm\w+):\s+(.*)$', status, re.M)}


def measure(case: Case, source: pathlib.Path, python: str) -> Result:
    """Run one case against the server in `source`; see the module's notes."""
    command = [python, '-m', 'sprockets_statsd.server', '-b', f'{HOST}:0',
               '-f', str(case.flush_interval), '--admin', 'off']
    if case.delete_idle:
        command.append('--delete-idle-stats')
    receiver = None
    if case.load_sink:
        # With a load sink given, flushes no longer go to standard output:
        # they are read from a Graphite sink instead.
        receiver = socket.create_server((HOST, 0))
        command += ['-s', f'{HOST}:{receiver.getsockname()[1]}', '--http', f'{HOST}:0',
                    '--load-frame-length', str(case.flush_interval)]
    else:
        command += ['--http', 'off']
    env = {k: v for k, v in os.environ.items() if not k.startswith('STATSD_')}
    env['PYTHONPATH'] = str(source)
    deadline = time.monotonic() + CASE_TIMEOUT
    with subprocess.Popen(command, cwd=source, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as server:
        try:
            assert server.stdout is not None
            assert server.stderr is not None
            port = 0
            while not port:
                line = server.stderr.readline().decode(errors='replace')
                if not line:
                    raise RuntimeError(f'the server exited with {server.wait()}')
                if match := _LISTENING.search(line):
                    port = int(match[3])
            # Keep draining standard error so that warnings never block it.
            threading.Thread(target=server.stderr.read, daemon=True).start()
            output = _Output(receiver or server.stdout.fileno())
            baseline = _memory(server.pid)['VmRSS']
            started = time.monotonic()
            with socket.create_connection((HOST, port), timeout=30) as sock:
                for chunk in case.lines():
                    sock.sendall(chunk)
            sent = time.monotonic() - started
            if case.delete_idle:
                # Flushed once with the names, then they are idle and deleted.
                def done(flushes: list[dict[bytes | str, float]]) -> bool:
                    seen = [f[_WATCHED[0]] for f in flushes]
                    return (max(seen, default=0) >= case.names
                            and seen[-1] < case.names)
            else:
                # Two flushes in a row with every name; with the load sink,
                # enough more that every frame it keeps holds every name.
                settled = FRAME_COUNT + 1 if case.load_sink else 2

                def done(flushes: list[dict[bytes | str, float]]) -> bool:
                    seen = [f[_WATCHED[0]] for f in flushes][-settled:]
                    return (len(seen) == settled and min(seen) == seen[-1]
                            and seen[-1] >= case.names)
            output.wait(done, deadline - time.monotonic(), 'flush with every name')
            full = max(output.flushes, key=lambda f: f['bytes'])
            time.sleep(case.flush_interval / 2)
            memory = _memory(server.pid)
            return Result(case, baseline, memory['VmRSS'], memory['VmHWM'], sent,
                          int(full['bytes']), full[_WATCHED[1]], full[_WATCHED[2]])
        finally:
            server.kill()
            if receiver is not None:
                receiver.close()


def _export(ref: str, workdir: pathlib.Path) -> pathlib.Path:
    """Extract the package as committed at `ref` (``git archive``)."""
    archive = subprocess.run(['git', 'archive', ref, 'sprockets_statsd'], cwd=HERE.parent,
                             capture_output=True, check=True, timeout=60).stdout
    subprocess.run(['tar', '-x', '-C', str(workdir)], input=archive, check=True, timeout=60)
    return workdir


def _mib(kib: float) -> str:
    return f'{kib / 1024:,.1f}'


def report(results: list[Result]) -> str:
    """The results as a Markdown table."""
    rows = [
        '| names | type | flush interval s | RSS idle MiB | RSS with names MiB '
        '| bytes/name | peak RSS (VmHWM) MiB | flush output MB | flush CPU ms '
        '(processing + calculation) | send s |',
        '|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|',
    ]
    for r in results:
        kind = r.case.kind + (', idle deleted' if r.case.delete_idle else '') + (
            f', load sink ({FRAME_COUNT} frames)' if r.case.load_sink else '')
        rows.append(
            f'| {r.case.names:,} | {kind} | {r.case.flush_interval:g} '
            f'| {_mib(r.baseline_kib)} | {_mib(r.steady_kib)} | {r.bytes_per_name:,.0f} '
            f'| {_mib(r.peak_kib)} | {r.flush_bytes / 1e6:,.1f} '
            f'| {r.processing_ms:,.0f} + {r.calculation_ms:,.0f} | {r.send_seconds:.1f} |'
        )
    return '\n'.join(rows)


def cases(quick: bool, timers: bool, load_sink: bool, delete_idle: bool) -> list[Case]:
    """The cases to run: counters at each size, timers, the load sink, expiry."""
    sizes = [10_000, 50_000] if quick else [10_000, 100_000, 1_000_000]
    # A flush of many names takes seconds of CPU: the interval must exceed it.
    chosen = [Case('counter', n, max(2.0, n / 100_000)) for n in sizes]
    if timers:
        chosen += [Case('timer', n, max(2.0, n / 20_000)) for n in sizes if n <= 100_000]
    if load_sink:
        # Sixteen flushes each: only the sizes that flush in well under 1 s.
        chosen += [Case('counter', n, 1.0, load_sink=True) for n in sizes if n <= 100_000]
    if delete_idle:
        chosen += [Case('counter', n, max(2.0, n / 100_000), True) for n in sizes[-1:]]
    return chosen


def main(argv: list[str] | None = None) -> int:
    """Run every case and print the table; the exit status is 0."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--quick', action='store_true', help='10k and 50k names only')
    parser.add_argument('--no-timers', action='store_true', help='no timer cases')
    parser.add_argument('--no-load-sink', action='store_true', help='no load sink cases')
    parser.add_argument('--delete-idle', action='store_true',
                        help='also measure the largest size with --delete-idle-stats')
    parser.add_argument('--ref', help='measure the server as committed at this git ref '
                        '(default: the working tree)')
    parser.add_argument('--python', default=sys.executable,
                        help='the interpreter that runs the server (default: this one)')
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.ref:
            workdir = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory()))
            source = _export(args.ref, workdir)
        else:
            source = HERE.parent
        described = subprocess.run(['git', 'describe', '--always', '--dirty'], cwd=HERE.parent,
                                   capture_output=True, text=True, check=False).stdout.strip()
        print(f'server: {args.ref or "working tree"} ({described}), '
              f'{platform.python_implementation()} {platform.python_version()}, '
              f'{platform.machine()}, {os.cpu_count()} CPUs', flush=True)
        results = []
        for case in cases(args.quick, not args.no_timers, not args.no_load_sink,
                          args.delete_idle):
            started = time.monotonic()
            results.append(measure(case, source, args.python))
            print(f'  {case.kind} x {case.names:,}: {time.monotonic() - started:.1f} s',
                  file=sys.stderr, flush=True)
        print(report(results))
    return 0


if __name__ == '__main__':
    sys.exit(main())
