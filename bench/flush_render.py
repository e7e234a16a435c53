"""In-process benchmark of one flush: the aggregator's swap, the timer statistics, the rendering.

Strategy: an aggregator takes `--names` names of one kind (one line each,
values ``1..1000``, as ``bench/server_memory.py`` sends them), then for
`--flushes` flushes in a row (the first holds the new names, the others
the same names again, or idle with ``--idle``) the CPU time
(``time.process_time``) of ``Aggregator.flush`` (on the server's event
loop), of reading ``Snapshot.timer_data`` (the statistics) and of
``graphite.render_chunks`` into ``/dev/null`` (a sink's thread) is
printed, with the payload's size.

Run from the repository root::

    .venv/bin/python bench/flush_render.py --kind timer --names 100000
    .venv/bin/python bench/flush_render.py --kind counter --names 1000000 --idle
"""

from __future__ import annotations

import argparse
import sys
import time

from sprockets_statsd.server import graphite
from sprockets_statsd.server.aggregator import Aggregator
from sprockets_statsd.server.config import AggregatorConfig

__all__ = ['main']

#: Lines per packet handed to the aggregator, as a busy UDP sender packs them.
LINES_PER_PACKET = 20
#: Flush interval, seconds: that of bench/server_memory.py's 100k-timer case.
INTERVAL = 5.0


def _feed(aggregator: Aggregator, lines: list[str]) -> None:
    for start in range(0, len(lines), LINES_PER_PACKET):
        aggregator.receive('\n'.join(lines[start:start + LINES_PER_PACKET]).encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--kind', choices=('counter', 'timer'), default='timer')
    parser.add_argument('--names', type=int, default=100_000)
    parser.add_argument('--flushes', type=int, default=3)
    parser.add_argument('--idle', action='store_true',
                        help='send the names only before the first flush')
    args = parser.parse_args(argv)
    config = AggregatorConfig(flush_interval=INTERVAL, max_names=2 * args.names + 1000)
    aggregator = Aggregator(config)
    code = 'c' if args.kind == 'counter' else 'ms'
    lines = [f'bench.{args.kind}.n{i:07d}:{i % 1000 + 1}|{code}' for i in range(args.names)]
    print(f'{args.names:,} {args.kind} names, CPython {sys.version.split()[0]}')
    print('| flush | flush() s | statistics s | rendering s | payload MB |')
    print('|--:|--:|--:|--:|--:|')
    now = time.time()
    with open('/dev/null', 'wb') as sink:
        for flush in range(args.flushes):
            if flush == 0 or not args.idle:
                _feed(aggregator, lines)
            start = time.process_time()
            snapshot = aggregator.flush(now + flush * INTERVAL)
            swapped = time.process_time()
            snapshot.timer_data  # noqa: B018 - computed on first read
            computed = time.process_time()
            size = 0
            for chunk in graphite.render_chunks(snapshot, config, graphite.GraphiteStats()):
                size += sink.write(chunk)
            rendered = time.process_time()
            print(f'| {flush + 1} | {swapped - start:.3f} | {computed - swapped:.3f} '
                  f'| {rendered - computed:.3f} | {size / 1e6:.1f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
