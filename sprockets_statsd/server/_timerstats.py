"""Timer statistics, computed exactly as the reference's ``process_metrics``.

Strategy: the reference sums with plain left-to-right double additions over
the sorted values (cumulative sums, then sums of differences), so this
module does the same with :func:`itertools.accumulate` instead of
:func:`sum` or :func:`math.fsum`, whose rounding differs (Python 3.12's
:func:`sum` compensates).  The order of the keys is the reference's
emission order.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence

from sprockets_statsd.server._jsnumber import format_js_number, js_round

__all__ = [
    'bin_name',
    'histogram_bins',
    'idle_timer_stats',
    'percent_suffix',
    'timer_stats',
]

# ``upper_90``, ``mean_top5``... are selected by ``upper_percent`` etc.
_PERCENT_KEY = re.compile(r'_(top)?\d+$')


def percent_suffix(pct: float) -> str:
    """Name suffix of a threshold: ``90``, ``99_9``, ``top20``.

    :param pct: the threshold as configured
    """
    return format_js_number(pct).replace('.', '_', 1).replace('-', 'top', 1)


def bin_name(bound: float) -> str:
    """Name of a histogram bin: ``bin_10``, ``bin_0_01``, ``bin_inf``.

    :param bound: the bin's upper bound (``math.inf`` for the catch-all)
    """
    text = 'inf' if bound == math.inf else format_js_number(bound)
    return 'bin_' + text.replace('.', '_', 1)


def _keep(stats: dict[str, float], wanted: tuple[str, ...] | None) -> dict[str, float]:
    if not wanted:
        return stats
    return {
        name: value
        for name, value in stats.items()
        if _PERCENT_KEY.sub('_percent', name.partition('.')[0]) in wanted
    }


def idle_timer_stats(wanted: tuple[str, ...] | None) -> dict[str, float]:
    """Statistics of a timer without values in the interval: zero counts.

    :param wanted: ``calculated_timer_metrics`` (``None`` for all)
    """
    return _keep({'count': 0.0, 'count_ps': 0.0}, wanted)


def timer_stats(
    values: Sequence[float],
    count: float,
    flush_interval: float,
    thresholds: Sequence[float],
    bins: Sequence[float],
    wanted: tuple[str, ...] | None,
) -> dict[str, float]:
    """Compute the statistics of one timer for one interval.

    :param values: the raw values, sorted ascending, at least one
    :param count: the rate-scaled number of samples
    :param flush_interval: seconds
    :param thresholds: ``percent_thresholds``
    :param bins: histogram bounds for this key (empty for none)
    :param wanted: ``calculated_timer_metrics`` (``None`` for all)
    :returns: name -> value in emission order; histogram bins are named
        ``histogram.bin_<bound>``
    """
    n = len(values)
    low = values[0]
    high = values[-1]
    sums = list(itertools.accumulate(values))
    squares = list(itertools.accumulate(v * v for v in values))
    stats: dict[str, float] = {}
    for pct in thresholds:
        k = n
        total = low
        total_squares = low * low
        mean = low
        boundary = high
        if n > 1:
            k = js_round(abs(pct) / 100 * n)
            if k == 0:
                continue
            if pct > 0:
                boundary = values[k - 1]
                total = sums[k - 1]
                total_squares = squares[k - 1]
            else:
                boundary = values[n - k]
                # The reference indexes [n - k - 1], which is -1 (undefined,
                # giving NaN) when k == n; subtracting nothing is the intent.
                below = n - k - 1
                total = sums[-1] - (sums[below] if below >= 0 else 0.0)
                total_squares = squares[-1] - (squares[below] if below >= 0 else 0.0)
            mean = total / k
        suffix = percent_suffix(pct)
        stats['count_' + suffix] = k
        stats['mean_' + suffix] = mean
        stats[('upper_' if pct > 0 else 'lower_') + suffix] = boundary
        stats['sum_' + suffix] = total
        stats['sum_squares_' + suffix] = total_squares
    total = sums[-1]
    mean = total / n
    diffs = 0.0
    for v in values:
        diffs += (v - mean) * (v - mean)
    mid = n // 2
    median = values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2
    stats['std'] = math.sqrt(diffs / n)
    stats['upper'] = high
    stats['lower'] = low
    stats['count'] = count
    stats['count_ps'] = count / flush_interval
    stats['sum'] = total
    stats['sum_squares'] = squares[-1]
    stats['mean'] = mean
    stats['median'] = median
    if bins:
        i = 0
        for bound in bins:
            start = i
            while i < n and values[i] < bound:
                i += 1
            stats['histogram.' + bin_name(bound)] = i - start
    return _keep(stats, wanted)


def histogram_bins(
    key: str, histograms: Sequence[tuple[str, Sequence[float]]]
) -> Sequence[float]:
    """The bins of the first histogram whose metric occurs in `key`.

    :param key: the timer's key
    :param histograms: ``histograms`` from the configuration
    """
    for metric, bins in histograms:
        if metric in key:
            return bins
    return ()
