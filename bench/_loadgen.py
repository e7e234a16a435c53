"""A paced UDP load generator for the server benchmark, run as its own process.

Strategy: CPython's ``socket.send`` costs a few microseconds a call, which
is close to the rates the benchmark needs (250k datagrams/s and more), so
the datagrams are built once into a ring of ``struct mmsghdr`` and handed
to the kernel with Linux's ``sendmmsg(2)`` through :mod:`ctypes`: one call
sends a whole burst, and the interpreter only runs the pacing arithmetic
between bursts.  Where ``sendmmsg`` is missing it falls back to a plain
``send`` loop (and says so in its result).

Pacing: after each burst the sender compares the datagrams sent with
``rate * elapsed``; when it is ahead it sleeps (or spins, for less than a
millisecond) until the schedule catches up, so the load is a steady
stream of small bursts, never one big one.  A step is bounded both in
count (``rate * duration`` datagrams) and in time (it gives up at
``1.5 * duration + 1`` seconds), and the result says how many datagrams
went out and at what rate, so that the caller can tell a step the
generator could not drive from one the server could not take.

Run as ``python bench/_loadgen.py --port P --kind load --rate R
--duration S --lines N``; the result is one JSON object on standard output.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import json
import os
import socket
import sys
import time
import typing

from sprockets_statsd.server._datagrams import IOVec, MMsgHdr

__all__ = ['Sender', 'datagrams', 'main']

#: Datagrams per ``sendmmsg`` call: small enough that a burst at 250k/s
#: lasts a tenth of a millisecond, large enough to amortise the call.
BURST = 32

#: Distinct datagrams in the ring; the load repeats them.
RING = 1024

#: A step ahead of schedule by more than this sleeps instead of spinning.
_SLEEP_THRESHOLD = 0.001


def _libc_sendmmsg() -> typing.Any:
    if not sys.platform.startswith('linux'):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
        function = libc.sendmmsg
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


def datagrams(kind: str, lines: int, names: int, prefix: str, count: int) -> list[bytes]:
    """Build the distinct datagrams of a load.

    :param kind: ``load``: counter increments ``<prefix>.cNN:1|c`` of
        `names` names, `lines` per datagram, `count` datagrams in a
        repeating ring; ``unique``: `count` * `lines` distinct names, one
        timer (``<prefix>.tN:V|ms``) for every fifth name and counters
        (``<prefix>.cN:1|c``) for the rest, each name once
    :param lines: lines per datagram
    :param names: distinct counter names of a ``load``
    :param prefix: the first segment of every name
    :param count: datagrams to build
    """
    if kind == 'load':
        cycle = [f'{prefix}.c{i:02d}:1|c'.encode() for i in range(names)]
        out = []
        position = 0
        for _ in range(count):
            chosen = [cycle[(position + j) % names] for j in range(lines)]
            position = (position + lines) % names
            out.append(b'\n'.join(chosen))
        return out
    if kind == 'unique':
        out = []
        for d in range(count):
            batch = []
            for j in range(lines):
                n = d * lines + j
                if n % 5 == 4:
                    batch.append(f'{prefix}.t{n:06d}:{n % 997}|ms'.encode())
                else:
                    batch.append(f'{prefix}.c{n:06d}:1|c'.encode())
            out.append(b'\n'.join(batch))
        return out
    raise ValueError(f'unknown kind {kind!r}')


class Sender:
    """Send a ring of datagrams to a connected UDP socket at a paced rate.

    :param sock: a UDP socket connected to the server
    :param payloads: the datagrams, sent in order and repeated
    """

    def __init__(self, sock: socket.socket, payloads: list[bytes]) -> None:
        self._sock = sock
        self._payloads = payloads
        self._sendmmsg = _libc_sendmmsg()
        # The buffers must outlive the headers that point into them.
        self._buffers = [ctypes.create_string_buffer(p, len(p)) for p in payloads]
        self._iovecs = (IOVec * len(payloads))()
        self._headers = (MMsgHdr * len(payloads))()
        for i, buffer in enumerate(self._buffers):
            self._iovecs[i].iov_base = ctypes.addressof(buffer)
            self._iovecs[i].iov_len = len(payloads[i])
            self._headers[i].msg_hdr.msg_iov = ctypes.pointer(self._iovecs[i])
            self._headers[i].msg_hdr.msg_iovlen = 1
        self._base = ctypes.addressof(self._headers)
        self._size = ctypes.sizeof(MMsgHdr)

    @property
    def method(self) -> str:
        """``sendmmsg`` or ``send``: how datagrams leave the process."""
        return 'sendmmsg' if self._sendmmsg is not None else 'send'

    def _burst(self, offset: int, n: int) -> int:
        """Send `n` datagrams from ring position `offset`; the count sent."""
        if self._sendmmsg is not None:
            sent = self._sendmmsg(self._sock.fileno(), self._base + offset * self._size, n, 0)
            if sent < 0:
                code = ctypes.get_errno()
                if code in (errno.ENOBUFS, errno.EAGAIN, errno.ECONNREFUSED, errno.EINTR):
                    return 0
                raise OSError(code, os.strerror(code))
            return int(sent)
        send = self._sock.send
        payloads = self._payloads
        for i in range(offset, offset + n):
            try:
                send(payloads[i])
            except (BlockingIOError, ConnectionRefusedError, InterruptedError):
                return i - offset
        return n

    def run(self, rate: float, duration: float, burst: int = BURST) -> dict[str, typing.Any]:
        """Send ``rate * duration`` datagrams at `rate` per second.

        :param rate: datagrams per second; 0 sends as fast as possible
        :param duration: seconds the step should last
        :param burst: datagrams per system call
        :returns: ``sent``, ``target``, ``elapsed`` (first to last send),
            ``rate`` (achieved), ``failed`` (calls that sent nothing),
            ``method`` and ``cpu`` (seconds of CPU the sender used)
        """
        ring = len(self._payloads)
        total = int(rate * duration) if rate else sys.maxsize
        clock = time.perf_counter
        cpu = time.process_time()
        start = clock()
        give_up = start + duration * 1.5 + 1.0
        stop_unpaced = start + duration
        sent = failed = offset = 0
        now = start
        while sent < total:
            n = min(burst, total - sent, ring - offset)
            done = self._burst(offset, n)
            if not done:
                failed += 1
            sent += done
            offset = (offset + done) % ring
            now = clock()
            if rate:
                ahead = sent / rate - (now - start)
                if ahead > _SLEEP_THRESHOLD:
                    time.sleep(ahead - _SLEEP_THRESHOLD / 2)
                    now = clock()
                while now - start < sent / rate:
                    now = clock()
                if now > give_up:
                    break
            elif now > stop_unpaced:
                break
        elapsed = max(now - start, 1e-9)
        return {
            'sent': sent,
            'target': total if rate else sent,
            'elapsed': elapsed,
            'rate': sent / elapsed,
            'failed': failed,
            'method': self.method,
            'cpu': time.process_time() - cpu,
        }


def main(argv: list[str] | None = None) -> int:
    """Run one step from the command line and print its result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--kind', choices=('load', 'unique'), default='load')
    parser.add_argument('--lines', type=int, default=1, help='lines per datagram')
    parser.add_argument('--names', type=int, default=20, help='distinct names of a load')
    parser.add_argument('--prefix', default='load')
    parser.add_argument('--count', type=int, default=RING,
                        help='distinct datagrams (a load repeats them)')
    parser.add_argument('--rate', type=float, required=True,
                        help='datagrams per second, 0 for unpaced')
    parser.add_argument('--duration', type=float, required=True, help='seconds')
    parser.add_argument('--cpu', type=int, default=None, help='pin to this CPU')
    args = parser.parse_args(argv)
    if args.cpu is not None and hasattr(os, 'sched_setaffinity'):
        os.sched_setaffinity(0, {args.cpu})
    payloads = datagrams(args.kind, args.lines, args.names, args.prefix, args.count)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        sock.connect((args.host, args.port))
        sender = Sender(sock, payloads)
        if args.kind == 'unique':
            # Each name once: the ring is the whole load.
            duration = len(payloads) / args.rate
            result = sender.run(args.rate, duration)
        else:
            result = sender.run(args.rate, args.duration)
    finally:
        sock.close()
    result['bytes'] = sum(len(p) for p in payloads) / len(payloads) * result['sent']
    json.dump(result, sys.stdout)
    sys.stdout.write('\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
