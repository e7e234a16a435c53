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
A timer with histogram bins (``--histogram``) is the histogram
``<name>_seconds`` instead: cumulative ``_bucket{le}`` counts of the values
at most each bound, which, unlike quantiles, add up across servers and
over time.

Rendering (:meth:`StatsdCollector.exposition`) keeps the text of every
family but its values from one scrape to the next (``_promlayout``), and
makes or drops only the text of the keys that came or went where that
changes no other key's series; which key a series goes to is planned in
``_promplan``.
"""

from __future__ import annotations

import bisect
import collections
import logging
import math
import threading
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from sprockets_statsd.server._finite import saturate, saturated, total
from sprockets_statsd.server._jsnumber import js_round
from sprockets_statsd.server._promlayout import Layout
from sprockets_statsd.server._promnames import prometheus_labels, prometheus_name
from sprockets_statsd.server._promplan import (
    Plan,
    State,
    Timer,
    make_plan,
)
from sprockets_statsd.server._timerstats import histogram_bins
from sprockets_statsd.server.aggregator import Snapshot

__all__ = ['CONTENT_TYPE', 'StatsdCollector', 'prometheus_labels', 'prometheus_name']

logger = logging.getLogger(__name__)

#: The text exposition format every Prometheus version reads.
CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

#: Flushes taken in but not yet merged, beyond which :meth:`add` merges
#: them itself: each holds a flush's mappings, tens of MB with hundreds of
#: thousands of keys, and the merge in a worker thread keeps up unless the
#: machine is overloaded.
_MAX_PENDING = 4

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


class StatsdCollector(Collector):
    """Expose every flush's aggregates to a Prometheus scrape.

    Register it with its own :class:`~prometheus_client.CollectorRegistry`
    (never the global one, so that several servers can run in one
    process).  Feed it from one thread; :meth:`merge`, :meth:`collect` and
    :meth:`exposition` may run in any thread: each merges the flushes
    taken in so far, under a lock, into a state that it replaces whole.

    :param percent_thresholds: the timer percentiles to expose as quantiles
    :param histograms: the configured ``(metric, bins)`` pairs
        (:attr:`.AggregatorConfig.histograms`): a timer they give bins to is
        exposed as a histogram with those bounds, in seconds
    """

    def __init__(
        self,
        percent_thresholds: Sequence[float] = (90.0,),
        histograms: Sequence[tuple[str, Sequence[float]]] = (),
    ) -> None:
        self._thresholds = tuple(percent_thresholds)
        self._histograms = tuple(histograms)
        self._state = State()
        self._pending: collections.deque[Snapshot] = collections.deque()
        self._merging = threading.Lock()
        self._rendering = threading.Lock()
        self._layout: Layout | None = None
        # Whether a scrape has asked for the text: only then is the layout
        # edited as keys come and go, rather than made anew (see merge).
        self._scraped = False
        #: Flushes taken in: a scrape's output changes only when it does.
        self.generation = 0
        #: Keys left out of the latest scrape because their Prometheus
        #: series was already taken by another key.
        self.collisions = 0

    def add(self, snapshot: Snapshot) -> None:
        """Take in one flush, to be merged by :meth:`merge`.

        Does not block: merging hundreds of thousands of keys takes a
        good part of a second, so it is left to :meth:`merge` in a worker
        thread (or to the next scrape), unless ``_MAX_PENDING``
        flushes are waiting already.

        :param snapshot: the flush, from :meth:`.Aggregator.flush`
        """
        self._pending.append(snapshot)
        self.generation += 1
        if len(self._pending) > _MAX_PENDING:
            self._merge_pending()  # the totals only: no layout on this thread

    def merge(self) -> State:
        """Merge the flushes taken in so far; the state they give.

        Also brings the layout of the text (see :meth:`exposition`) to the
        keys of that state, so that no scrape lays out the keys itself.
        Until a first scrape the layout is made anew when keys come or
        go; from then on it is edited, which keeps the family names (tens
        of MB at 500k keys) but lays out only the keys that changed.
        Blocks for up to a second or more with hundreds of thousands of
        keys: call it in a thread.  A flush that cannot be merged is
        logged and left out.
        """
        state = self._merge_pending()
        with self._rendering:
            self._laid_out(self._state, edit=self._scraped)
        return state

    def _merge_pending(self) -> State:
        with self._merging:
            while self._pending:
                snapshot = self._pending.popleft()
                try:
                    self._state = self._merged(self._state, snapshot)
                except Exception:
                    logger.exception('a flush could not be merged into /metrics')
            return self._state

    def _merged(self, old: State, snapshot: Snapshot) -> State:
        """The state after `old` takes in `snapshot`."""
        # Running totals can overflow (see _finite).
        counters = saturated({
            key: old.counters.get(key, 0.0) + value
            for key, value in snapshot.counters.items()
        })
        timers: dict[str, Timer] = {}
        for key, values in snapshot.timers.items():
            timer = old.timers.get(key) or Timer()
            count = snapshot.timer_counters[key]
            if values:
                # Scaled like the count, so that sum / count is the mean.
                seconds = saturate(total(values) / 1000 * (count / len(values)))
                # An idle flush keeps the quantiles of the last busy one,
                # so that a sparse timer does not flap between data and NaN.
                timer = Timer(
                    timer.count_total, saturate(timer.seconds_total + seconds),
                    _quantiles(values, self._thresholds),
                    self._buckets(key, values, count / len(values), timer.buckets),
                )
            timers[key] = timer._replace(
                count_total=saturate(timer.count_total + count)
            )
        sets = {key: len(members) for key, members in snapshot.sets.items()}
        return State(counters, timers, snapshot.gauges, sets)

    def _buckets(
        self,
        key: str,
        values: Sequence[float],
        scale: float,
        old: tuple[tuple[float, float], ...],
    ) -> tuple[tuple[float, float], ...]:
        """The running bucket totals of `key` after one flush's `values`.

        Scaled like the count (`scale` is the count over the values kept),
        so that the ``+Inf`` bucket, which is the count, stays the largest.
        """
        bins = histogram_bins(key, self._histograms) if self._histograms else ()
        if not bins:
            return ()
        totals = dict(old)
        # Prometheus buckets hold the values *at most* their bound, hence
        # bisect_right; values arrive sorted, in milliseconds.
        return tuple(
            (bound / 1000, saturate(
                totals.get(bound / 1000, 0.0) + bisect.bisect_right(values, bound) * scale
            ))
            for bound in bins
            if bound != math.inf
        )

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the names are known only once metrics arrive."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Build the metric families of the latest flush."""
        plan = self._plan(self._merge_pending())  # its own plan: no layout
        metric: Metric | None = None
        for family, sample in plan.order():
            if family >= 0:
                if metric is not None:
                    yield metric
                metric = Metric(plan.family_names[family], plan.docs[family],
                                plan.kinds[family])
            assert metric is not None
            metric.add_sample(
                plan.names[sample], dict(plan.labels[sample]), plan.values[sample]
            )
        if metric is not None:
            yield metric

    def exposition(self) -> bytes:
        """The latest flush in the Prometheus text format.

        The same bytes as prometheus_client's ``generate_latest`` gives for
        :meth:`collect`, several times faster (no objects per sample), and
        with little more memory than the text itself.  The text of every
        family but its values (see :class:`Layout`) is kept from one call
        to the next: when keys come or go, only their families' text is
        made or dropped, unless they change which key a series goes to.
        Takes up to a second or more for hundreds of thousands of keys, so
        call it in a thread; calls take turns.
        """
        with self._rendering:
            self._scraped = True
            state = self._merge_pending()  # one flush's state, whatever happens meanwhile
            return self._laid_out(state, edit=True).render(state)

    def _laid_out(self, state: State, *, edit: bool) -> Layout:
        """The kept layout, brought to the keys of `state` (by editing it
        if `edit`, see :meth:`.Layout.update`), or made anew.  Hold
        ``_rendering``."""
        layout = self._layout
        if layout is None or not layout.update(state, edit=edit):
            self._layout = None  # not kept while its successor is built
            layout = self._layout = Layout(state)
            self._count_collisions(layout.collisions)
        self.collisions = layout.collisions
        return layout

    def _plan(self, state: State) -> Plan:
        """The families and samples of `state`; counts the keys left out."""
        plan = make_plan(state)
        self._count_collisions(len(plan.losers))
        return plan

    def _count_collisions(self, collisions: int) -> None:
        """Count, and log, the keys left out of a new plan."""
        self.collisions = collisions
        if collisions:
            logger.debug('%d statsd keys share a Prometheus series; left out', collisions)
