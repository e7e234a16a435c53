"""One flush's timer statistics as a mapping, most of it read from the values.

Strategy: most timers of a big flush got one value or none, and their
statistics are that value, its square and the count, or the idle ones.
:class:`TimerData` builds nothing per such timer: it reads the statistics
from the timer itself when asked (a :class:`SingleValue`), and holds only
those :class:`._timerstats.TimerStatistics` had to compute.
"""

from __future__ import annotations

import operator
from collections.abc import ItemsView, Iterator, Mapping, Sequence, ValuesView
from typing import TypeVar

from sprockets_statsd.server._finite import saturate
from sprockets_statsd.server._timernames import SINGLE_VALUE_TAIL

__all__ = ['SingleValue', 'TimerData']

_V = TypeVar('_V')


class SingleValue(Mapping[str, float]):
    """The statistics of a timer that got one value, as :func:`._timerstats.timer_stats`.

    Holds the value and the counts; the mapping is built when read.  Every
    threshold's count is 1, ``std`` is 0, the sums are the value and its
    square (saturated, see ``_finite``).

    :param names: the statistics' names (:func:`._timernames.single_value_names`)
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
        thresholds = (len(self.names) - len(SINGLE_VALUE_TAIL)) // 5
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
        (:func:`._timernames.single_value_names`), or ``None`` when every
        timer is in `computed`
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
