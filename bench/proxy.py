"""What etsy statsd's proxy.js costs per line, beside our server.

Strategy: one of our servers runs as in ``server.py`` (flushing every
second to the fake Graphite receiver of ``_carbon.py``), with its admin
console on a free port; etsy statsd's ``proxy.js`` (``bench/etsy``, as
``scripts/test`` installs it) runs in front of it with that server as its
only node.  At each rate the same paced load (``_loadgen.py``) goes once
straight to the server and once through the proxy; each step records the
loss and the CPU time per line of the server and of the proxy, read from
``/proc/<pid>/stat``.  The proxy parses every datagram, hashes each line's
name and sends each line on as a datagram of its own, so behind it the
server always sees one line per datagram, whatever the clients packed.

Loss is counted where it happens: the ``drops`` of each daemon's UDP
socket in ``/proc/net/udp``.  The proxy runs as operators run it, with the
kernel's default receive buffer (``net.core.rmem_default``), or with
``--proxy-buffer BYTES`` through ``etsy/run.js``, which passes Node's
``recvBufferSize`` to its sockets (capped at ``net.core.rmem_max``).  CPU
per line is per line the server received.

The server runs pinned to CPU 0, the proxy to CPU 1, the generator and
this process unpinned (``--no-pin`` pins nothing).  Run from the
repository root::

    .venv/bin/python bench/proxy.py            # ~4 minutes
    .venv/bin/python bench/proxy.py --quick    # a smoke test, ~40 s
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import socket
import sys
import tempfile
import typing

import _carbon  # type: ignore[import-not-found]  # bench/ is the script's directory
from server import HOST, Daemon, generate, machine  # type: ignore[import-not-found]

__all__ = ['Node', 'Proxy', 'main']

HERE = pathlib.Path(__file__).resolve().parent
ETSY = HERE / 'etsy' / 'node_modules' / 'statsd'
#: lines per datagram -> lines/s tried, direct and through the proxy.
SERIES = {
    1: [10_000, 20_000, 40_000, 60_000, 80_000, 100_000],
    20: [20_000, 50_000, 100_000, 150_000, 200_000],
}
QUICK_SERIES = {1: [10_000], 20: [20_000]}
#: A step with more loss than this fails; two failures in a row end a series.
LOSS_LIMIT = 0.01
#: The proxy's health check interval, milliseconds (its default is 10 s).
CHECK_INTERVAL_MS = 1000


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Node(Daemon):  # type: ignore[misc]
    """Our server as ``server.py`` runs it, its admin console on a free port."""

    def __init__(self, *args: typing.Any, **kwargs: typing.Any) -> None:
        super().__init__('ours', *args, **kwargs)
        self.admin_port = _free_tcp_port()

    def _command(self) -> tuple[list[str], dict[str, str]]:
        command, env = super()._command()
        return [*command, '--admin', f'{HOST}:{self.admin_port}'], env


class Proxy(Daemon):  # type: ignore[misc]
    """proxy.js with one node: `node`."""

    def __init__(self, node: Node, workdir: pathlib.Path, cpu: int | None,
                 receive_buffer: int) -> None:
        super().__init__('proxy', node.carbon, node.flush_interval, receive_buffer,
                         workdir, cpu=cpu)
        self.node = node

    def _command(self) -> tuple[list[str], dict[str, str]]:
        config = self.log.with_suffix('.config.js')
        config.write_text(
            '{\n'
            f"  nodes: [{{host: '{HOST}', port: {self.node.port}, "
            f'adminport: {self.node.admin_port}}}],\n'
            f"  server: './servers/udp', address: '{HOST}', port: {self.port},\n"
            f"  mgmt_address: '{HOST}', mgmt_port: {_free_tcp_port()},\n"
            f'  forkCount: 0, checkInterval: {CHECK_INTERVAL_MS}, cacheSize: 10000\n'
            '}\n'
        )
        env = dict(os.environ, BENCH_STATSD_SCRIPT='proxy.js',
                   BENCH_UDP_RECEIVE_BUFFER=str(self.receive_buffer))
        return ['node', str(HERE / 'etsy' / 'run.js'), str(ETSY), str(config)], env


def step(node: Node, proxy: Proxy | None, lines: int, rate: int, duration: float
         ) -> dict[str, typing.Any]:
    """Send `rate` lines/s for `duration` s, through `proxy` if given."""
    carbon = node.carbon
    before = carbon.total
    drops_before = _drops(node), _drops(proxy)
    cpu_before = node.cpu_seconds(), proxy.cpu_seconds() if proxy else 0.0
    target = proxy.port if proxy else node.port
    sent = generate(target, rate / lines, duration, lines, None)
    sent_lines = sent['sent'] * lines
    # Everything flushed, or the queues are empty and two more flushes came.
    if not _carbon.wait_for(lambda: carbon.total - before >= sent_lines, 3.0):
        seen = carbon.flush_count()
        _carbon.wait_for(lambda: carbon.flush_count() >= seen + 2, 5.0)
    received = carbon.total - before
    processed = max(received, 1)
    node_cpu = node.cpu_seconds() - cpu_before[0]
    proxy_cpu = (proxy.cpu_seconds() - cpu_before[1]) if proxy else 0.0
    return {
        'path': 'proxy' if proxy else 'direct', 'lines': lines, 'rate': rate,
        'generator_rate': sent['rate'] * lines, 'sent': sent_lines, 'received': received,
        'loss': 1 - received / sent_lines if sent_lines else 1.0,
        'proxy_drops': (_drops(proxy) - drops_before[1]) * lines,
        'server_drops': _drops(node) - drops_before[0],
        'server_us_per_line': node_cpu / processed * 1e6,
        'proxy_us_per_line': proxy_cpu / processed * 1e6,
        'proxy_busy': proxy_cpu / max(sent['elapsed'], 1e-9),
    }


def _drops(daemon: Daemon | None) -> int:
    """Datagrams the kernel dropped at `daemon`'s UDP socket so far."""
    stats = daemon.udp_stats() if daemon is not None else None
    return stats[1] if stats else 0


def _table(rows: list[dict[str, typing.Any]]) -> str:
    out = ['| lines/datagram | lines/s | path | loss | dropped at the proxy (lines) '
           '| dropped at the server | server CPU µs/line | proxy CPU µs/line '
           '| proxy CPU busy | generator lines/s |',
           '|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        proxy = f"{r['proxy_us_per_line']:.1f}" if r['path'] == 'proxy' else '-'
        busy = f"{r['proxy_busy']:.2f}" if r['path'] == 'proxy' else '-'
        out.append(
            f"| {r['lines']} | {r['rate']:,} | {r['path']} | {r['loss']:.2%} "
            f"| {r['proxy_drops'] if r['path'] == 'proxy' else '-'} | {r['server_drops']} "
            f"| {r['server_us_per_line']:.1f} | {proxy} | {busy} "
            f"| {r['generator_rate']:,.0f} |")
    return '\n'.join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown report; the exit status is 0."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--quick', action='store_true', help='a tiny run to check the script')
    parser.add_argument('--duration', type=float, default=4.0, help='seconds per step')
    parser.add_argument('--shapes', default='1,20', help='lines per datagram to test')
    parser.add_argument('--proxy-buffer', type=int, default=0,
                        help="the proxy's SO_RCVBUF in bytes (default: rmem_default)")
    parser.add_argument('--no-pin', action='store_true', help='do not pin processes to CPUs')
    parser.add_argument('--json', type=pathlib.Path, help='also write the raw results here')
    args = parser.parse_args(argv)
    if not (ETSY / 'proxy.js').exists():
        print('etsy statsd is not installed: run `npm ci --omit=optional` in bench/etsy',
              file=sys.stderr)
        return 2
    command = 'python bench/proxy.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
    info = machine()
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    series = QUICK_SERIES if args.quick else SERIES
    duration = 1.0 if args.quick else args.duration
    workdir = pathlib.Path(tempfile.mkdtemp(prefix='statsd-bench-proxy-'))
    rows: list[dict[str, typing.Any]] = []
    carbon = _carbon.CarbonReceiver()
    carbon.start()
    node = Node(carbon, 1.0, 8 * 1024 * 1024, workdir, cpu=0 if pin else None)
    proxy = Proxy(node, workdir, 1 if pin else None, args.proxy_buffer)
    try:
        node.start()
        proxy.start()  # after the node: its first health check finds it up
        for lines in [int(s) for s in args.shapes.split(',') if s.strip()]:
            failures = {'direct': 0, 'proxy': 0}
            for rate in series[lines]:
                for path, through in (('direct', None), ('proxy', proxy)):
                    if failures[path] >= 2:
                        continue
                    row = step(node, through, lines, rate, duration)
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    rows.append(row)
                    failures[path] = failures[path] + 1 if row['loss'] >= LOSS_LIMIT else 0
    finally:
        proxy.stop()
        node.stop()
        carbon.close()
    info['loadavg_end'] = ' '.join(pathlib.Path('/proc/loadavg').read_text().split()[:3])
    print(f"`{command}`, {info['date']}, {info['nproc']} CPUs, Linux {info['kernel']}, "
          f"Python {info['python']}, Node {info['node']}, load average "
          f"{info['loadavg']} at the start and {info['loadavg_end']} at the end; "
          f"rmem_default {info['rmem_default']}, rmem_max {info['rmem_max']}; "
          f"logs in {workdir}\n")
    print(_table(rows))
    if args.json:
        args.json.write_text(json.dumps({'machine': info, 'command': command, 'steps': rows},
                                        indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
