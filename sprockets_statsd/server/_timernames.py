"""The names of the timer statistics: ``mean_90``, ``histogram.bin_10``...

The names depend only on the configuration (the thresholds, the bins and
``calculated_timer_metrics``), so each is built once per threshold, bin or
statistic and cached, not once per timer.
"""

from __future__ import annotations

import functools
import math
import re

from sprockets_statsd.server._jsnumber import format_js_number

__all__ = [
    'SINGLE_VALUE_TAIL',
    'bin_name',
    'histogram_key',
    'percent_suffix',
    'selected',
    'single_value_names',
    'threshold_names',
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
def threshold_names(pct: float) -> tuple[str, str, str, str, str]:
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
def histogram_key(bound: float) -> str:
    return 'histogram.' + bin_name(bound)


@functools.lru_cache(maxsize=_NAME_CACHE_SIZE)
def selected(name: str, wanted: tuple[str, ...]) -> bool:
    """Whether ``calculated_timer_metrics`` `wanted` keeps statistic `name`."""
    return _PERCENT_KEY.sub('_percent', name.partition('.')[0]) in wanted


@functools.lru_cache(maxsize=_NAME_CACHE_SIZE)
def single_value_names(thresholds: tuple[float, ...]) -> tuple[str, ...]:
    """The statistics of a timer with one value, in emission order.

    :param thresholds: ``percent_thresholds``
    """
    names: list[str] = []
    for pct in thresholds:
        names.extend(threshold_names(pct))
    return (*names, *SINGLE_VALUE_TAIL)


# The statistics after the thresholds' (see _timerstats.timer_stats), in
# the order SingleValue (in _timerdata) gives their values.
SINGLE_VALUE_TAIL = ('std', 'upper', 'lower', 'count', 'count_ps', 'sum',
                     'sum_squares', 'mean', 'median')
