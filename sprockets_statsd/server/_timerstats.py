"""Timer statistics, computed exactly as the reference's ``process_metrics``.

Strategy: the reference sums with plain left-to-right double additions over
the sorted values (cumulative sums, then sums of differences), so this
module does the same with :func:`itertools.accumulate` instead of
:func:`sum` or :func:`math.fsum`, whose rounding differs (Python 3.12's
:func:`sum` compensates).  The order of the keys is the reference's
emission order.

The names of the statistics depend only on the configuration, so they are
built once per threshold and bin (cached), not once per timer.
:class:`TimerStatistics` computes a whole flush's statistics on first use
rather than in :meth:`.Aggregator.flush`: the first reader is a sink's
render thread, so the event loop never waits for them.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import re
import threading
import types
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
    ValuesView,
)
from typing import TypeVar

from sprockets_statsd.server._finite import saturate, saturated
from sprockets_statsd.server._jsnumber import format_js_number, js_round
from sprockets_statsd.server._timertotals import TimerTotals
from sprockets_statsd.server.config import AggregatorConfig

_V = TypeVar('_V')

__all__ = [
    'SingleValue',
    'TimerData',
    'TimerStatistics',
    'bin_name',
    'histogram_bins',
    'idle_timer_stats',
    'percent_suffix',
    'single_value_names',
    'timer_stats',
    'with_totals',
]

# ``upper_90``, ``mean_top5``... are selected by ``upper_percent`` etc.
_PERCENT_KEY = re.compile(r'_(top)?\d+$')
# Distinct thresholds, bounds and statistic names in use: a handful per
# configuration, and a process has one configuration (tests a few dozen).
_NAME_CACHE_SIZE = 1024


@functools.lru_cache(maxsize=_NAME_CACHE_SIZE)
def percent_suffix(pct: float) -> str:
    """Name suffix of a threshold: ``90``, ``99_9``, ``top20``.

    :param pct: the threshold as configured
    """
    return format_js_number(pct).replace('.', '_', 1).replace('-', 'top', 1)


@functools.lru_cache(maxsize=_NAME_CACHE_SIZE)
def bin_name(bound: float) -> str:
    """Name of a histogram bin: ``bin_10``, ``bin_0_01``, ``bin_inf``.

    :param bound: the bin's upper bound (``math.inf`` for the catch-all)
    """
    text = 'inf' if bound == math.inf else format_js_number(bound)
    return 'bin_' + text.replace('.', '_', 1)


@functools.lru_cache(maxsize=_NAME_CACHE_SIZE)
def _threshold_names(pct: float) -> tuple[str, str, str, str, str]:
    """``count_``, ``mean_``, ``upper_``/``lower_``, ``sum_``, ``sum_squares_`` names."""
    suffix = percent_suffix(pct)
    return (
        'count_' + suffix,
        'mean_' + suffix,
        ('upper_' if pct > 0 else 'lower_') + suffix,
        'sum_' + suffix,
        'sum_squares_' + suffix,
    )


@functools.lru_cache(maxsize=_NAME_CACHE_SIZE)
def _histogram_key(bound: float) -> str:
    return 'histogram.' + bin_name(bound)


@functools.lru_cache(maxsize=_NAME_CACHE_SIZE)
def _selected(name: str, wanted: tuple[str, ...]) -> bool:
    """Whether ``calculated_timer_metrics`` `wanted` keeps statistic `name`."""
    return _PERCENT_KEY.sub('_percent', name.partition('.')[0]) in wanted


def _keep(stats: dict[str, float], wanted: tuple[str, ...] | None) -> dict[str, float]:
    if not wanted:
        return stats
    return {
        name: value for name, value in stats.items() if _selected(name, wanted)
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
                _threshold_names(pct)
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
                _threshold_names(pct)
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
            stats[_histogram_key(bound)] = i - start
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
        count_name, _, _, sum_name, squares_name = _threshold_names(pct)
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


@functools.lru_cache(maxsize=_NAME_CACHE_SIZE)
def single_value_names(thresholds: tuple[float, ...]) -> tuple[str, ...]:
    """The statistics of a timer with one value, in emission order.

    :param thresholds: ``percent_thresholds``
    """
    names: list[str] = []
    for pct in thresholds:
        names.extend(_threshold_names(pct))
    return (*names, *_SINGLE_VALUE_TAIL)


# The statistics after the thresholds' (see timer_stats).
_SINGLE_VALUE_TAIL = ('std', 'upper', 'lower', 'count', 'count_ps', 'sum',
                      'sum_squares', 'mean', 'median')


class SingleValue(Mapping[str, float]):
    """The statistics of a timer that got one value, as :func:`timer_stats`.

    Holds the value and the counts; the mapping is built when read.  Every
    threshold's count is 1, ``std`` is 0, the sums are the value and its
    square (saturated, see ``_finite``).

    :param names: the statistics' names (:func:`single_value_names`)
    :param value: the one value
    :param count: the rate-scaled sample count
    :param count_ps: the count per second
    """

    __slots__ = ('count', 'count_ps', 'names', 'value')

    def __init__(
        self, names: tuple[str, ...], value: float, count: float, count_ps: float
    ) -> None:
        self.names = names
        self.value = value
        self.count = count
        self.count_ps = count_ps

    @property
    def square(self) -> float:
        """The value's square, saturated."""
        return saturate(self.value * self.value)

    def values_in_order(self) -> tuple[float, ...]:
        """The statistics' values, in the order of :attr:`names`."""
        v, square = self.value, self.square
        thresholds = (len(self.names) - len(_SINGLE_VALUE_TAIL)) // 5
        return (1, v, v, v, square) * thresholds + (
            0.0, v, v, self.count, self.count_ps, v, square, v, v)

    def __getitem__(self, name: str) -> float:
        return dict(zip(self.names, self.values_in_order(), strict=True))[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def items(self) -> ItemsView[str, float]:
        return dict(zip(self.names, self.values_in_order(), strict=True)).items()

    def values(self) -> ValuesView[float]:
        return dict(zip(self.names, self.values_in_order(), strict=True)).values()


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


class TimerData(Mapping[str, Mapping[str, float]]):
    """One flush's timer statistics, in the timers' order.

    The statistics of a timer with one value or none (where no filter or
    histogram applies) are read from the timer itself: a
    :class:`SingleValue`, or the idle statistics.  The others were
    computed.

    :param timers: the raw values of each timer, sorted
    :param counts: the rate-scaled sample count of each timer
    :param computed: the statistics of every timer not read from its values
    :param single: the statistics' names of a single value
        (:func:`single_value_names`), or ``None`` when every timer is
        in `computed`
    :param interval: the flush interval in seconds, for ``count_ps``
    :param idle: the statistics of a timer without values
    """

    __slots__ = ('_computed', '_counts', '_idle', '_interval', '_single', '_timers')

    def __init__(
        self,
        timers: Mapping[str, Sequence[float]],
        counts: Mapping[str, float],
        computed: Mapping[str, Mapping[str, float]],
        single: tuple[str, ...] | None,
        interval: float,
        idle: Mapping[str, float],
    ) -> None:
        self._timers = timers
        self._counts = counts
        self._computed = computed
        self._single = single
        self._interval = interval
        self._idle = idle

    def __getitem__(self, key: str) -> Mapping[str, float]:
        stats = self._computed.get(key)
        if stats is not None:
            return stats
        return self.stats_of(self._timers[key], self._counts[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._timers)

    def __len__(self) -> int:
        return len(self._timers)

    def __contains__(self, key: object) -> bool:
        return key in self._timers

    @property
    def reads_values(self) -> bool:
        """Whether some timers' statistics are read from their values
        (:meth:`simple`, :meth:`stats_of`)."""
        return self._single is not None

    def stats_of(self, values: Sequence[float], count: float) -> Mapping[str, float]:
        """The statistics of a timer with no value or one, and `count`.

        :raises TypeError: when no timer is read from its values
        """
        if self._single is None:
            raise TypeError('every timer of this flush has computed statistics')
        if not values:
            return self._idle
        return SingleValue(self._single, values[0], count, count / self._interval)

    def simple(self, keys: Sequence[str]) -> Iterator[tuple[Sequence[float], float]] | None:
        """``(values, count)`` of each of `keys`, if every one of them is read
        from its values (:meth:`stats_of`); otherwise ``None``.

        An iterator, to be read once: it may reuse one tuple for every pair
        (as ``zip`` does), which spares a flush of 100k timers as many
        allocations (and the garbage collector's passes they would cause).

        :param keys: timers of this flush
        """
        computed = self._computed
        if self._single is None or (computed and any(map(computed.__contains__, keys))):
            return None
        return zip(_each(self._timers, keys), _each(self._counts, keys), strict=True)


def _each(mapping: Mapping[str, _V], keys: Sequence[str]) -> Sequence[_V]:
    """``mapping[key]`` for each of `keys`, looked up in C.

    (``map(mapping.__getitem__, keys)`` calls a slot wrapper per key when
    `mapping` is a ``MappingProxyType``: several times slower.)
    """
    if len(keys) == 1:
        return (mapping[keys[0]],)
    return operator.itemgetter(*keys)(mapping)  # type: ignore[no-any-return]
