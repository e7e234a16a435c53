"""Server ingest benchmark: our statsd server against etsy statsd, side by side.

Strategy: both daemons run as subprocesses on loopback, flushing every
second to a fake Graphite receiver in this process (``_carbon.py``) that
sums the ``stats_counts.load.*`` values they flush.  A separate load
generator process (``_loadgen.py``, ``sendmmsg`` bursts, paced) sends
counter increments at a series of fixed rates, at 1 and at 20 lines per
datagram; delivery is what the daemon flushed over what was sent, loss is
one minus that.  The rates alternate between the daemons (ours, then etsy,
at each rate) so that a change in the shared machine's load hits both
alike.  A daemon's series stops after two failing steps in a row (loss of
1% or more), and all series stop where the generator cannot keep up (a
step is valid only if the generator sent every datagram at >= 97% of the
target rate).  Both daemons get the same SO_RCVBUF: ours through
``--udp-receive-buffer``, etsy statsd (which has no such option) through
``etsy/run.js``, which passes Node's ``recvBufferSize`` to its socket.

A second phase gives each daemon, fresh, 100k distinct names (80k
counters, 20k timers) with a 5 s flush interval, then reports the flush's
size and time (the daemon's own ``calculationtime``, ``processing_time``
and ``graphiteStats.flush_time``, and the receiver's first-to-last byte),
its RSS, and the loss of a steady 100k lines/s (1 line per datagram) load
across the next 100k-name flush.

The daemon runs pinned to CPU 0, the generator and this process to CPU 1
(``--no-pin`` to let the scheduler place them).  Run from the repository
root::

    .venv/bin/python bench/server.py            # the full run, ~5 minutes
    .venv/bin/python bench/server.py --quick    # a smoke test, ~1 minute
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import platform
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import time
import typing

import _carbon  # type: ignore[import-not-found]  # bench/ is the script's directory
from _report import LOSS_LIMIT, report  # type: ignore[import-not-found]

__all__ = ['Daemon', 'main']

HERE = pathlib.Path(__file__).resolve().parent
HOST = '127.0.0.1'
#: A step counts only if the generator reached this share of its target.
GENERATOR_SHARE = 0.97
SERIES = {
    1: [50_000, 75_000, 100_000, 125_000, 150_000, 175_000, 200_000, 250_000, 300_000],
    20: [100_000, 200_000, 300_000, 400_000, 500_000, 600_000, 800_000, 1_000_000],
}
QUICK_SERIES = {1: [20_000, 50_000], 20: [100_000]}
UNIQUE_NAMES = 100_000
UNIQUE_FLUSH = 5.0
UNIQUE_LOAD = 100_000  # lines/s, 1 line per datagram, during a 100k-name flush
UNIQUE_LOAD_SECONDS = 5.0
UNIQUE_LEAD = 2.0  # seconds of load before the flush starts
ETSY_VERSION = 'statsd@0.9.0'
#: A step during which other processes took more cores than this is repeated.
FOREIGN_LIMIT = 0.25
ATTEMPTS = 3
RETRY_PAUSE = 2.0
_TICK = os.sysconf('SC_CLK_TCK')


def _sysctl(name: str) -> str:
    try:
        return pathlib.Path('/proc/sys', *name.split('.')).read_text().strip()
    except OSError:
        return '?'


def _run(*command: str) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30,
                              check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return '?'


def _loadavg() -> str:
    return ' '.join(pathlib.Path('/proc/loadavg').read_text().split()[:3])


def machine() -> dict[str, str]:
    """What the figures depend on: CPUs, versions, kernel buffers, load."""
    return {
        'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'nproc': _run('nproc'),
        'lscpu': '\n'.join(_run('lscpu').splitlines()[:15]),
        'kernel': platform.release(),
        'python': platform.python_version(),
        'node': _run('node', '--version') if shutil.which('node') else 'absent',
        'rmem_default': _sysctl('net.core.rmem_default'),
        'rmem_max': _sysctl('net.core.rmem_max'),
        'loadavg': _loadavg(),
    }


def _free_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1 (ours binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return port
    raise RuntimeError('no free port')


def _udp_socket_stats(port: int) -> tuple[int, int] | None:
    """``(rx_queue bytes, drops)`` of the UDP socket bound to `port`."""
    wanted = f':{port:04X}'
    with contextlib.suppress(OSError):
        for line in pathlib.Path('/proc/net/udp').read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(wanted):
                return int(fields[4].split(':')[1], 16), int(fields[-1])
    return None


def install_etsy(directory: pathlib.Path) -> pathlib.Path | None:
    """etsy statsd's package directory, installed with npm if needed."""
    package = directory / 'node_modules' / 'statsd'
    if (package / 'stats.js').exists():
        return package
    if not (shutil.which('node') and shutil.which('npm')):
        print('node or npm is missing: etsy statsd is skipped', file=sys.stderr)
        return None
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / 'etsy' / 'package.json', directory / 'package.json')
    print(f'installing {ETSY_VERSION} into {directory} ...', file=sys.stderr)
    try:
        subprocess.run(['npm', 'install', '--no-audit', '--no-fund', '--omit=optional',
                        '--no-package-lock'], cwd=directory, check=True, timeout=300,
                       stdout=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f'npm install failed ({exc}): etsy statsd is skipped', file=sys.stderr)
        return None
    return package if (package / 'stats.js').exists() else None


class Daemon:
    """One statsd daemon under test, as a subprocess.

    :param kind: ``ours`` or ``etsy``
    :param carbon: where it flushes
    :param flush_interval: seconds
    :param receive_buffer: SO_RCVBUF for its UDP socket, bytes
    :param workdir: for its config and log files
    :param etsy_package: etsy statsd's package directory
    :param cpu: pin the process to this CPU
    :param source: import our server from this directory instead of the
        installed (editable) package
    """

    def __init__(self, kind: str, carbon: _carbon.CarbonReceiver, flush_interval: float,
                 receive_buffer: int, workdir: pathlib.Path,
                 etsy_package: pathlib.Path | None = None, cpu: int | None = None,
                 source: pathlib.Path | None = None) -> None:
        self.kind = kind
        self.carbon = carbon
        self.flush_interval = flush_interval
        self.receive_buffer = receive_buffer
        self.workdir = workdir
        self.etsy_package = etsy_package
        self.cpu = cpu
        self.source = source
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / f'{kind}-{time.monotonic_ns()}.log'

    def _command(self) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ)
        if self.kind == 'ours':
            if self.source is not None:
                env['PYTHONPATH'] = os.pathsep.join(
                    filter(None, [str(self.source), env.get('PYTHONPATH')]))
            return [sys.executable, '-m', 'sprockets_statsd.server',
                    '-b', f'{HOST}:{self.port}', '-s', f'{HOST}:{self.carbon.port}',
                    '-f', f'{self.flush_interval:g}',
                    '--udp-receive-buffer', str(self.receive_buffer)], env
        assert self.etsy_package is not None
        template = string.Template((HERE / 'etsy' / 'config.js.in').read_text())
        config = self.log.with_suffix('.config.js')
        config.write_text(template.substitute(
            udp_port=self.port, mgmt_port=_free_port(), carbon_port=self.carbon.port,
            flush_ms=int(self.flush_interval * 1000)))
        env['BENCH_UDP_RECEIVE_BUFFER'] = str(self.receive_buffer)
        return ['node', str(HERE / 'etsy' / 'run.js'), str(self.etsy_package), str(config)], env

    def start(self, timeout: float = 20.0) -> None:
        """Start the daemon and wait until its UDP socket is bound."""
        self.port = _free_port()
        command, env = self._command()
        cpu = self.cpu

        def pin() -> None:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        with self.log.open('wb') as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            env=env, preexec_fn=pin,
                                            cwd=self.source or HERE.parent)
        if not _carbon.wait_for(lambda: self.udp_stats() is not None
                                or self.process.poll() is not None, timeout):
            raise RuntimeError(f'{self.kind} did not bind UDP {self.port} in {timeout} s')
        if self.process.poll() is not None:
            raise RuntimeError(f'{self.kind} exited: {self.log.read_text()[-2000:]}')

    def udp_stats(self) -> tuple[int, int] | None:
        """``(rx_queue bytes, drops)`` of the daemon's UDP socket."""
        return _udp_socket_stats(self.port)

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak), in KiB."""
        assert self.process is not None
        found = {}
        with contextlib.suppress(OSError):
            for line in pathlib.Path(f'/proc/{self.process.pid}/status').read_text().splitlines():
                name, _, value = line.partition(':')
                if name in ('VmRSS', 'VmHWM'):
                    found[name] = int(value.split()[0])
        return found

    def cpu_seconds(self) -> float:
        """User and system CPU the daemon (all its threads) used so far."""
        if self.process is None:
            return 0.0
        try:
            stat = pathlib.Path(f'/proc/{self.process.pid}/stat').read_text()
        except OSError:
            return 0.0
        fields = stat.rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; always leaves no process behind."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def generate(port: int, rate_dps: float, duration: float, lines: int, cpu: int | None,
             kind: str = 'load', count: int | None = None) -> dict[str, typing.Any]:
    """Run the load generator once and return its result."""
    command = [sys.executable, str(HERE / '_loadgen.py'), '--port', str(port), '--kind', kind,
               '--lines', str(lines), '--rate', f'{rate_dps:.3f}', '--duration', f'{duration:g}']
    if count is not None:
        command += ['--count', str(count)]
    if cpu is not None:
        command += ['--cpu', str(cpu)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration * 2 + 60,
                          check=True)
    result: dict[str, typing.Any] = json.loads(done.stdout)
    return result


def _machine_cpu() -> tuple[float, float]:
    """CPU seconds all tasks spent in user and system mode since boot, and
    the seconds the hypervisor gave our virtual CPUs to someone else (steal)."""
    fields = pathlib.Path('/proc/stat').read_text().split('\n', 1)[0].split()
    return sum(int(v) for v in fields[1:4]) / _TICK, int(fields[8]) / _TICK


def _settle(daemon: Daemon, before: float, sent_lines: int) -> None:
    """Wait until the daemon flushed all it will ever flush of a step."""
    carbon = daemon.carbon
    flush = daemon.flush_interval
    # Lossless steps end as soon as everything is flushed; otherwise wait
    # until the kernel queue is empty and two more flushes have arrived.
    if not _carbon.wait_for(lambda: carbon.total - before >= sent_lines, 2 * flush + 1):
        _carbon.wait_for(lambda: (daemon.udp_stats() or (0, 0))[0] == 0, 30)
        seen = carbon.flush_count()
        _carbon.wait_for(lambda: carbon.flush_count() >= seen + 2, 3 * flush + 5)


def step(daemon: Daemon, peers: list[Daemon], lines: int, rate: int, duration: float,
         cpu: int | None) -> dict[str, typing.Any]:
    """Send `rate` lines/s for `duration` s and measure what was flushed.

    Besides the loss, a step records the CPU the daemon used per line
    received and how many cores *other* processes took while the load ran
    (the machine's user+system time minus that of the daemons, the
    generator and this process), so that a step spoiled by a neighbour
    can be told apart and repeated.
    """
    carbon = daemon.carbon
    before = carbon.total
    bad_before = carbon.bad_lines
    drops_before = (daemon.udp_stats() or (0, 0))[1]
    load = _loadavg()
    ours_before = sum(p.cpu_seconds() for p in peers) + time.process_time()
    machine_before = _machine_cpu()
    daemon_before = daemon.cpu_seconds()
    started = time.monotonic()
    sent = generate(daemon.port, rate / lines, duration, lines, cpu)
    wall = time.monotonic() - started
    daemon_sending = daemon.cpu_seconds() - daemon_before
    ours = sum(p.cpu_seconds() for p in peers) + time.process_time() - ours_before + sent['cpu']
    machine_after = _machine_cpu()
    foreign = max(0.0, machine_after[0] - machine_before[0] - ours) / wall
    steal = (machine_after[1] - machine_before[1]) / wall
    sent_lines = sent['sent'] * lines
    _settle(daemon, before, sent_lines)
    received = carbon.total - before
    valid = (sent['sent'] == sent['target']
             and sent['rate'] >= GENERATOR_SHARE * rate / lines)
    return {
        'daemon': daemon.kind, 'lines': lines, 'rate': rate, 'valid': valid,
        'generator_rate': sent['rate'] * lines, 'sent': sent_lines, 'received': received,
        'loss': 1 - received / sent_lines if sent_lines else 1.0,
        'kernel_drops': ((daemon.udp_stats() or (0, 0))[1] - drops_before) * lines,
        'bad_lines': carbon.bad_lines - bad_before,
        'daemon_busy': daemon_sending / wall,
        'cpu_us_per_line': (daemon.cpu_seconds() - daemon_before) / max(received, 1) * 1e6,
        'foreign_cores': foreign,
        'steal_cores': steal,
        'loadavg': load,
    }


def series(daemons: list[Daemon], lines: int, rates: list[int], duration: float,
           cpu: int | None) -> list[dict[str, typing.Any]]:
    """Step every daemon through `rates`, alternating, with the stop rules.

    A step that failed (loss of 1% or more), during which the generator
    fell short, or during which other processes took more than
    :data:`FOREIGN_LIMIT` cores is repeated, up to :data:`ATTEMPTS` times in
    all; the best valid attempt counts.  On a shared virtual machine a
    single stall of the daemon's CPU (a neighbour, the hypervisor's steal)
    longer than its receive buffer lasts fails a step, so best-of-N is the
    daemon's capacity and the attempts column shows how often it took a
    second try; both daemons get the same treatment.
    """
    results = []
    failures = dict.fromkeys((d.kind for d in daemons), 0)
    for rate in rates:
        active = [d for d in daemons if failures[d.kind] < 2]
        if not active:
            break
        short = False
        for daemon in active:
            attempts = []
            for _ in range(ATTEMPTS):
                row = step(daemon, daemons, lines, rate, duration, cpu)
                print(_step_line(row), file=sys.stderr, flush=True)
                attempts.append(row)
                if (row['valid'] and row['foreign_cores'] <= FOREIGN_LIMIT
                        and row['loss'] < LOSS_LIMIT):
                    break
                time.sleep(RETRY_PAUSE)
            row = min(attempts, key=lambda r: (not r['valid'], r['loss'], r['foreign_cores']))
            row['attempts'] = len(attempts)
            results.append(row)
            if not row['valid']:
                short = True
            failures[daemon.kind] = failures[daemon.kind] + 1 if row['loss'] >= LOSS_LIMIT else 0
        if short:
            print(f'generator fell short at {rate} lines/s: series ends', file=sys.stderr)
            break
    return results


def unique_names(daemon: Daemon, names: int, cpu: int | None,
                 load_rate: int) -> dict[str, typing.Any]:
    """Flush time, RSS and loss under load with `names` distinct names.

    The names go out at once (20 per datagram, 100k lines/s); the first
    flush holding them gives the flush figures, and a steady load of
    `load_rate` lines/s (1 per datagram) runs from two seconds before the
    next flush to three seconds after it.
    """
    carbon = daemon.carbon
    flush = daemon.flush_interval
    out: dict[str, typing.Any] = {'daemon': daemon.kind, 'names': names,
                                  'rss_idle_kib': daemon.memory().get('VmRSS')}
    datagrams = names // 20
    generate(daemon.port, datagrams / 1.0, 1.0, 20, cpu, kind='unique', count=datagrams)

    def big() -> list[_carbon.Flush]:
        return [f for f in carbon.flushes() if f.internal.get('statsd.numStats', 0) >= names]

    if not _carbon.wait_for(lambda: len(big()) >= 1, 3 * flush + 30):
        out['error'] = f'no flush with {names} names arrived'
        return out
    # Complete once nothing more arrived for a moment.
    _carbon.wait_for(lambda: (carbon.flushes()[-1].last < time.monotonic() - 0.5), 2 * flush)
    first = big()[0]
    out['flush_lines'] = first.lines
    out['flush_bytes'] = first.bytes
    out['flush_arrival_s'] = first.last - first.first
    out['num_stats'] = first.internal.get('statsd.numStats')
    out['calculationtime_ms'] = first.internal.get('stats.statsd.graphiteStats.calculationtime')
    out['processing_time_ms'] = first.internal.get('stats.statsd.processing_time')
    out['rss_after_flush_kib'] = daemon.memory().get('VmRSS')
    # The flush's timestamp is its start, rounded to the second: the next
    # one starts about one interval later.
    next_flush = first.timestamp + flush - time.time() + time.monotonic()
    delay = next_flush - UNIQUE_LEAD - time.monotonic()
    if delay < 0:
        delay += flush
    time.sleep(delay)
    before = carbon.total
    drops_before = (daemon.udp_stats() or (0, 0))[1]
    out['loadavg'] = _loadavg()
    machine_before = _machine_cpu()
    daemon_before = daemon.cpu_seconds()
    ours_before = time.process_time()
    flushes_before = carbon.flush_count()
    started = time.monotonic()
    sent = generate(daemon.port, load_rate, UNIQUE_LOAD_SECONDS, 1, cpu)
    wall = time.monotonic() - started
    daemon_cpu = daemon.cpu_seconds() - daemon_before
    ours = daemon_cpu + time.process_time() - ours_before + sent['cpu']
    machine_after = _machine_cpu()
    out['load_foreign_cores'] = max(0.0, machine_after[0] - machine_before[0] - ours) / wall
    out['load_steal_cores'] = (machine_after[1] - machine_before[1]) / wall
    out['load_daemon_busy'] = daemon_cpu / wall
    out['load_flushes'] = carbon.flush_count() - flushes_before
    _settle(daemon, before, sent['sent'])
    received = carbon.total - before
    out['load_rate'] = load_rate
    out['load_generator_rate'] = sent['rate']
    out['load_valid'] = (sent['sent'] == sent['target']
                         and sent['rate'] >= GENERATOR_SHARE * load_rate)
    out['load_loss'] = 1 - received / sent['sent']
    out['load_kernel_drops'] = (daemon.udp_stats() or (0, 0))[1] - drops_before
    flushes = big()
    if len(flushes) > 1:
        # graphiteStats describe the previous send: the first big flush.
        out['flush_time_ms'] = flushes[1].internal.get('stats.statsd.graphiteStats.flush_time')
        out['flush_arrival_under_load_s'] = flushes[1].last - flushes[1].first
    out['rss_peak_kib'] = daemon.memory().get('VmHWM')
    return out


def _step_line(row: dict[str, typing.Any]) -> str:
    return (f"{row['daemon']:5} {row['lines']:2} l/dg {row['rate']:>9,} l/s: generator "
            f"{row['generator_rate']:>9,.0f}{'' if row['valid'] else ' (short)'}, "
            f"loss {row['loss']:7.2%}, kernel drops {row['kernel_drops']:,}, "
            f"bad lines {row['bad_lines']:,.0f}, busy {row['daemon_busy']:.0%}, "
            f"{row['cpu_us_per_line']:.2f} µs/line, others {row['foreign_cores']:.2f} cores, "
            f"load {row['loadavg']}")


def calibrate(duration: float, cpu: int | None) -> dict[int, float]:
    """The generator's unpaced rate into a socket nobody reads."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind((HOST, 0))
        port = sink.getsockname()[1]
        return {lines: generate(port, 0, duration, lines, cpu)['rate'] for lines in (1, 20)}


def _export(ref: str, workdir: pathlib.Path) -> pathlib.Path:
    """Extract the package as committed at `ref` (``git archive``)."""
    target = workdir / f'src-{ref.replace("/", "_")}'
    target.mkdir()
    archive = subprocess.run(['git', 'archive', ref, 'sprockets_statsd'], cwd=HERE.parent,
                             capture_output=True, check=True, timeout=60).stdout
    subprocess.run(['tar', '-x', '-C', str(target)], input=archive, check=True, timeout=60)
    return target


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the report; the exit status is 0."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--quick', action='store_true', help='a tiny run to check the script')
    parser.add_argument('--duration', type=float, default=4.0, help='seconds per step')
    parser.add_argument('--receive-buffer', type=int, default=None,
                        help='SO_RCVBUF for both daemons (default: net.core.rmem_max)')
    parser.add_argument('--stock-etsy-buffer', action='store_true',
                        help="leave etsy statsd's receive buffer at rmem_default")
    parser.add_argument('--no-etsy', action='store_true', help='benchmark our server only')
    parser.add_argument('--etsy-dir', type=pathlib.Path,
                        default=pathlib.Path(tempfile.gettempdir()) / 'sprockets-statsd-bench-etsy',
                        help='where etsy statsd is (or gets) installed with npm')
    parser.add_argument('--ours-ref', metavar='REF',
                        help='run our server as committed at this git ref (default: the '
                        'working tree)')
    parser.add_argument('--ours-buffer', type=int, default=8 * 1024 * 1024,
                        help='also run the 100k-name phase for our server with this SO_RCVBUF '
                        '(default 8 MiB, the server\'s default; above rmem_max it needs root); '
                        '0 to skip')
    parser.add_argument('--shapes', default='1,20', help='lines per datagram to test')
    parser.add_argument('--skip-unique', action='store_true', help='skip the 100k-name phase')
    parser.add_argument('--no-pin', action='store_true', help='do not pin processes to CPUs')
    parser.add_argument('--json', type=pathlib.Path, help='also write the raw results here')
    args = parser.parse_args(argv)
    command = 'python bench/server.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
    info = machine()  # before pinning: nproc counts the CPUs this process may use
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and hasattr(os, 'sched_setaffinity')
    daemon_cpu, load_cpu = (0, 1) if pin else (None, None)
    if pin:
        os.sched_setaffinity(0, {1})
    duration = 1.0 if args.quick else args.duration
    rates = QUICK_SERIES if args.quick else SERIES
    names = 10_000 if args.quick else UNIQUE_NAMES
    load_rate = UNIQUE_LOAD // 10 if args.quick else UNIQUE_LOAD
    shapes = [int(s) for s in args.shapes.split(',') if s.strip()]
    buffer = args.receive_buffer or int(_sysctl('net.core.rmem_max') or 4 << 20)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix='statsd-bench-'))
    source = _export(args.ours_ref, workdir) if args.ours_ref else None
    etsy = None if args.no_etsy else install_etsy(args.etsy_dir)
    print(f"load average {info['loadavg']}; receive buffer {buffer} bytes; logs in {workdir}",
          file=sys.stderr)
    calibration = calibrate(0.5 if args.quick else 1.0, load_cpu)
    rows: list[dict[str, typing.Any]] = []
    unique: list[dict[str, typing.Any]] = []
    started: list[Daemon] = []
    receivers: list[_carbon.CarbonReceiver] = []

    def daemon(kind: str, flush: float, size: int | None = None) -> Daemon:
        carbon = _carbon.CarbonReceiver()
        carbon.start()
        receivers.append(carbon)
        if size is None:
            size = 0 if (kind == 'etsy' and args.stock_etsy_buffer) else buffer
        made = Daemon(kind, carbon, flush, size, workdir, etsy, daemon_cpu, source)
        started.append(made)
        made.start()
        return made

    kinds = ['ours'] + (['etsy'] if etsy is not None else [])
    try:
        for lines in shapes:
            pair = [daemon(kind, 1.0) for kind in kinds]
            rows += series(pair, lines, rates[lines], duration, load_cpu)
            for d in pair:
                d.stop()
        if not args.skip_unique:
            # Ours once more with its own default buffer, when that differs.
            runs = [(kind, buffer) for kind in kinds]
            if args.ours_buffer and args.ours_buffer != buffer:
                runs.append(('ours', args.ours_buffer))
            for kind, size in runs:
                d = daemon(kind, UNIQUE_FLUSH, size)
                result = unique_names(d, names, load_cpu, load_rate)
                result['label'] = f'{kind}, {size / 1048576:g} MiB buffer'
                print(json.dumps(result), file=sys.stderr, flush=True)
                unique.append(result)
                d.stop()
    finally:
        for d in started:
            d.stop()
        for carbon in receivers:
            carbon.close()
    info['loadavg_end'] = _loadavg()
    print(report(info, command, rows, unique, calibration))
    if any(r['bad_lines'] for r in rows):
        print('\nWARNING: a daemon counted bad lines: its figures are not valid.')
    if args.json:
        args.json.write_text(json.dumps({'machine': info, 'command': command, 'steps': rows,
                                         'unique': unique, 'calibration': calibration},
                                        indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
