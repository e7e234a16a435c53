"""Our server's intake over UDP and over a Unix datagram socket, side by side.

Run: .venv/bin/python bench/server_unix_datagram.py [--datagrams 50000] [--repeat 3]

Starts ``python -m sprockets_statsd.server`` once (flush interval one hour,
so nothing is flushed during a run; output discarded), listening for UDP on
127.0.0.1 and on a Unix datagram socket (``--unix-datagram``), with its
admin console on a free port.  Each round sends ``--datagrams`` datagrams
of 20 counter lines from a separate sender process, as fast as a blocking
socket lets it, once over each transport.  Over UDP the kernel drops what
the server's receive buffer cannot hold; over the Unix socket the sender
waits instead.  The script zeroes ``statsd.metrics_received`` through the
admin console before each run, then polls it until every line is counted
or it stops growing for a second, and reports the lines counted, the loss
and the lines per second from the first send to the last line counted.
Every run is bounded (60 s).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import pathlib
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import typing

LINES_PER_DATAGRAM = 20
PAYLOAD = b'\n'.join(b'bench.c%d:1|c' % i for i in range(LINES_PER_DATAGRAM))
DEADLINE = 60.0
_RECEIVED = re.compile(rb"'statsd\.metrics_received': ([0-9.e+]+)")


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(('127.0.0.1', 0))
        return int(sock.getsockname()[1])


def _send(family: int, address: typing.Any, count: int) -> None:
    """The sender process: `count` datagrams, blocking sends."""
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        for _ in range(count):
            # UDP on loopback may report an earlier drop: go on.
            with contextlib.suppress(ConnectionRefusedError, BlockingIOError):
                sock.send(PAYLOAD)


def _admin(port: int, command: bytes) -> bytes:
    with socket.create_connection(('127.0.0.1', port), timeout=5) as sock:
        sock.sendall(command + b'\nquit\n')
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b''.join(chunks)


def _received(port: int) -> float:
    found = _RECEIVED.search(_admin(port, b'counters'))
    return float(found.group(1)) if found else 0.0


def _run(admin: int, family: int, address: typing.Any, datagrams: int) -> dict[str, float]:
    _admin(admin, b'delcounters statsd.metrics_received')
    expected = datagrams * LINES_PER_DATAGRAM
    sender = multiprocessing.Process(target=_send, args=(family, address, datagrams))
    start = time.perf_counter()
    sender.start()
    last_value, last_change = 0.0, start
    while time.perf_counter() - start < DEADLINE:
        value = _received(admin)
        now = time.perf_counter()
        if value != last_value:
            last_value, last_change = value, now
        if value >= expected or (not sender.is_alive() and now - last_change > 1.0):
            break
        time.sleep(0.02)
    sender.join(DEADLINE)
    elapsed = last_change - start
    return {
        'received': last_value,
        'loss': 1 - last_value / expected,
        'rate': last_value / elapsed if elapsed > 0 else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--datagrams', type=int, default=50_000)
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args()
    port, admin = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(pathlib.Path(tmp) / 'statsd.dgram')
        server = subprocess.Popen(
            [sys.executable, '-m', 'sprockets_statsd.server', '--bind', f'127.0.0.1:{port}',
             '--unix-datagram', path, '--admin', f'127.0.0.1:{admin}', '--flush', '3600',
             '--http', 'off'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(path) or not _can_connect(admin):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit('the server did not start')
                time.sleep(0.05)
            transports = {
                'UDP 127.0.0.1': (socket.AF_INET, ('127.0.0.1', port)),
                'Unix datagram': (socket.AF_UNIX, path),
            }
            results: dict[str, list[dict[str, float]]] = {name: [] for name in transports}
            for _ in range(args.repeat):
                for name, (family, address) in transports.items():
                    results[name].append(_run(admin, family, address, args.datagrams))
        finally:
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(10)
    sent = args.datagrams * LINES_PER_DATAGRAM
    print(f'{args.datagrams:,} datagrams of {LINES_PER_DATAGRAM} lines ({sent:,} lines) '
          f'per run, {args.repeat} rounds; load average {os.getloadavg()[0]:.2f}')
    print('| transport | lines/s counted (median) | (best) | loss (worst) |')
    print('|---|--:|--:|--:|')
    for name, runs in results.items():
        rates = [run['rate'] for run in runs]
        print(f'| {name} | {statistics.median(rates):,.0f} | {max(rates):,.0f} | '
              f'{max(run["loss"] for run in runs):.1%} |')
    return 0


def _can_connect(port: int) -> bool:
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=0.2):
            return True
    except OSError:
        return False


if __name__ == '__main__':
    sys.exit(main())
