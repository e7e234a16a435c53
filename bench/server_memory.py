"""Server memory and flush cost: 10k to 1M distinct names, ours beside etsy statsd.

Strategy: for each case the server runs fresh as a subprocess (``python -m
sprockets_statsd.server -b 127.0.0.1:0 -f F``) with no sink, so each flush
goes to its standard output, which a thread here reads and scans for the
flush's ``statsd.numStats``, ``stats.statsd.processing_time`` and
``stats.statsd.graphiteStats.calculationtime`` lines (everything else is
discarded).  etsy statsd (``bench/etsy``, installed with npm as
``bench/server.py`` does) runs the same case right after ours, with its TCP
server and its graphite backend flushing to a receiver in this process
(a new connection per flush).  The names are sent over one TCP connection
(faster than UDP for bulk, and nothing is lost), one line per name.

Each time a flush has arrived whole, the reader thread notes the server's
CPU time (``utime + stime`` of ``/proc/<pid>/stat``, which neighbours on a
shared machine do not inflate) and its RSS.  **Flush CPU** is the CPU used
from the end of the previous flush to the end of this one, in intervals
without traffic: the flush's own cost plus an idle interval's (a few ms).
For the first flush holding the names, it starts once the server has
taken every line (its CPU time stopped rising).  **Steady RSS** is
``VmRSS`` half an interval after the last of several flushes with every
name (it stops rising after two or three); **peak** is ``VmHWM``.

``--loss`` adds the loss case: with 1M counter names held, 100k lines/s
(1 line per datagram, ``bench/_loadgen.py``) run from two seconds before a
flush to three seconds after it, with each daemon's default UDP receive
buffer; what arrived is the sum of the ``stats_counts.load.*`` values the
daemon flushed afterwards.  The kernel's drops are sampled every 20 ms and
split into those before the flush's output began, while it came and after
it: drops before the flush mean the daemon was short of CPU, not held up by
the flush.  ``--neighbour`` adds the same case with a CPU-bound process
running beside the daemon during the load.

Run from the repository root::

    .venv/bin/python bench/server_memory.py                 # ~10 minutes
    .venv/bin/python bench/server_memory.py --quick         # ~1 minute smoke test
    .venv/bin/python bench/server_memory.py --ref HEAD      # the committed server
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import pathlib
import platform
import re
import shutil
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
#: Whole-case bound: a case that has not finished by then fails the run.
CASE_TIMEOUT = 600.0
#: Bytes per send() of the metric lines.
CHUNK = 256 * 1024
#: Flushes with every name before steady RSS is read: RSS levels off after
#: two or three.
SETTLE_FLUSHES = 4
#: The loss case: lines/s, one per datagram, from LOAD_LEAD s before a flush
#: for LOAD_SECONDS.
LOAD_RATE = 100_000
LOAD_LEAD = 2.0
LOAD_SECONDS = 5.0
#: Seconds between samples of the kernel's drops during the loss case.
_DROP_SAMPLE = 0.02
_TICK = os.sysconf('SC_CLK_TCK')

#: Frames the load sink keeps (sprockets_statsd.server.frames.FRAME_COUNT).
FRAME_COUNT = 15

_NUM_STATS = b'statsd.numStats'
_WATCHED = (_NUM_STATS, b'stats.statsd.processing_time',
            b'stats.statsd.graphiteStats.calculationtime')
_LOAD = b'stats_counts.load.'
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
    #: Send LOAD_RATE lines/s across a flush once the names are held.
    loss: bool = False
    #: Run a CPU-bound process beside the daemon while the load runs.
    neighbour: bool = False

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

    def describe(self) -> str:
        return self.kind + (', idle deleted' if self.delete_idle else '') + (
            f', load sink ({FRAME_COUNT} frames)' if self.load_sink else '') + (
            f', {LOAD_RATE // 1000}k lines/s across a flush' if self.loss else '') + (
            ', a CPU-bound neighbour' if self.neighbour else '')


@dataclasses.dataclass
class Flush:
    """One flush as it arrived (memory in KiB, CPU in seconds)."""

    num_stats: float = 0
    processing_ms: float = 0
    calculation_ms: float = 0
    bytes: int = 0
    load: float = 0  # the sum of the stats_counts.load.* values
    cpu: float = 0  # the server's CPU time when it had arrived whole
    rss_kib: int = 0
    started: float = 0  # time.monotonic() of its first bytes
    ended: float = 0  # and of its last


@dataclasses.dataclass
class Result:
    """What one case measured for one daemon (memory in KiB, times in seconds)."""

    case: Case
    daemon: str
    baseline_kib: int
    steady_kib: int
    peak_kib: int
    send_seconds: float
    flushes: list[Flush]
    first: int  # index of the first flush holding every name
    first_cpu: float  # CPU of that flush, from the moment the names were in
    loss: dict[str, float] | None = None

    @property
    def bytes_per_name(self) -> float:
        return (self.steady_kib - self.baseline_kib) * 1024 / self.case.names

    @property
    def idle_cpu(self) -> list[float]:
        """CPU from one flush's end to the next's, after the first full one."""
        cpu = [f.cpu for f in self.flushes[self.first:]]
        return [b - a for a, b in itertools.pairwise(cpu)]

    @property
    def rss_series(self) -> list[int]:
        return [f.rss_kib for f in self.flushes[self.first:]]


def _cpu_seconds(pid: int) -> float:
    stat = pathlib.Path(f'/proc/{pid}/stat').read_text()
    fields = stat.rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _memory(pid: int) -> dict[str, int]:
    status = pathlib.Path(f'/proc/{pid}/status').read_text()
    return {k: int(v.split()[0]) for k, v in re.findall(r'^(Vm\w+):\s+(.*)$', status, re.M)}


class _Output:
    """Drains flushes (standard output or Graphite connections) and notes each.

    :param source: a pipe's file descriptor, or a listening socket whose
        connections are read one after the other (etsy connects per flush)
    :param pid: the server, whose CPU time and RSS are noted per flush
    """

    def __init__(self, source: int | socket.socket, pid: int) -> None:
        self._source = source
        self._pid = pid
        self._cond = threading.Condition()
        self.flushes: list[Flush] = []
        self._current = Flush()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        source = self._source
        if isinstance(source, socket.socket):
            with contextlib.suppress(OSError):
                while True:
                    connection, _ = source.accept()
                    with connection:
                        self._scan(connection.recv)
        else:
            self._scan(lambda size: os.read(source, size))

    def _scan(self, read: typing.Callable[[int], bytes]) -> None:
        tail = b''
        while chunk := read(1 << 20):
            if not self._current.bytes:
                self._current.started = time.monotonic()
            self._current.bytes += len(chunk)
            data = tail + chunk
            end = data.rfind(b'\n') + 1
            tail, data = data[end:], data[:end]
            found: dict[bytes, float] = {}
            for name in (*_WATCHED, _LOAD):
                at = data.find(name)
                while at >= 0:
                    if at == 0 or data[at - 1] == 10:  # at a line start
                        line_end = data.index(b'\n', at)
                        name_end = data.index(b' ', at, line_end)
                        value = float(data[name_end + 1:line_end].split(b' ')[0])
                        if name == _LOAD:
                            self._current.load += value
                        elif name_end == at + len(name):
                            found[name] = value
                    at = data.find(name, at + 1)
            current = self._current
            if _NUM_STATS in found:
                current.num_stats = found[_NUM_STATS]
            if _WATCHED[1] in found:
                current.processing_ms = found[_WATCHED[1]]
            if _WATCHED[2] in found:
                current.calculation_ms = found[_WATCHED[2]]
                # The last of the three: the flush is whole.
                current.ended = time.monotonic()
                with contextlib.suppress(OSError):
                    current.cpu = _cpu_seconds(self._pid)
                    current.rss_kib = _memory(self._pid)['VmRSS']
                with self._cond:
                    self.flushes.append(current)
                    self._current = Flush()
                    self._cond.notify_all()

    def wait(self, predicate: typing.Callable[[list[Flush]], bool],
             timeout: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.flushes), max(timeout, 0)):
                raise TimeoutError(f'no {what} within {timeout:.0f} s')


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind((HOST, 0))
        port: int = tcp.getsockname()[1]
        return port


def _connect(port: int, deadline: float) -> socket.socket:
    while True:
        try:
            return socket.create_connection((HOST, port), timeout=30)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _udp_drops(port: int) -> int:
    wanted = f':{port:04X}'
    for line in pathlib.Path('/proc/net/udp').read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(wanted):
            return int(fields[-1])
    return 0


def _until_idle(pid: int, deadline: float) -> float:
    """Wait until the server's CPU time stops rising; return it."""
    last = _cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = _cpu_seconds(pid)
        if now - last < 0.005:
            return now
        last = now
    return last


def _ours(case: Case, source: pathlib.Path, python: str,
          receiver: socket.socket) -> tuple[list[str], dict[str, str], bool]:
    command = [python, '-m', 'sprockets_statsd.server', '-b', f'{HOST}:0',
               '-f', str(case.flush_interval), '--admin', 'off',
               '--max-names', str(max(case.names * 2, 500_000))]
    if case.delete_idle:
        command.append('--delete-idle-stats')
    if case.load_sink:
        # With a load sink given, flushes no longer go to standard output:
        # they are read from a Graphite sink instead.
        command += ['-s', f'{HOST}:{receiver.getsockname()[1]}', '--http', f'{HOST}:0',
                    '--load-frame-length', str(case.flush_interval)]
    else:
        command += ['--http', 'off']
    env = {k: v for k, v in os.environ.items() if not k.startswith('STATSD_')}
    env['PYTHONPATH'] = str(source)
    return command, env, case.load_sink


def _etsy(case: Case, package: pathlib.Path, workdir: pathlib.Path,
          receiver: socket.socket, ports: tuple[int, int]) -> tuple[list[str], dict[str, str]]:
    config = {
        'servers': [{'server': './servers/udp', 'address': HOST, 'port': ports[0]},
                    {'server': './servers/tcp', 'address': HOST, 'port': ports[1]}],
        'mgmt_address': HOST, 'mgmt_port': _free_port(),
        'graphiteHost': HOST, 'graphitePort': receiver.getsockname()[1],
        'flushInterval': int(case.flush_interval * 1000),
        'deleteIdleStats': case.delete_idle,
        'backends': ['./backends/graphite'], 'automaticConfigReload': False,
    }
    path = workdir / f'etsy-{time.monotonic_ns()}.js'
    path.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if k != 'BENCH_UDP_RECEIVE_BUFFER'}
    return ['node', str(HERE / 'etsy' / 'run.js'), str(package), str(path)], env


def measure(case: Case, daemon: str, source: pathlib.Path, python: str,
            etsy: pathlib.Path | None = None, interval_scale: float = 1.0) -> Result:
    """Run one case against one daemon (``ours`` or ``etsy``); see the module's notes."""
    if interval_scale != 1:
        case = dataclasses.replace(case, flush_interval=case.flush_interval * interval_scale)
    deadline = time.monotonic() + CASE_TIMEOUT
    with contextlib.ExitStack() as stack:
        receiver = stack.enter_context(socket.create_server((HOST, 0)))
        workdir = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if daemon == 'ours':
            command, env, to_receiver = _ours(case, source, python, receiver)
        else:
            assert etsy is not None
            ports = (_free_port(), _free_port())
            command, env = _etsy(case, etsy, workdir, receiver, ports)
            to_receiver = True
        server = stack.enter_context(subprocess.Popen(
            command, cwd=source, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        stack.callback(server.kill)
        assert server.stdout is not None
        assert server.stderr is not None
        if daemon == 'ours':
            port = 0
            while not port:
                line = server.stderr.readline().decode(errors='replace')
                if not line:
                    raise RuntimeError(f'the server exited with {server.wait()}')
                if match := _LISTENING.search(line):
                    port = int(match[3])
            udp_port = tcp_port = port
        else:
            udp_port, tcp_port = ports
        # Keep draining the other streams so that output never blocks them.
        for stream in (server.stderr, server.stdout) if to_receiver else (server.stderr,):
            threading.Thread(target=stream.read, daemon=True).start()
        output = _Output(receiver if to_receiver else server.stdout.fileno(), server.pid)
        sock = stack.enter_context(_connect(tcp_port, deadline))
        # The names go in right after a flush, so that the next one holds
        # them all and the CPU of ingesting them is over before it.
        output.wait(lambda f: len(f) >= 1, deadline - time.monotonic(), 'first flush')
        baseline = _memory(server.pid)['VmRSS']
        started = time.monotonic()
        for chunk in case.lines():
            sock.sendall(chunk)
        sent = time.monotonic() - started
        cpu_in = _until_idle(server.pid, deadline)
        names = case.names

        def full(flushes: list[Flush]) -> list[int]:
            return [i for i, f in enumerate(flushes) if f.num_stats >= names]

        output.wait(lambda f: bool(full(f)), deadline - time.monotonic(), 'flush with every name')
        first = full(output.flushes)[0]
        first_cpu = output.flushes[first].cpu - cpu_in
        if case.delete_idle:
            # Flushed once with the names, then they are idle and deleted.
            output.wait(lambda f: f[-1].num_stats < names, deadline - time.monotonic(),
                        'flush without the names')
        else:
            # Several flushes with every name; with the load sink, enough
            # more that every frame it keeps holds every name.
            settled = FRAME_COUNT + 1 if case.load_sink else SETTLE_FLUSHES
            output.wait(lambda f: len(f) >= first + settled, deadline - time.monotonic(),
                        f'{settled} flushes with every name')
        loss = None
        if case.loss:
            loss = _loss(case, output, server.pid, udp_port, deadline, case.neighbour)
        time.sleep(case.flush_interval / 2)
        memory = _memory(server.pid)
        return Result(case, daemon, baseline, memory['VmRSS'], memory['VmHWM'], sent,
                      list(output.flushes), first, first_cpu, loss)
    raise AssertionError('unreachable')


def _loss(case: Case, output: _Output, pid: int, port: int, deadline: float,
          neighbour: bool = False) -> dict[str, float]:
    """Send LOAD_RATE lines/s across the next flush; what arrived of it.

    The kernel's drops are sampled as the load runs and split into those
    before the flush's output began, while it came, and after: drops that
    start with the load, before the flush, mean the daemon lacked CPU, not
    that the flush held it up.  With `neighbour`, a CPU-bound process runs
    beside the daemon while the load does.
    """
    seen = len(output.flushes)
    output.wait(lambda f: len(f) > seen, deadline - time.monotonic(), 'flush')
    # Flushes end at most a few seconds after they start; the next one
    # starts an interval after this one did.
    time.sleep(max(case.flush_interval - LOAD_LEAD - 1.0, 0))
    seen = len(output.flushes)
    samples = [(time.monotonic(), _udp_drops(port))]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(_DROP_SAMPLE):
            samples.append((time.monotonic(), _udp_drops(port)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    busy = (subprocess.Popen([sys.executable, '-c', 'while True: pass'])
            if neighbour else None)
    command = [sys.executable, str(HERE / '_loadgen.py'), '--port', str(port),
               '--kind', 'load', '--lines', '1', '--rate', str(LOAD_RATE),
               '--duration', str(LOAD_SECONDS)]
    try:
        result = json.loads(subprocess.run(
            command, capture_output=True, text=True, check=True,
            timeout=LOAD_SECONDS * 2 + 60).stdout)
        # Two more flushes carry the rest of the load.
        output.wait(lambda f: len(f) >= seen + 3, deadline - time.monotonic(),
                    'flushes after load')
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
        done.set()
        sampler.join()
    samples.append((time.monotonic(), _udp_drops(port)))
    flush = output.flushes[seen]
    split = {'before': 0, 'during': 0, 'after': 0}
    for (_, before), (at, after) in itertools.pairwise(samples):
        part = 'before' if at <= flush.started else 'during' if at <= flush.ended else 'after'
        split[part] += after - before
    received = sum(f.load for f in output.flushes[seen:])
    return {'sent': result['sent'], 'received': received,
            'kernel_drops': samples[-1][1] - samples[0][1],
            **{f'drops_{part}': drops for part, drops in split.items()},
            'flush_seconds': flush.ended - flush.started,
            'loss': 1 - received / result['sent'], 'rate': result['rate']}


def _export(ref: str, workdir: pathlib.Path) -> pathlib.Path:
    """Extract the package as committed at `ref` (``git archive``)."""
    archive = subprocess.run(['git', 'archive', ref, 'sprockets_statsd'], cwd=HERE.parent,
                             capture_output=True, check=True, timeout=60).stdout
    subprocess.run(['tar', '-x', '-C', str(workdir)], input=archive, check=True, timeout=60)
    return workdir


def _mib(kib: float) -> str:
    return f'{kib / 1024:,.1f}'


def _seconds(values: list[float]) -> str:
    if not values:
        return '-'
    low, high = min(values), max(values)
    return f'{low:.2f}' if high - low < 0.005 else f'{low:.2f} to {high:.2f}'


def report(results: list[Result]) -> str:
    """The results as a Markdown table."""
    rows = [
        '| names | type | daemon | flush interval s | RSS idle MiB | steady RSS MiB '
        '| bytes/name | peak RSS (VmHWM) MiB | peak / steady | RSS after each flush MiB '
        '| flush CPU s, first | flush CPU s, idle | flush output MB | send s |',
        '|--:|---|---|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|',
    ]
    for r in results:
        series = ' → '.join(f'{kib / 1024:.0f}' for kib in r.rss_series)
        full = r.flushes[r.first]
        rows.append(
            f'| {r.case.names:,} | {r.case.describe()} | {r.daemon} '
            f'| {r.case.flush_interval:g} | {_mib(r.baseline_kib)} | {_mib(r.steady_kib)} '
            f'| {r.bytes_per_name:,.0f} | {_mib(r.peak_kib)} '
            f'| {r.peak_kib / r.steady_kib:.2f} | {series} '
            f'| {r.first_cpu:.2f} | {_seconds(r.idle_cpu)} | {full.bytes / 1e6:,.1f} '
            f'| {r.send_seconds:.1f} |'
        )
    lossy = [r for r in results if r.loss]
    if lossy:
        rows += ['', '| names | case | daemon | lines sent | lines flushed | loss '
                 '| kernel drops (datagrams) | of which before / during / after the flush '
                 '| flush output s | generator lines/s |',
                 '|--:|---|---|--:|--:|--:|--:|---|--:|--:|']
        for r in lossy:
            loss = typing.cast(dict[str, float], r.loss)
            rows.append(
                f'| {r.case.names:,} | {r.case.describe()} | {r.daemon} | {loss["sent"]:,.0f} '
                f'| {loss["received"]:,.0f} | {loss["loss"]:.2%} '
                f'| {loss["kernel_drops"]:,.0f} | {loss["drops_before"]:,.0f} / '
                f'{loss["drops_during"]:,.0f} / {loss["drops_after"]:,.0f} '
                f'| {loss["flush_seconds"]:.2f} | {loss["rate"]:,.0f} |')
    return '\n'.join(rows)


def cases(quick: bool, timers: bool, load_sink: bool, delete_idle: bool,
          loss: bool, neighbour: bool = False) -> list[Case]:
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
    if loss:
        chosen += [Case('counter', n, max(2.0, n / 100_000), loss=True) for n in sizes[-1:]]
        if neighbour:
            chosen += [Case('counter', n, max(2.0, n / 100_000), loss=True, neighbour=True)
                       for n in sizes[-1:]]
    return chosen


def install_etsy(directory: pathlib.Path) -> pathlib.Path | None:
    """etsy statsd's package directory, installed by bench/server.py's helper."""
    sys.path.insert(0, str(HERE))
    from server import install_etsy as install  # type: ignore[import-not-found]

    found: pathlib.Path | None = install(directory)
    return found


def main(argv: list[str] | None = None) -> int:
    """Run every case and print the table; the exit status is 0."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--quick', action='store_true', help='10k and 50k names only')
    parser.add_argument('--no-timers', action='store_true', help='no timer cases')
    parser.add_argument('--no-load-sink', action='store_true', help='no load sink cases')
    parser.add_argument('--delete-idle', action='store_true',
                        help='also measure the largest size with --delete-idle-stats')
    parser.add_argument('--neighbour', action='store_true',
                        help='with --loss, also a loss case beside a CPU-bound process')
    parser.add_argument('--loss', action='store_true',
                        help=f'also measure the loss of {LOAD_RATE:,} lines/s across a flush '
                        'of the largest size')
    parser.add_argument('--only', help='run only the cases whose description contains this '
                        '(e.g. "1,000,000 counter")')
    parser.add_argument('--no-etsy', action='store_true', help='measure our server only')
    parser.add_argument('--etsy-interval-scale', type=float, default=2.0,
                        help="etsy statsd's flush interval relative to ours (default 2: its "
                        'flushes of 1M names take longer than our interval)')
    parser.add_argument('--etsy-dir', type=pathlib.Path,
                        default=pathlib.Path(tempfile.gettempdir()) / 'sprockets-statsd-bench-etsy',
                        help='where etsy statsd is (or gets) installed with npm')
    parser.add_argument('--ref', help='measure the server as committed at this git ref '
                        '(default: the working tree)')
    parser.add_argument('--python', default=sys.executable,
                        help='the interpreter that runs the server (default: this one)')
    args = parser.parse_args(argv)
    etsy = None if args.no_etsy or not shutil.which('node') else install_etsy(args.etsy_dir)
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
              f'{platform.machine()}, {os.cpu_count()} CPUs, load average '
              f'{" ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])}', flush=True)
        results = []
        for case in cases(args.quick, not args.no_timers, not args.no_load_sink,
                          args.delete_idle, args.loss, args.neighbour):
            if args.only and args.only not in f'{case.names:,} {case.describe()}':
                continue
            daemons = ['ours']
            if etsy is not None and not case.load_sink:
                daemons.append('etsy')
            for daemon in daemons:
                started = time.monotonic()
                scale = args.etsy_interval_scale if daemon == 'etsy' else 1.0
                result = measure(case, daemon, source, args.python, etsy, scale)
                results.append(result)
                print(f'  {daemon}: {case.kind} x {case.names:,}: '
                      f'{time.monotonic() - started:.1f} s', file=sys.stderr, flush=True)
                print(report([result]).splitlines()[-1], file=sys.stderr, flush=True)
        print(report(results))
    return 0


if __name__ == '__main__':
    sys.exit(main())
