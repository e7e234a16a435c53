"""Prometheus exposition of the statsd aggregates: a custom collector.

Strategy: Prometheus expects cumulative counters, statsd flushes
per-interval deltas.  The collector therefore keeps a running total per
counter and timer, fed by every flush, and exposes the latest flush for
everything else: gauge values and set sizes; a timer's quantiles are those
of the latest flush in which it received values.  Totals
are kept only for keys present in the latest flush, so memory follows
the aggregator's keys; a key that comes back after being deleted starts
from zero again, which Prometheus treats as a counter reset.

Names follow one rule (see :func:`prometheus_name`): the part of the key
before the first ``;`` has every character other than ``[A-Za-z0-9_]``
replaced by ``_`` (and gets a leading ``_`` if it starts with a digit);
the ``;k=v`` tags become labels.  Counters are exposed as ``<name>_total``,
timers as the summary ``<name>_seconds``, gauges and sets as ``<name>``.
"""

from __future__ import annotations

import logging
import re
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from sprockets_statsd.server._finite import saturate, saturated, total
from sprockets_statsd.server._jsnumber import js_round
from sprockets_statsd.server.aggregator import Snapshot

__all__ = ['CONTENT_TYPE', 'StatsdCollector', 'prometheus_labels', 'prometheus_name']

logger = logging.getLogger(__name__)

#: The text exposition format every Prometheus version reads.
CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

_COUNTER_DOC = 'statsd counter: the total since the server started'
_TIMER_DOC = 'statsd timer: quantiles of the latest flush with values, totals since the start'
_GAUGE_DOC = 'statsd gauge'
_SET_DOC = 'statsd set: distinct members in the last flush'

_INVALID = re.compile(r'[^A-Za-z0-9_]')
# Label names Prometheus gives a meaning of its own; a tag of that name is
# renamed the way Prometheus renames clashing target labels.
_RESERVED_LABELS = frozenset({'quantile', 'le'})


def _clean(text: str) -> str:
    cleaned = _INVALID.sub('_', text)
    return '_' + cleaned if not cleaned or cleaned[0].isdigit() else cleaned


def prometheus_name(key: str) -> str:
    """The Prometheus metric name of a statsd key (its tags left out).

    ``api.get-user;env=prod`` becomes ``api_get_user``; ``5xx`` becomes
    ``_5xx``.

    :param key: the statsd key as aggregated
    """
    return _clean(key.partition(';')[0])


def prometheus_labels(key: str) -> dict[str, str]:
    """The labels of a statsd key's ``;k=v`` tags.

    Label names are cleaned like metric names; ``quantile`` and ``le``
    become ``exported_quantile`` and ``exported_le``; a name starting with
    ``__`` (reserved) gets a ``tag`` prefix; a tag without ``=`` gets the
    value ``true``.  A later tag of the same name wins.

    :param key: the statsd key as aggregated
    """
    labels: dict[str, str] = {}
    for tag in key.split(';')[1:]:
        name, equals, value = tag.partition('=')
        if not name:
            continue
        label = _clean(name)
        if label in _RESERVED_LABELS:
            label = 'exported_' + label
        elif label.startswith('__'):
            label = 'tag' + label
        labels[label] = value if equals else 'true'
    return labels


def _quantiles(
    values: Sequence[float], thresholds: Sequence[float]
) -> tuple[tuple[float, float], ...]:
    """``(quantile, seconds)`` for each threshold, as statsd computes them.

    A positive threshold P gives ``upper_P``, the largest of the lowest P
    percent; a negative one gives ``lower_topP``, the smallest of the top
    P percent, which is the quantile 1 - P/100.

    :param values: the flush's values, sorted, in milliseconds; at least one
    :param thresholds: the configured percent thresholds
    """
    n = len(values)
    found: list[tuple[float, float]] = []
    for pct in thresholds:
        quantile = abs(pct) / 100 if pct > 0 else 1 - abs(pct) / 100
        if any(q == quantile for q, _ in found):
            continue  # 90 and -10 name the same quantile
        k = js_round(abs(pct) / 100 * n) if n > 1 else 1
        if k == 0:
            continue  # too few values, as statsd leaves it out too
        value = values[k - 1] if pct > 0 else values[n - k]
        found.append((quantile, value / 1000))
    return tuple(sorted(found))


def _format_quantile(quantile: float) -> str:
    return repr(round(quantile, 6))


class _Timer(typing.NamedTuple):
    """A timer's running totals and its latest quantiles."""

    count_total: float = 0.0
    seconds_total: float = 0.0
    quantiles: tuple[tuple[float, float], ...] = ()


class _State(typing.NamedTuple):
    """Everything a scrape reads, replaced as a whole by each flush."""

    counters: Mapping[str, float] = {}
    timers: Mapping[str, _Timer] = {}
    gauges: Mapping[str, float] = {}
    sets: Mapping[str, int] = {}


class StatsdCollector(Collector):
    """Expose every flush's aggregates to a Prometheus scrape.

    Register it with its own :class:`~prometheus_client.CollectorRegistry`
    (never the global one, so that several servers can run in one
    process).  Feed it from one thread; scrapes may run in any thread,
    since each flush replaces the state a scrape reads in one assignment.

    :param percent_thresholds: the timer percentiles to expose as quantiles
    """

    def __init__(self, percent_thresholds: Sequence[float] = (90.0,)) -> None:
        self._thresholds = tuple(percent_thresholds)
        self._state = _State()
        #: Flushes taken in: a scrape's output changes only when it does.
        self.generation = 0
        #: Keys left out of the latest scrape because their Prometheus
        #: series was already taken by another key.
        self.collisions = 0

    def add(self, snapshot: Snapshot) -> None:
        """Take in one flush.

        :param snapshot: the flush, from :meth:`.Aggregator.flush`
        """
        old = self._state
        # Running totals can overflow (see _finite).
        counters = saturated({
            key: old.counters.get(key, 0.0) + value
            for key, value in snapshot.counters.items()
        })
        timers: dict[str, _Timer] = {}
        for key, values in snapshot.timers.items():
            timer = old.timers.get(key) or _Timer()
            count = snapshot.timer_counters[key]
            if values:
                # Scaled like the count, so that sum / count is the mean.
                seconds = saturate(total(values) / 1000 * (count / len(values)))
                # An idle flush keeps the quantiles of the last busy one,
                # so that a sparse timer does not flap between data and NaN.
                timer = _Timer(
                    timer.count_total, saturate(timer.seconds_total + seconds),
                    _quantiles(values, self._thresholds),
                )
            timers[key] = timer._replace(
                count_total=saturate(timer.count_total + count)
            )
        sets = {key: len(members) for key, members in snapshot.sets.items()}
        self._state = _State(counters, timers, snapshot.gauges, sets)
        self.generation += 1

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the names are known only once metrics arrive."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Build the metric families of the latest flush."""
        state = self._state  # one flush's state, whatever happens meanwhile
        families: dict[str, Metric] = {}
        taken: set[str] = set()
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        collisions = 0

        def family(
            key: str, kind: str, doc: str, suffixes: tuple[str, ...], unit: str = ''
        ) -> tuple[Metric, str, dict[str, str]] | None:
            """The family of `key`, or None if its series is taken."""
            nonlocal collisions
            name = prometheus_name(key)
            if unit and not name.endswith('_' + unit):
                name += '_' + unit
            labels = prometheus_labels(key)
            metric = families.get(name)
            if metric is None:
                names = {name + suffix for suffix in suffixes} | {name}
                if names & taken:
                    collisions += 1
                    return None
                taken.update(names)
                metric = families[name] = Metric(name, doc, kind)
            elif metric.type != kind:
                collisions += 1
                return None
            identity = (name, tuple(sorted(labels.items())))
            if identity in seen:
                collisions += 1
                return None
            seen.add(identity)
            return metric, name, labels

        for key in sorted(state.counters):
            found = family(key, 'counter', _COUNTER_DOC, ('_total',))
            if found:
                metric, name, labels = found
                metric.add_sample(name + '_total', labels, state.counters[key])
        for key in sorted(state.timers):
            found = family(key, 'summary', _TIMER_DOC, ('_sum', '_count'), 'seconds')
            if found:
                metric, name, labels = found
                timer = state.timers[key]
                for quantile, value in timer.quantiles:
                    metric.add_sample(
                        name, {**labels, 'quantile': _format_quantile(quantile)}, value
                    )
                metric.add_sample(name + '_sum', labels, timer.seconds_total)
                metric.add_sample(name + '_count', labels, timer.count_total)
        for doc, mapping in ((_GAUGE_DOC, state.gauges), (_SET_DOC, state.sets)):
            for key in sorted(mapping):
                found = family(key, 'gauge', doc, ())
                if found:
                    metric, name, labels = found
                    metric.add_sample(name, labels, mapping[key])
        if collisions:
            logger.debug('%d statsd keys share a Prometheus series; left out', collisions)
        self.collisions = collisions
        yield from families.values()
