"""In-process benchmark of /metrics rendering: StatsdCollector at scale.

Strategy: an aggregator takes `--names` counter names (``scrape.c.n…``, as
bench/server_scrape.py sends them) for every flush; a collector takes the
flushes.  Timed by process CPU time (``time.process_time``), each step
apart: ``add()`` (what the event loop pays per flush), the merge of the
flush (``merge()``, in a worker thread in the server; part of ``add()``
before it existed), the first exposition, one after a flush with the same
keys, and `--rounds` after a flush with `--new` more names each.  With
``--memory``, each exposition is traced by ``tracemalloc`` instead: its peak
above the start, and what it leaves allocated.

Run from the repository root (or with PYTHONPATH at another tree)::

    .venv/bin/python bench/prometheus_render.py --names 500000
    .venv/bin/python bench/prometheus_render.py --names 500000 --memory
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from collections.abc import Callable

from sprockets_statsd.server.aggregator import Aggregator
from sprockets_statsd.server.config import AggregatorConfig
from sprockets_statsd.server.prometheus import StatsdCollector

__all__ = ['main']

T0 = 1_700_000_000


def _measure(what: str, call: Callable[[], object], memory: bool) -> None:
    gc.collect()
    if memory:
        tracemalloc.start()
        call()
        now, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f'| {what} | | {peak / 2**20:.0f} | {now / 2**20:.0f} |', flush=True)
    else:
        started = time.process_time()
        call()
        print(f'| {what} | {time.process_time() - started:.3f} | | |', flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--names', type=int, default=500_000)
    parser.add_argument('--new', type=int, default=5, help='names added per round')
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--memory', action='store_true', help='trace memory, not time')
    args = parser.parse_args(argv)
    config = AggregatorConfig(max_names=2 * args.names + args.new * args.rounds)
    aggregator = Aggregator(config)
    collector = StatsdCollector(config.percent_thresholds, config.histograms)
    merge = getattr(collector, 'merge', lambda: None)  # absent before it existed
    flushes = 0

    def flush(new: int = 0) -> None:
        nonlocal flushes
        for start in range(0, args.names, 10_000):
            aggregator.receive(''.join(
                f'scrape.c.n{i:07d}:{i % 1000 + 1}|c\n'
                for i in range(start, min(start + 10_000, args.names))).encode())
        aggregator.receive(''.join(
            f'scrape.new.f{flushes}n{i}:1|c\n' for i in range(new)).encode())
        snapshot = aggregator.flush(T0 + 10 * flushes)
        flushes += 1
        _measure(f'add() of flush {flushes}', lambda: collector.add(snapshot), args.memory)
        _measure(f'merge() of flush {flushes}', merge, args.memory)

    print(f'{args.names:,} counter names; {"tracemalloc MiB" if args.memory else "CPU s"}')
    print('| step | CPU s | peak MiB | left MiB |')
    print('|---|--:|--:|--:|')
    # The second flush adds the timestamp_lag gauge: keys settle after it.
    flush()
    flush()
    _measure('exposition, first', collector.exposition, args.memory)
    flush()
    _measure('exposition, same keys', collector.exposition, args.memory)
    for _ in range(args.rounds):
        flush(args.new)
        _measure(f'exposition, {args.new} new names', collector.exposition, args.memory)
    return 0


if __name__ == '__main__':
    sys.exit(main())
