"""Query benchmark: /metrics and /N of a server holding many names.

Strategy: a fresh server (``python -m sprockets_statsd.server``) with the
load sink on loopback (``--http 127.0.0.1:0``, frames as long as its flush
interval) gets `--names` counter names over TCP and runs until all
fifteen frames hold every name.  Then, for ``/metrics`` and ``/15``, once
a flush is over (the server's CPU time busy, then idle): one
request, timed from here (wall) and by the server's CPU time
(``/proc/<pid>/stat``), with its ``VmHWM`` and ``VmRSS`` before and after;
then, after the next flush (which makes both render again), three
concurrent requests.  Every request must answer 200 with the same body.
Last, twice: a few new names, a flush, and once the flush after them is
over (the server's CPU time busy, then idle), one ``/metrics`` request: the
first scrape after the key set changed, with the event loop's share.
Then, twice: 100,000 lines/s over UDP (one per datagram, ``_loadgen.py``,
for 3 s) and, half a second in, one ``/metrics`` request; the kernel's
drops of the server's UDP socket (``/proc/net/udp``) over the load say
whether receiving kept up while the scrape was rendered in its thread.

With flushes every 3 s (the default) every flush begins a frame and its
work may fall inside a request; ``--flush 10`` (the server's default
interval) leaves a request of a few seconds alone.  Run from the
repository root::

    .venv/bin/python bench/server_scrape.py --names 500000
    .venv/bin/python bench/server_scrape.py --names 500000 --flush 10
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from server_memory import _udp_drops

__all__ = ['main']

HERE = pathlib.Path(__file__).resolve().parent
HOST = '127.0.0.1'
#: Seconds between flushes, and per frame, unless --flush says otherwise.
FLUSH = 3.0
FRAMES = 15
# /metrics after the key set changed: names added before each such scrape.
NEW_NAMES = 5
CHANGES = 2
# Polls of the server's CPU time while waiting for a flush to be over.
_POLL = 0.1
# /metrics under load: lines per second, one per datagram, for LOAD_SECONDS;
# the request starts LOAD_LEAD seconds in.
LOAD_RATE = 100_000
LOAD_SECONDS = 3.0
LOAD_LEAD = 0.5
UNDER_LOAD = 2
_QUIET_POLLS = 3
_TICK = os.sysconf('SC_CLK_TCK')
_UDP = re.compile(r'listening on udp [^:]+:(\d+)')
_HTTP = re.compile(r'load sink http://[^:]+:(\d+)/')


def _cpu(pid: int) -> float:
    fields = pathlib.Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _loop_cpu(pid: int) -> float:
    """The CPU time of the server's main thread, which runs its event loop."""
    return _cpu(pid) - sum(
        _task_cpu(pid, int(task.name))
        for task in pathlib.Path(f'/proc/{pid}/task').iterdir() if int(task.name) != pid)


def _task_cpu(pid: int, tid: int) -> float:
    try:
        stat = pathlib.Path(f'/proc/{pid}/task/{tid}/stat').read_text()
    except FileNotFoundError:
        return 0.0  # a thread that just ended
    fields = stat.rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _after_flush(pid: int, flush: float) -> None:
    """Wait for the server's next flush to be over: busy, then idle.

    At hundreds of thousands of names a flush keeps the server busy for a
    second or more; a request timed just after it is timed alone.
    """
    deadline = time.monotonic() + 3 * flush
    busy, quiet, last = False, 0, _cpu(pid)
    while time.monotonic() < deadline:
        time.sleep(_POLL)
        now = _cpu(pid)
        rate, last = (now - last) / _POLL, now
        if rate > 0.5:
            busy, quiet = True, 0
        elif busy and rate < 0.15:
            quiet += 1
            if quiet == _QUIET_POLLS:
                return


def _memory(pid: int) -> dict[str, int]:
    status = pathlib.Path(f'/proc/{pid}/status').read_text()
    return {k: int(v.split()[0]) // 1024 for k, v in re.findall(r'^(Vm\w+):\s+(.*)$', status, re.M)}


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:
        assert response.status == 200
        body: bytes = response.read()
        return body


def _requests(pid: int, url: str, count: int, frame: float) -> dict[str, float] | None:
    """One row: `count` concurrent requests; none when they crossed into a
    new frame (of `frame` seconds) and so got different answers."""
    before_cpu, before, before_loop = _cpu(pid), _memory(pid), _loop_cpu(pid)
    started, started_at = time.monotonic(), time.time()
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        bodies = list(pool.map(_get, [url] * count))
    wall = time.monotonic() - started
    after = _memory(pid)
    if any(body != bodies[0] for body in bodies):
        assert started_at // frame != time.time() // frame, 'different answers in one frame'
        return None
    return {'wall': wall, 'cpu': _cpu(pid) - before_cpu, 'loop': _loop_cpu(pid) - before_loop,
            'bytes': len(bodies[0]),
            'hwm_increase': after['VmHWM'] - before['VmHWM'],
            'rss_increase': after['VmRSS'] - before['VmRSS'], 'rss': after['VmRSS']}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--names', type=int, default=500_000)
    parser.add_argument('--flush', type=float, default=FLUSH,
                        help='seconds between flushes and per frame (default %(default)s): '
                             'a request that takes less than the time between the end of a '
                             'flush and the next is timed alone')
    args = parser.parse_args(argv)
    flush = args.flush
    command = [sys.executable, '-m', 'sprockets_statsd.server', '-b', f'{HOST}:0',
               '-f', str(flush), '--admin', 'off', '--http', f'{HOST}:0',
               '--load-frame-length', str(flush), '--max-names', str(2 * args.names)]
    env = {k: v for k, v in os.environ.items() if not k.startswith('STATSD_')}
    with subprocess.Popen(command, cwd=HERE.parent, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True) as server:
        try:
            assert server.stderr is not None
            udp = http = 0
            while not (udp and http):
                line = server.stderr.readline()
                if not line:
                    raise RuntimeError(f'the server exited with {server.wait()}')
                udp = udp or int((_UDP.search(line) or [0, 0])[1])
                http = http or int((_HTTP.search(line) or [0, 0])[1])
            threading.Thread(target=server.stderr.read, daemon=True).start()
            with socket.create_connection((HOST, udp), timeout=60) as sock:
                for start in range(0, args.names, 10_000):
                    sock.sendall(''.join(
                        f'scrape.c.n{i:07d}:{i % 1000 + 1}|c\n'
                        for i in range(start, min(start + 10_000, args.names))).encode())
            # Every frame holds every name after FRAMES more flushes.
            time.sleep(flush * (FRAMES + 1.5))
            base = f'http://{HOST}:{http}'
            print(f'{args.names:,} counter names, {FRAMES} frames, RSS '
                  f'{_memory(server.pid)["VmRSS"]} MiB, load average '
                  f'{" ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])}')
            print('| path | requests | wall s | server CPU s | of which the event loop '
                  '| body MB | VmHWM increase MiB | RSS increase MiB |')
            print('|---|--:|--:|--:|--:|--:|--:|--:|')
            for path in ('/metrics', f'/{FRAMES}'):
                for count in (1, 3):
                    row = None
                    while row is None:  # again when the requests crossed a frame
                        # Wait for a flush to be over: the answer is rendered
                        # anew, and timed alone if it takes less than a flush.
                        time.sleep(flush)
                        _after_flush(server.pid, flush)
                        row = _requests(server.pid, base + path, count, flush)
                    print(f'| {path} | {count} | {row["wall"]:.2f} | {row["cpu"]:.2f} '
                          f'| {row["loop"]:.2f} | {row["bytes"] / 1e6:.1f} | {row["hwm_increase"]} '
                          f'| {row["rss_increase"]} |', flush=True)
            print(f'\n/metrics after {NEW_NAMES} new names, requested once the flush '
                  'that brought them is over\n')
            print('| wall s | server CPU s | of which the event loop | VmHWM increase MiB '
                  '| RSS increase MiB |')
            print('|--:|--:|--:|--:|--:|')
            _changes(server.pid, udp, base, flush)
            _under_load(server.pid, udp, base, flush)
        finally:
            server.kill()
    return 0


def _changes(pid: int, udp: int, base: str, flush: float) -> None:
    """The rows of /metrics after new names."""
    for step in range(CHANGES):
        # A few names more, so that the next flush changes the keys.
        with socket.create_connection((HOST, udp), timeout=60) as sock:
            sock.sendall(''.join(f'scrape.new.s{step}n{i}:1|c\n'
                                 for i in range(NEW_NAMES)).encode())
        time.sleep(flush)  # past the flush they arrived before
        _after_flush(pid, flush)
        row = _requests(pid, base + '/metrics', 1, flush)
        assert row is not None  # one request: one answer
        print(f'| {row["wall"]:.2f} | {row["cpu"]:.2f} '
              f'| {row["loop"]:.2f} | {row["hwm_increase"]} '
              f'| {row["rss_increase"]} |', flush=True)


def _under_load(pid: int, udp: int, base: str, flush: float) -> None:
    """The rows of /metrics while UDP load arrives."""
    print(f'\n/metrics while {LOAD_RATE:,} lines/s arrive over UDP, one per datagram, '
          f'for {LOAD_SECONDS:g} s (the request {LOAD_LEAD:g} s in)\n')
    print('| wall s | server CPU s (the load\'s too) | datagrams sent | kernel drops |')
    print('|--:|--:|--:|--:|')
    for _ in range(UNDER_LOAD):
        time.sleep(flush)
        _after_flush(pid, flush)
        drops = _udp_drops(udp)
        with subprocess.Popen(
                [sys.executable, str(HERE / '_loadgen.py'), '--port', str(udp),
                 '--rate', str(LOAD_RATE), '--duration', str(LOAD_SECONDS)],
                stdout=subprocess.PIPE, text=True) as load:
            time.sleep(LOAD_LEAD)
            row = _requests(pid, base + '/metrics', 1, flush)
            assert row is not None  # one request: one answer
            sent = json.loads(load.communicate(timeout=3 * LOAD_SECONDS + 10)[0])['sent']
        time.sleep(LOAD_LEAD)  # the server takes in what is still queued
        print(f'| {row["wall"]:.2f} | {row["cpu"]:.2f} | {sent:,} '
              f'| {_udp_drops(udp) - drops:,} |', flush=True)




if __name__ == '__main__':
    sys.exit(main())
