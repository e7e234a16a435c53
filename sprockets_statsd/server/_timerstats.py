"""Timer statistics, computed exactly as the reference's ``process_metrics``.

Strategy: the reference sums with plain left-to-right double additions over
the sorted values (cumulative sums, then sums of differences), so this
module does the same with :func:`itertools.accumulate` instead of
:func:`sum` or :func:`math.fsum`, whose rounding differs (Python 3.12's
:func:`sum` compensates).  The order of the keys is the reference's
emission order.

The names of the statistics are :mod:`._timernames`.
:class:`TimerStatistics` computes a whole flush's statistics on first use
rather than in :meth:`.Aggregator.flush`: the first reader is a sink's
render thread, so the event loop never waits for them.  Most timers need
no computing at all: :class:`._timerdata.TimerData` reads their statistics
from their values.
"""

from __future__ import annotations

import itertools
import math
import operator
import threading
import types
from collections.abc import Callable, Iterable, Mapping, Sequence

from sprockets_statsd.server._aggregatorconfig import AggregatorConfig
from sprockets_statsd.server._finite import saturated
from sprockets_statsd.server._jsnumber import js_round
from sprockets_statsd.server._timerdata import TimerData
from sprockets_statsd.server._timernames import (
    histogram_key,
    selected,
    single_value_names,
    threshold_names,
)
from sprockets_statsd.server._timertotals import TimerTotals

__all__ = [
    'TimerStatistics',
    'histogram_bins',
    'idle_timer_stats',
    'timer_stats',
    'with_totals',
]


def _keep(stats: dict[str, float], wanted: tuple[str, ...] | None) -> dict[str, float]:
    if not wanted:
        return stats
    return {
        name: value for name, value in stats.items() if selected(name, wanted)
    }


def idle_timer_stats(wanted: tuple[str, ...] | None) -> dict[str, float]:
    """Statistics of a timer without values in the interval: zero counts.

    :param wanted: ``calculated_timer_metrics`` (``None`` for all)
    """
    # count_ps first: the reference assigns both in one chained
    # assignment, which creates count_ps first.
    return _keep({'count_ps': 0.0, 'count': 0.0}, wanted)


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
    stats: dict[str, float] = {}
    if n == 1:
        # Every threshold selects the one value: the loop below without
        # the cumulative sums, which are most of a single value's cost.
        square = low * low
        for pct in thresholds:
            count_name, mean_name, bound_name, sum_name, squares_name = (
                threshold_names(pct)
            )
            stats[count_name] = 1
            stats[mean_name] = low
            stats[bound_name] = high
            stats[sum_name] = low
            stats[squares_name] = square
        total = low
        total_squares = square
        mean = total / n
        stats['std'] = math.sqrt((low - mean) * (low - mean) / n)
        median = low
    else:
        sums = list(itertools.accumulate(values))
        squares = list(itertools.accumulate(map(operator.mul, values, values)))
        for pct in thresholds:
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
            count_name, mean_name, bound_name, sum_name, squares_name = (
                threshold_names(pct)
            )
            stats[count_name] = k
            stats[mean_name] = total / k
            stats[bound_name] = boundary
            stats[sum_name] = total
            stats[squares_name] = total_squares
        total = sums[-1]
        total_squares = squares[-1]
        mean = total / n
        diffs = 0.0
        for v in values:
            diffs += (v - mean) * (v - mean)
        stats['std'] = math.sqrt(diffs / n)
        mid = n // 2
        median = values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2
    stats['upper'] = high
    stats['lower'] = low
    stats['count'] = count
    stats['count_ps'] = count / flush_interval
    stats['sum'] = total
    stats['sum_squares'] = total_squares
    stats['mean'] = mean
    stats['median'] = median
    if bins:
        i = 0
        for bound in bins:
            start = i
            while i < n and values[i] < bound:
                i += 1
            stats[histogram_key(bound)] = i - start
    return _keep(stats, wanted)


def with_totals(
    stats: dict[str, float],
    totals: TimerTotals,
    sampled: int,
    thresholds: Sequence[float],
) -> dict[str, float]:
    """Correct a sampled timer's statistics with its exact totals.

    ``upper``, ``lower``, ``sum``, ``sum_squares``, ``mean`` and ``std``
    become exact (``std`` from the sums); each threshold's ``count_P`` is
    exact and its ``sum_P`` and ``sum_squares_P`` are scaled up from the
    sample; ``mean_P``, the threshold bounds, ``median`` and histogram bins
    (scaled counts) remain estimates from the sample.

    :param stats: :func:`timer_stats` of the sample, before filtering
    :param totals: the exact totals of every value received
    :param sampled: how many values the sample holds
    :param thresholds: ``percent_thresholds``
    """
    n = totals.count
    scale = n / sampled
    for pct in thresholds:
        count_name, _, _, sum_name, squares_name = threshold_names(pct)
        if count_name in stats:
            stats[count_name] = js_round(abs(pct) / 100 * n)
            stats[sum_name] *= scale
            stats[squares_name] *= scale
    mean = totals.total / n
    stats['upper'] = totals.upper
    stats['lower'] = totals.lower
    stats['sum'] = totals.total
    stats['sum_squares'] = totals.squares
    stats['mean'] = mean
    stats['std'] = math.sqrt(max(totals.squares / n - mean * mean, 0.0))
    for name in stats:
        if name.startswith('histogram.'):
            stats[name] = js_round(stats[name] * scale)
    return stats


def histogram_bins(
    key: str, histograms: Sequence[tuple[str, Sequence[float]]]
) -> Sequence[float]:
    """The bins of the first histogram whose metric matches `key`.

    A metric ending with ``*`` matches the keys that start with the text
    before it (``api.*``; ``*`` alone matches every timer); any other
    metric matches the keys that contain it, as in the reference.

    :param key: the timer's key
    :param histograms: ``histograms`` from the configuration
    """
    for metric, bins in histograms:
        if metric[-1:] == '*':
            if key.startswith(metric[:-1]):
                return bins
        elif metric in key:
            return bins
    return ()


class TimerStatistics:
    """The statistics of one flush's timers, computed once, when first read.

    Safe to read from several threads: the first reader computes, the
    others wait for its result.

    :param timers: the raw values of each timer, sorted; empty for an idle
        timer
    :param counts: the rate-scaled sample count of each timer
    :param config: thresholds, histograms, the flush interval and
        ``calculated_timer_metrics``
    :param clock: monotonic clock in seconds, to measure the computation
    :param totals: exact totals of the timers whose values were sampled
    """

    def __init__(
        self,
        timers: Mapping[str, Sequence[float]],
        counts: Mapping[str, float],
        config: AggregatorConfig,
        clock: Callable[[], float],
        totals: Mapping[str, TimerTotals] | None = None,
    ) -> None:
        self._totals = totals or {}
        self._timers = timers
        self._counts = counts
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._result: tuple[Mapping[str, Mapping[str, float]], int] | None = None

    @property
    def data(self) -> Mapping[str, Mapping[str, float]]:
        """Each timer's statistics, in emission order (see :func:`timer_stats`)."""
        return self._computed()[0]

    @property
    def processing_time(self) -> int:
        """Whole milliseconds the computation took."""
        return self._computed()[1]

    def _computed(self) -> tuple[Mapping[str, Mapping[str, float]], int]:
        result = self._result
        if result is None:
            with self._lock:
                result = self._result
                if result is None:
                    result = self._result = self._compute()
        return result

    def _compute(self) -> tuple[Mapping[str, Mapping[str, float]], int]:
        start = self._clock()
        config = self._config
        interval = config.flush_interval
        thresholds = config.percent_thresholds
        histograms = config.histograms
        wanted = config.calculated_timer_metrics
        counts = self._counts
        timers = self._timers
        # Idle timers all have the same read-only statistics.
        idle = types.MappingProxyType(idle_timer_stats(wanted))
        computed: dict[str, Mapping[str, float]] = {}
        totals = self._totals
        # Most timers of a big flush got one value, or none: their
        # statistics are that value, its square and the count, or the idle
        # ones, which TimerData reads from the timers themselves (nothing is
        # built per timer) where no filter or histogram changes the list.
        # Only the others are computed here.
        single = None if wanted or histograms else single_value_names(thresholds)
        if single is None:
            others: Iterable[str] = timers
        elif totals:
            others = [k for k, v in timers.items() if len(v) > 1 or k in totals]
        else:
            # The same, in C: the keys whose timers hold more than one value.
            others = list(itertools.compress(timers, map(
                operator.lt, itertools.repeat(1), map(len, timers.values()))))
        for key in others:
            values = timers[key]
            if values:
                bins = histogram_bins(key, histograms) if histograms else ()
                exact = totals.get(key)
                if exact is None:
                    stats = timer_stats(values, counts[key], interval, thresholds,
                                        bins, wanted)
                else:
                    stats = _keep(with_totals(
                        timer_stats(values, counts[key], interval, thresholds, bins, None),
                        exact, len(values), thresholds,
                    ), wanted)
                # Sums of finite values can overflow (see _finite).
                computed[key] = types.MappingProxyType(saturated(stats))
            else:
                computed[key] = idle
        data = TimerData(timers, counts, computed, single, interval, idle)
        elapsed = js_round((self._clock() - start) * 1000)
        return data, elapsed
