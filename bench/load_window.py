"""In-process benchmark of the load sink's frames: a flush merged, and /N.

Strategy: an aggregator and a frame store with a hand-moved clock take
`--names` counters (``1..1000``) in every one of fifteen one-minute frames
(each flush a third of the names with new values, the rest idle at 0, as
the aggregator reports them).  Printed: the CPU time of merging each
flush (``FrameStore.merged``, in a worker thread in the server) and of
taking it in (``FrameStore.commit``, on the event loop), then for
``/15``, ``/1`` and ``/5/full`` the CPU time of the JSON answer and the
peak of memory traced
by ``tracemalloc`` during one answer.  Each path is answered four times:
first (its names laid out, the sums of its complete frames made), after a
flush into the same frame (what most answers cost), after a flush that
brought 1,000 new names (inserted into the names laid out), and after the
first flush of a new frame, once the sums of the complete frames are made
again (which the load sink does in its thread for the windows asked for).
Also printed: the CPU time the load sink's thread spends at each new frame
to keep ``/15`` ready once some ``/N`` has been asked for (its complete
frames' sum rolled on, its names laid out), and a first ``/15`` answer
then; and at each new frame of a server nobody has asked, which keeps
``/15``'s sum and its names sorted (not written) from its start, the CPU
time of keeping them, what they hold (``tracemalloc``, over the last
frame, whose names are sorted anew) and the server's very first ``/15``.

Run from the repository root::

    .venv/bin/python bench/load_window.py --names 500000
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc

from sprockets_statsd.server._countersums import KeptSums
from sprockets_statsd.server._loadjson import Layouts, prepare, render
from sprockets_statsd.server.aggregator import Aggregator
from sprockets_statsd.server.config import AggregatorConfig
from sprockets_statsd.server.frames import FrameStore, Window

__all__ = ['main']

FRAMES = 15
FRAME_LENGTH = 60.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--names', type=int, default=500_000)
    args = parser.parse_args(argv)
    now = [6_000_000.0]
    aggregator = Aggregator(AggregatorConfig(max_names=2 * args.names))
    store = FrameStore(FRAME_LENGTH, clock=lambda: now[0])
    packets = [
        '\n'.join(f'bench.c.n{i:07d}:{i % 1000 + 1}|c'
                  for i in range(start, min(start + 1000, args.names))).encode()
        for start in range(0, args.names, 1000)
    ]

    def flush() -> tuple[float, float]:
        """Merge a flush as the load sink does: CPU s in the thread, on the loop."""
        snapshot = aggregator.flush(now[0])
        started = time.process_time()
        frame = store.merged(snapshot, store.current_index(), store.newest())
        merged = time.process_time()
        store.commit(frame)
        return merged - started, time.process_time() - merged

    # What the load sink's thread keeps ready for /15 once queried, and
    # from the start (kept apart from what the answers below make, which
    # start from nothing).
    ready_sums, ready_layouts, start_sums = KeptSums(), Layouts(), KeptSums()
    start_layouts = Layouts()

    def ready() -> Window:
        return Window(store.window(FRAMES).frames, ready_sums)

    def from_start() -> Window:
        return Window(store.window(FRAMES).frames, start_sums)

    merges, readied, rolled = [], [], []
    for index in range(FRAMES):
        for packet in packets if index == 0 else packets[index % 3::3]:
            aggregator.receive(packet)
        merges.append(flush())
        if index:  # a new frame, as the load sink's thread does
            started = time.process_time()
            prepare(ready(), ready_layouts)
            readied.append(time.process_time() - started)
            if index == FRAMES - 1:  # its names sorted anew, as when they changed
                start_layouts = Layouts()
                tracemalloc.start()
            started = time.process_time()
            window = from_start()
            prepare(window, start_layouts, texts=False)
            start_sums.forget_before(window.frames[0].index)
            rolled.append(time.process_time() - started)
        now[0] += FRAME_LENGTH
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    now[0] -= FRAME_LENGTH / 2  # within the last frame
    print(f'{args.names:,} counters x {FRAMES} frames')
    print('flush merged, CPU s in the worker thread: '
          + ' '.join(f'{thread:.3f}' for thread, _ in merges))
    print('flush committed, CPU ms on the event loop: '
          + ' '.join(f'{loop * 1000:.2f}' for _, loop in merges))
    started = time.process_time()
    render(ready(), int(store.frame_start(store.current_index())), ready_layouts)
    print('/15 kept ready at each new frame, CPU s in the worker thread: '
          + ' '.join(f'{cpu:.2f}' for cpu in readied)
          + f'; first answer then {time.process_time() - started:.2f}')
    started = time.process_time()
    render(from_start(), int(store.frame_start(store.current_index())), start_layouts)
    print('/15 sum and sorted names kept from the start, CPU s in the worker thread: '
          + ' '.join(f'{cpu:.2f}' for cpu in rolled)
          + f' (the last, traced by tracemalloc and its names sorted anew, holds '
          f'{held / 2**20:.0f} MiB); '
          f'the first /15 of the server then {time.process_time() - started:.2f}')
    layouts = Layouts()

    def answer(path: str, count: int, full: bool) -> tuple[float, bytes]:
        last = int(store.frame_start(store.current_index()))
        started = time.process_time()
        body = render(store.window(count, full=full), last, layouts)
        return time.process_time() - started, body

    for count, full in ((15, False), (1, False), (5, True)):
        path = f'/{count}' + ('/full' if full else '')
        first, body = answer(path, count, full)
        aggregator.receive(packets[0])
        flush()
        steady, _ = answer(path, count, full)
        aggregator.receive('\n'.join(
            f'bench.new{path}.n{i:04d}:1|c' for i in range(1000)).encode())
        flush()
        grown, _ = answer(path, count, full)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        answer(path, count, full)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        now[0] += FRAME_LENGTH
        aggregator.receive(packets[0])
        added = sum(flush())
        # As the load sink does in its thread when a flush starts a frame.
        started = time.process_time()
        store.window(count, full=full).keep_sums()
        kept = time.process_time() - started
        rolled, _ = answer(path, count, full)
        print(f'{path}: CPU s {first:.2f} first, {steady:.2f} after a flush, {grown:.2f} '
              f'after one with 1,000 new names; in a new '
              f'frame {added:.2f} to merge its first flush, {kept:.2f} to sum the '
              f'complete frames, {rolled:.2f} to answer; traced peak '
              f'{peak / 2**20:.0f} MiB; body {len(body) / 1e6:.1f} MB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
