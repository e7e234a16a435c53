"""The admin console's view of an aggregator's interval in progress.

What the ``counters``, ``timers``, ``gauges`` and ``sets`` commands show,
and what the ``del*`` commands delete.  Nothing here runs on the hot path:
the view reads and trims the dictionaries that
:meth:`.Aggregator.receive` fills, and every method returns copies, so that
a reply never sees a half-updated dictionary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from sprockets_statsd.server._finite import saturated

__all__ = ['IntervalView', 'MetricKind']

#: The four kinds of metric, as the admin console names them.
MetricKind = Literal['counters', 'timers', 'gauges', 'sets']


class IntervalView:
    """The admin console's methods of :class:`.Aggregator`.

    Declares the dictionaries it reads; the aggregator makes them (and
    replaces all but the gauges at every flush).
    """

    _counters: dict[str, float]
    # Every counter key at 0.0: the next interval starts from a copy.
    _zeros: dict[str, float]
    _timers: dict[str, list[float] | tuple[float, ...]]
    _timer_counters: dict[str, float]
    _gauges: dict[str, float]
    _gauge_ttl: dict[str, int]
    _sets: dict[str, set[str]]
    # The internal counters, which the hot path counts into.
    _bad_key: str
    _packets_key: str
    _metrics_key: str
    #: Recomputes how many names may still be created.
    _measure_room: Callable[[], None]

    def current_counters(self) -> dict[str, float]:
        """The counters of the interval in progress, internal ones included."""
        return dict(saturated(self._counters))

    def current_timers(self) -> dict[str, list[float]]:
        """The raw values each timer received in the interval in progress."""
        return {key: list(values) for key, values in self._timers.items()}

    def current_gauges(self) -> dict[str, float]:
        """The current value of every gauge."""
        return dict(saturated(self._gauges))

    def current_sets(self) -> dict[str, set[str]]:
        """The members each set received in the interval in progress."""
        return {key: set(members) for key, members in self._sets.items()}

    def delete(self, kind: MetricKind, pattern: str) -> list[str]:
        """Forget metrics of one kind, as the reference's admin console does.

        `pattern` is an exact key, or a prefix followed by ``.*`` that
        matches every key starting with the prefix and its dot.  The three
        internal counters are zeroed instead of deleted, since the hot path
        counts into them.

        :param kind: which kind of metric to delete
        :param pattern: ``name`` or ``prefix.*``
        :returns: the keys deleted, in the order they were stored
        """
        stores: dict[str, dict[str, Any]] = {
            'counters': self._counters,
            'timers': self._timers,
            'gauges': self._gauges,
            'sets': self._sets,
        }
        store = stores[kind]
        folder = pattern[:-1] if pattern.endswith('.*') else None
        names = [
            name
            for name in store
            if name == pattern or (folder is not None and name.startswith(folder))
        ]
        internal = (self._bad_key, self._packets_key, self._metrics_key)
        for name in names:
            if kind == 'counters' and name in internal:
                store[name] = 0.0
                continue
            del store[name]
            if kind == 'counters':
                del self._zeros[name]
            elif kind == 'timers':
                del self._timer_counters[name]
            elif kind == 'gauges':
                self._gauge_ttl.pop(name, None)
        self._measure_room()
        return names
