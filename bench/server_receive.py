"""How many lines per second Aggregator.receive() takes on one core.

Run: .venv/bin/python bench/server_receive.py [--seconds 1.0]

Feeds 20-line packets of counters, timers, a mix, and counters tagged in
the DogStatsD (with a container id) and InfluxDB dialects straight to the
aggregator (no sockets), each for a fixed time, best of three, flushing
between rounds.  Bounded in time; prints one line per case.
"""

from __future__ import annotations

import argparse
import time

from sprockets_statsd.server.aggregator import Aggregator
from sprockets_statsd.server.config import AggregatorConfig

CASES = {
    'counters': b'\n'.join(b'bench.c%d:1|c' % i for i in range(20)),
    'timers': b'\n'.join(b'bench.t%d:%d|ms' % (i, i) for i in range(20)),
    'mix c/ms/g/s': b'\n'.join(
        [b'bench.c%d:1|c' % i for i in range(5)]
        + [b'bench.t%d:%d.5|ms' % (i, i) for i in range(5)]
        + [b'bench.g%d:+%d|g' % (i, i) for i in range(5)]
        + [b'bench.s%d:user%d|s' % (i, i) for i in range(5)]
    ),
    'DogStatsD tags': b'\n'.join(
        b'bench.c%d:1|c|#env:prod,host:web1|c:83c8a1' % i for i in range(20)
    ),
    'InfluxDB tags': b'\n'.join(b'bench.c%d,env=prod,host=web1:1|c' % i for i in range(20)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=1.0, help='per round (default 1)')
    args = parser.parse_args()
    for name, packet in CASES.items():
        aggregator = Aggregator(AggregatorConfig())
        best = 0.0
        for _ in range(3):
            sent = 0
            start = time.perf_counter()
            while time.perf_counter() - start < args.seconds:
                for _ in range(1000):
                    aggregator.receive(packet)
                sent += 1000
            best = max(best, sent * 20 / (time.perf_counter() - start))
            aggregator.flush(time.time())
        print(f'{name:>15}: {best:>12,.0f} lines/s (20 lines per packet, best of 3)')


if __name__ == '__main__':
    main()
