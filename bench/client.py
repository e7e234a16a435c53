"""Client throughput benchmark: our clients against pystatsd and DogStatsd.

Strategy: every case sends ``--count`` counter increments of one name to a
line counter on loopback that runs in another process (``_receiver.py``),
so the figures are *delivered* metrics, not calls.  Two numbers per case:

* **µs/call** - time spent inside the metric calls alone.  For the
  Connector this comes from a separate run in which the processor is not
  started (format + encode + enqueue; the queue is emptied, untimed,
  between chunks).  For the synchronous clients it is the time inside the
  calls of the end-to-end run, excluding the final explicit send/flush
  (pystatsd ``incr`` sends one datagram per call, so it includes the send;
  DogStatsd sends a full buffer from inside the call that overflows it).
* **end-to-end** - from the first call until the receiver saw the last line
  *and* the client's stop/flush returned, as metrics/s and µs/metric, with
  the delivered/sent ratio counted by the receiver.

Every client puts the same bytes on the wire per metric (see
``FULL_METRIC``).  The ``sync-*`` cases run our synchronous
``sprockets_statsd.client`` classes through exactly the loops of the
matching ``pystatsd-*`` cases.  One extra case times ``Connector.timing`` to show the
cost of the general formatting path next to the cached increment.

The cases run one after another in ``--repeat`` rounds; the table shows the
best and the median of each.  The exit status is 1 if any run lost lines.
Run it from the repository root::

    .venv/bin/python bench/client.py --count 500000 --repeat 3
    .venv/bin/python bench/client.py --quick          # a few seconds, a smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import gc
import os
import platform
import pstats
import socket
import statistics
import subprocess
import sys
import time
import typing
from collections.abc import Callable

from _receiver import Receiver  # type: ignore[import-not-found]  # bench/ is on sys.path

import sprockets_statsd
from sprockets_statsd.client import StatsClient, TCPStatsClient, UnixDatagramStatsClient
from sprockets_statsd.connector import Connector

__all__ = ['CASES', 'Sample', 'main']

# The Connector puts its ``counters.`` type segment in front of the path;
# the other clients get the full name, so every client sends the same
# 26 bytes per metric (``counters.bench.metric:1|c`` and a separator).
METRIC = 'bench.metric'
FULL_METRIC = 'counters.bench.metric'
# The extra ``timing`` case goes through the general formatting path
# (``timers.bench.metric:12.5|ms``) instead of the cached increment.
DURATION = 0.0125
HOST = '127.0.0.1'
# Not an IP protocol: selects the Connector's unixgram: host in these cases.
UNIXGRAM = -1


@dataclasses.dataclass
class Sample:
    """One run of one case."""

    count: int
    call_seconds: float  # time inside the metric calls
    total_seconds: float  # first call until delivered and stopped
    delivered: int
    datagrams: int = 0
    wire_bytes: int = 0
    note: str = ''
    dropped: int = 0  # counted by the client as dropped (never silently lost)

    @property
    def call_us(self) -> float:
        return self.call_seconds / self.count * 1e6

    @property
    def metric_us(self) -> float:
        return self.total_seconds / self.count * 1e6


def _sample(receiver: Receiver, count: int, call_seconds: float, start: float,
            done: float, note: str = '', dropped: int = 0) -> Sample:
    result = receiver.finish()
    end = max(result['last'], done)
    if result['partial']:
        note = f'{note} {result["partial"]} partial lines'.strip()
    return Sample(count, call_seconds, end - start, result['lines'],
                  result['datagrams'], result['bytes'], note, dropped)


# -- our Connector -----------------------------------------------------------

async def _connected(connector: Connector, timeout: float = 10.0) -> None:
    """Wait (bounded) until the processor holds a connection."""
    deadline = time.monotonic() + timeout
    while not connector.processor.connected:
        if time.monotonic() > deadline:
            raise RuntimeError('the connector did not connect')
        await asyncio.sleep(0.001)


def _connector(port: int | str, protocol: int, udp_size: int, queue_size: int) -> Connector:
    if protocol == UNIXGRAM:  # the receiver's "port" is its socket's path
        return Connector(f'unixgram:{port}', max_queue_size=queue_size,
                         max_udp_size=udp_size)
    return Connector(HOST, int(port), ip_protocol=protocol, max_queue_size=queue_size,
                     max_udp_size=udp_size)


def _chunk(connector: Connector, calls: range, timing: bool) -> float:
    """Make one chunk of calls; return the seconds spent inside them."""
    clock = time.perf_counter
    if timing:
        record = connector.timing
        started = clock()
        for _ in calls:
            record(METRIC, DURATION)
    else:
        incr = connector.incr
        started = clock()
        for _ in calls:
            incr(METRIC)
    return clock() - started


async def _connector_calls(count: int, chunk: int, protocol: int, udp_size: int,
                           timing: bool) -> float:
    """Seconds inside the calls for `count` calls with the processor not running."""
    connector = _connector('/nonexistent' if protocol == UNIXGRAM else 9, protocol, udp_size,
                           max(chunk, 1))
    queue = connector.processor.queue
    spent = 0.0
    for first in range(0, count, chunk):
        spent += _chunk(connector, range(min(chunk, count - first)), timing)
        while not queue.empty():  # untimed: start the next chunk empty
            queue.get_nowait()
    if connector.dropped_queue_full:
        raise RuntimeError('the call-cost run dropped metrics')
    await connector.stop()
    return spent


async def _connector_run(receiver: Receiver, count: int, chunk: int, protocol: int,
                         udp_size: int, queue_size: int,
                         timing: bool) -> tuple[float, float, str, int]:
    connector = _connector(receiver.port, protocol, udp_size, queue_size)
    await connector.start()
    await _connected(connector)
    start = time.monotonic()
    for first in range(0, count, chunk):
        _chunk(connector, range(min(chunk, count - first)), timing)
        await asyncio.sleep(0)  # let the processor drain the chunk
    await connector.stop()
    done = time.monotonic()
    note = (f'enqueued={connector.enqueued} sent={connector.sent} '
            f'dropped={connector.dropped}')
    return start, done, note, connector.dropped


def connector_case(protocol: int, udp_size: int = 512,
                   timing: bool = False) -> Callable[..., Sample]:
    def run(receiver: Receiver, count: int, chunk: int, queue_size: int) -> Sample:
        calls = asyncio.run(_connector_calls(count, chunk, protocol, udp_size, timing))
        receiver.arm(count)
        start, done, note, dropped = asyncio.run(
            _connector_run(receiver, count, chunk, protocol, udp_size, queue_size, timing)
        )
        return _sample(receiver, count, calls, start, done, note, dropped)
    return run


# -- pystatsd 4 --------------------------------------------------------------

def _pystatsd_client(receiver: Receiver) -> typing.Any:
    import statsd

    return statsd.StatsClient(HOST, receiver.port)


def pystatsd_pipeline(maxudpsize: int, tcp: bool = False) -> Callable[..., Sample]:
    def run(receiver: Receiver, count: int, chunk: int, queue_size: int) -> Sample:
        import statsd

        client: typing.Any
        if tcp:
            client = statsd.TCPStatsClient(HOST, receiver.port)
        else:
            client = statsd.StatsClient(HOST, receiver.port, maxudpsize=maxudpsize)
        receiver.arm(count)
        clock = time.perf_counter
        spent = 0.0
        start = time.monotonic()
        for first in range(0, count, chunk):
            pipe = client.pipeline()
            incr = pipe.incr
            calls = range(min(chunk, count - first))
            started = clock()
            for _ in calls:
                incr(FULL_METRIC)
            spent += clock() - started
            pipe.send()
        done = time.monotonic()
        client.close()
        return _sample(receiver, count, spent, start, done)
    return run


# -- our synchronous clients (the same loops as pystatsd's) ----------------------

def incr_case(make: Callable[[Receiver], typing.Any]) -> Callable[..., Sample]:
    """``incr(name)`` in a loop, one datagram a call, on the client `make` returns."""
    def run(receiver: Receiver, count: int, chunk: int, queue_size: int) -> Sample:
        client = make(receiver)
        receiver.arm(count)
        incr = client.incr
        start = time.monotonic()
        for _ in range(count):
            incr(FULL_METRIC)
        done = time.monotonic()
        client.close()
        return _sample(receiver, count, done - start, start, done, _drops(client),
                       getattr(client, 'dropped', 0))  # pystatsd does not count
    return run


def sync_pipeline(maxudpsize: int, tcp: bool = False,
                  unixgram: bool = False) -> Callable[..., Sample]:
    def run(receiver: Receiver, count: int, chunk: int, queue_size: int) -> Sample:
        client: StatsClient | TCPStatsClient | UnixDatagramStatsClient
        if tcp:
            client = TCPStatsClient(HOST, receiver.port)
        elif unixgram:
            client = UnixDatagramStatsClient(receiver.port, max_datagram_size=maxudpsize)
        else:
            client = StatsClient(HOST, receiver.port, maxudpsize=maxudpsize)
        receiver.arm(count)
        clock = time.perf_counter
        spent = 0.0
        start = time.monotonic()
        for first in range(0, count, chunk):
            pipe = client.pipeline()
            incr = pipe.incr
            calls = range(min(chunk, count - first))
            started = clock()
            for _ in calls:
                incr(FULL_METRIC)
            spent += clock() - started
            pipe.send()
        done = time.monotonic()
        client.close()
        return _sample(receiver, count, spent, start, done, _drops(client), client.dropped)
    return run


def _drops(client: typing.Any) -> str:
    dropped = getattr(client, 'dropped', 0)
    return f'dropped={dropped}' if dropped else ''


# -- datadog DogStatsd -------------------------------------------------------

def dogstatsd_buffered(receiver: Receiver, count: int, chunk: int,
                       queue_size: int) -> Sample:
    from datadog.dogstatsd.base import DogStatsd

    # Telemetry would add the client's own lines to the count, and origin
    # detection would append a container id to every line; both off so that
    # every client sends the same bytes per metric.
    client = DogStatsd(HOST, receiver.port, disable_buffering=False,
                       disable_telemetry=True, origin_detection_enabled=False)
    receiver.arm(count)
    increment = client.increment
    start = time.monotonic()
    for _ in range(count):
        increment(FULL_METRIC)
    called = time.monotonic()
    client.flush()
    client.stop(timeout=5.0)
    done = time.monotonic()
    client.close_socket()
    return _sample(receiver, count, called - start, start, done,
                   f'max payload {client._max_payload_size}')


# -- the table ---------------------------------------------------------------

#: name -> (receiver kind, run function, description)
CASES: dict[str, tuple[str, Callable[..., Sample], str]] = {
    'connector-udp-512': ('udp', connector_case(socket.IPPROTO_UDP, 512),
                          'Connector UDP, max_udp_size 512 (default)'),
    'connector-udp-1432': ('udp', connector_case(socket.IPPROTO_UDP, 1432),
                           'Connector UDP, max_udp_size 1432'),
    'connector-unixgram': ('unixgram', connector_case(UNIXGRAM, 8192),
                           'Connector Unix datagrams, 8192 (default)'),
    'connector-udp-8192': ('udp', connector_case(socket.IPPROTO_UDP, 8192),
                           'Connector UDP, max_udp_size 8192 (as Unix datagrams)'),
    'connector-tcp': ('tcp', connector_case(socket.IPPROTO_TCP),
                      'Connector TCP'),
    'connector-tcp-timing': ('tcp', connector_case(socket.IPPROTO_TCP, timing=True),
                             'Connector TCP, timing() (formatted per call)'),
    'pystatsd-incr': ('udp', incr_case(_pystatsd_client),
                      'pystatsd StatsClient.incr (1 datagram/metric)'),
    'pystatsd-pipeline-512': ('udp', pystatsd_pipeline(512),
                              'pystatsd pipeline, maxudpsize 512 (default)'),
    'pystatsd-pipeline-1432': ('udp', pystatsd_pipeline(1432),
                               'pystatsd pipeline, maxudpsize 1432'),
    'pystatsd-tcp-pipeline': ('tcp', pystatsd_pipeline(0, tcp=True),
                              'pystatsd TCPStatsClient pipeline'),
    'sync-incr': ('udp', incr_case(lambda receiver: StatsClient(HOST, receiver.port)),
                  'sprockets_statsd StatsClient.incr (1 datagram/metric)'),
    'sync-pipeline-512': ('udp', sync_pipeline(512),
                          'sprockets_statsd pipeline, maxudpsize 512 (default)'),
    'sync-pipeline-1432': ('udp', sync_pipeline(1432),
                           'sprockets_statsd pipeline, maxudpsize 1432'),
    'sync-tcp-pipeline': ('tcp', sync_pipeline(0, tcp=True),
                          'sprockets_statsd TCPStatsClient pipeline'),
    'sync-unixgram-incr': ('unixgram',
                           incr_case(lambda receiver: UnixDatagramStatsClient(receiver.port)),
                           'sprockets_statsd UnixDatagramStatsClient.incr (1 datagram/metric)'),
    'sync-unixgram-pipeline': ('unixgram', sync_pipeline(8192, unixgram=True),
                               'sprockets_statsd UnixDatagramStatsClient pipeline, 8192'),
    'dogstatsd-buffered': ('udp', dogstatsd_buffered,
                           'DogStatsd, disable_buffering=False'),
}


def _row(description: str, samples: list[Sample]) -> str:
    best = min(samples, key=lambda s: s.total_seconds)
    median_us = statistics.median(s.metric_us for s in samples)
    call_us = min(s.call_us for s in samples)
    worst_ratio = min(s.delivered / s.count for s in samples)
    ratio = f'{worst_ratio:.2%}' if worst_ratio < 1 else '100%'
    last = samples[-1]
    packets = f'{last.count / last.datagrams:.0f}' if last.datagrams else 'stream'
    return (f'| {description} | {call_us:.2f} | {best.metric_us:.2f} | '
            f'{median_us:.2f} | {1e6 / best.metric_us:,.0f} | {ratio} | '
            f'{last.wire_bytes / last.count:.1f} | {packets} |')


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open('/proc/cpuinfo') as info:
        for line in info:
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    return (f'{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, '
            f'Python {platform.python_version()}')


# The modules on the measured clients' paths; changes elsewhere do not matter here.
_MEASURED = ('connector.py', 'processor.py', 'protocols.py', 'metrics.py', '_throttle.py',
             'client.py', '_emitter.py', '_syncbase.py', 'transports.py', '_packing.py')


def _package() -> str:
    """Which sprockets_statsd was measured: its directory and git state."""
    where = os.path.dirname(os.path.abspath(sprockets_statsd.__file__))
    try:
        commit = subprocess.run(
            ['git', 'rev-parse', '--short', 'HEAD'], cwd=where, capture_output=True,
            text=True, timeout=10, check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ['git', 'status', '--porcelain', '--', *_MEASURED], cwd=where,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        last = subprocess.run(
            ['git', 'log', '-1', '--format=%h', '--', *_MEASURED], cwd=where,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f'sprockets_statsd {sprockets_statsd.__version__} from {where} (not a git checkout)'
    state = ' with uncommitted changes to the measured modules' if changed else ''
    return (f'sprockets_statsd {sprockets_statsd.__version__} from {where} at {commit} '
            f'(measured modules last changed in {last}){state}')


def _calibrate() -> float:
    """Seconds for a fixed pure-Python loop: how fast the machine is right now."""
    started = time.perf_counter()
    total = 0
    for number in range(1_000_000):
        total += number
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Run the selected cases and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--count', type=int, default=500_000,
                        help='metrics per run (default 500000)')
    parser.add_argument('--repeat', type=int, default=3,
                        help='runs per case; best and median are shown (default 3)')
    parser.add_argument('--chunk', type=int, default=1_000,
                        help='calls between yields to the event loop, and stats '
                             'per pystatsd pipeline (default 1000)')
    parser.add_argument('--queue-size', type=int, default=100_000,
                        help="the Connector's max_queue_size (default 100000)")
    parser.add_argument('--cases', default=','.join(CASES),
                        help='comma-separated subset of: ' + ', '.join(CASES))
    parser.add_argument('--quick', action='store_true',
                        help='20000 metrics, one run: check that everything works')
    parser.add_argument('--profile', metavar='FILE',
                        help='run under cProfile, write stats to FILE and print the top')
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.repeat = 20_000, 1
    names = [name.strip() for name in args.cases.split(',') if name.strip()]
    unknown = [name for name in names if name not in CASES]
    if unknown or args.count < 1 or args.repeat < 1 or args.chunk < 1:
        parser.error(f'bad --cases {unknown}' if unknown else 'counts must be positive')

    receivers = {kind: Receiver(kind) for kind in {CASES[name][0] for name in names}}
    profiler = cProfile.Profile() if args.profile else None
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    calibration = [_calibrate()]
    began = time.monotonic()
    try:
        # Rounds rather than case after case: this machine's speed drifts
        # (shared cores), and a round exposes every case to the same drift.
        for round_number in range(1, args.repeat + 1):
            for name in names:
                kind, run, _ = CASES[name]
                gc.collect()
                if profiler is not None:
                    profiler.enable()
                sample = run(receivers[kind], args.count, args.chunk, args.queue_size)
                if profiler is not None:
                    profiler.disable()
                samples[name].append(sample)
                print(f'round {round_number} {name}: {sample.call_us:.2f} µs/call, '
                      f'{sample.metric_us:.2f} µs/metric end-to-end, '
                      f'{sample.delivered}/{sample.count} delivered'
                      + (f' ({sample.note})' if sample.note else ''),
                      file=sys.stderr, flush=True)
    finally:
        for receiver in receivers.values():
            receiver.close()
    elapsed = time.monotonic() - began
    calibration.append(_calibrate())

    print(f'\n{args.count:,} metrics per run, best of {args.repeat} (rounds); {_machine()}; '
          f'receiver SO_RCVBUF {max(r.rcvbuf for r in receivers.values()):,} bytes; '
          f'{elapsed:.0f} s in all; 1M-iteration calibration loop '
          f'{calibration[0] * 1e3:.0f} ms before, {calibration[1] * 1e3:.0f} ms after.')
    print(f'{_package()}.\n')
    print('| case | µs/call | end-to-end µs/metric (best) | (median) | metrics/s (best) '
          '| delivered | wire B/metric | metrics/datagram |')
    print('|---|--:|--:|--:|--:|--:|--:|--:|')
    print('\n'.join(_row(CASES[name][2], samples[name]) for name in names))
    notes = [f'- {CASES[name][2]}: {samples[name][-1].note}'
             for name in names if samples[name][-1].note]
    if notes:
        print('\nLast run of each case:\n' + '\n'.join(notes))
    if profiler is not None:
        profiler.dump_stats(args.profile)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats('tottime').print_stats(25)
    # A drop the client counted (a full Unix datagram queue) is reported in
    # the delivered column; a line neither delivered nor counted is a failure.
    lossy = [name for name in names
             if any(s.delivered + s.dropped != s.count for s in samples[name])]
    if lossy:
        print(f'\nNOT every line was delivered once or counted as dropped: {", ".join(lossy)}')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
