"""The server's one rule for values a double cannot hold: saturate.

Samples are finite: the parser rejects a value, or a value scaled by its
sample rate, that is not (a bad line).  Aggregates of finite samples can
still overflow: two counters of ``1e308``, a timer's sum of squares, a
running total over many flushes.  Every aggregate is therefore *saturated*
where it is made: a value above the largest double becomes the largest
double (``1.7976931348623157e+308``), one below the lowest becomes its
negative.  A statistic that overflow leaves undefined (the difference of
two overflowed sums, NaN) is a timer statistic, never negative, and
becomes the largest double too.  So no output ever shows NaN or Infinity,
and every output shows the same number.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

__all__ = ['LARGEST', 'saturate', 'saturated', 'saturated_list', 'total']

#: The largest finite double, where saturated values stop.
LARGEST = sys.float_info.max

_K = TypeVar('_K')


def saturate(x: float) -> float:
    """`x` if finite, else the largest double of its sign (NaN: positive).

    :param x: any number
    """
    if x - x == 0:  # false only for NaN and the infinities
        return x
    return -LARGEST if x < 0 else LARGEST


def saturated(values: Mapping[_K, float]) -> Mapping[_K, float]:
    """`values` itself when all are finite, else a saturated copy.

    :param values: numbers by key
    """
    if _all_finite(values.values()):
        return values
    return {key: saturate(value) for key, value in values.items()}


def saturated_list(values: list[float]) -> list[float]:
    """`values` itself when all are finite, else a saturated copy.

    :param values: numbers
    """
    if _all_finite(values):
        return values
    return list(map(saturate, values))


def _all_finite(values: Iterable[float]) -> bool:
    """Whether every one of `values` is finite, in one pass in C.

    Their sum is finite only if each of them is (an overflowing sum of
    finite values only costs the caller a copy, which changes nothing).
    """
    whole = sum(values)
    return whole - whole == 0


def total(values: Sequence[float]) -> float:
    """The exactly rounded sum of `values` (:func:`math.fsum`), saturated.

    :param values: finite numbers
    """
    try:
        return saturate(math.fsum(values))
    except OverflowError:
        # Past the largest double on the way: the plain sum says which side.
        return saturate(sum(values))
