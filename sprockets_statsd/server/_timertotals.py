"""Exact totals for a timer whose values outgrow ``max_timer_values``.

Strategy: a timer keeps at most ``max_timer_values`` values per interval.
Past that, the kept list becomes a uniform random sample of every value
received (reservoir sampling, Vitter's algorithm R), and a
:class:`TimerTotals` carries the exact count, sum, sum of squares, minimum
and maximum.  The statistics then take those from the totals and only the
percentiles, the median and the histogram from the sample.
"""

from __future__ import annotations

import dataclasses
import random

__all__ = ['TimerTotals']


@dataclasses.dataclass
class TimerTotals:
    """Exact aggregates of every value a timer received in one interval.

    :param count: values received (not rate-scaled)
    :param total: their sum
    :param squares: the sum of their squares
    :param lower: the smallest
    :param upper: the largest
    """

    count: int
    total: float
    squares: float
    lower: float
    upper: float

    @classmethod
    def of(cls, values: list[float]) -> TimerTotals:
        """Totals of the values kept so far (at least one)."""
        total = squares = 0.0
        for value in values:
            total += value
            squares += value * value
        return cls(len(values), total, squares, min(values), max(values))

    def add(self, value: float, sample: list[float], chooser: random.Random) -> None:
        """Count `value` exactly and let it replace a sampled value at random.

        After ``n`` values every one of them is in `sample` with the same
        probability, ``len(sample) / n``.
        """
        self.count += 1
        self.total += value
        self.squares += value * value
        if value < self.lower:
            self.lower = value
        elif value > self.upper:
            self.upper = value
        slot = chooser.randrange(self.count)
        if slot < len(sample):
            sample[slot] = value
