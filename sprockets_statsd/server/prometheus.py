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
"""

from __future__ import annotations

import array
import bisect
import io
import logging
import math
import operator
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from sprockets_statsd.server._finite import saturate, saturated, total
from sprockets_statsd.server._jsnumber import js_round
from sprockets_statsd.server._timerstats import histogram_bins
from sprockets_statsd.server.aggregator import Snapshot

__all__ = ['CONTENT_TYPE', 'StatsdCollector', 'prometheus_labels', 'prometheus_name']

logger = logging.getLogger(__name__)

#: The text exposition format every Prometheus version reads.
CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

_COUNTER_DOC = 'statsd counter: the total since the server started'
_TIMER_DOC = 'statsd timer: quantiles of the latest flush with values, totals since the start'
_GAUGE_DOC = 'statsd gauge'
_SET_DOC = 'statsd set: distinct members in the last flush'
_HISTOGRAM_DOC = 'statsd timer with histogram bins: totals since the start'

_INVALID = re.compile(r'[^A-Za-z0-9_]')
# The same replacement for ASCII text, in one C call instead of a regex.
_ASCII_CLEAN = bytes(
    c if c < 128 and not _INVALID.fullmatch(chr(c)) else ord('_') for c in range(256)
)
#: Lines encoded at a time: a few hundred KB of text.
_CHUNK_LINES = 8192
_NO_LABELS: Mapping[str, str] = types.MappingProxyType({})
# Label names Prometheus gives a meaning of its own; a tag of that name is
# renamed the way Prometheus renames clashing target labels.
_RESERVED_LABELS = frozenset({'quantile', 'le'})


def _clean(text: str) -> str:
    if text.isascii():
        cleaned = text.encode().translate(_ASCII_CLEAN).decode()
    else:
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
    #: ``(bound in seconds, total of values at most it)`` per finite bin
    #: bound, for a timer with histogram bins; empty for a summary.
    buckets: tuple[tuple[float, float], ...] = ()


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
        self._state = _State()
        self._layout: _Layout | None = None
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
                    self._buckets(key, values, count / len(values), timer.buckets),
                )
            timers[key] = timer._replace(
                count_total=saturate(timer.count_total + count)
            )
        sets = {key: len(members) for key, members in snapshot.sets.items()}
        self._state = _State(counters, timers, snapshot.gauges, sets)
        self.generation += 1

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
        plan = self._plan()
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
        with little more memory than the text itself: it is encoded piece
        by piece into one buffer.  The text of every sample but its value
        (see :class:`_Layout`) is kept from one call to the next while the
        flushes hold the same keys, so that a call mostly formats values.
        Takes up to a second or more for hundreds of thousands of keys, so
        call it in a thread.
        """
        state = self._state  # one flush's state, whatever happens meanwhile
        layout = self._layout
        if layout is None or not layout.fits(state):
            layout = self._layout = _Layout(self._plan(state), state)
        self.collisions = layout.collisions
        values = layout.values(state)
        go = typing.cast(Callable[[float], str], floatToGoString)
        prefixes = layout.prefixes
        body = io.BytesIO()
        for start in range(0, len(prefixes), _CHUNK_LINES):
            chunk = values[start:start + _CHUNK_LINES]
            # repr is floatToGoString's answer for a short finite value.
            texts = [
                text if len(text) < 8 and text[-1] not in 'fn' else go(value)
                for text, value in zip(map(repr, chunk), chunk, strict=True)
            ]
            body.write(''.join(map(operator.add, prefixes[start:start + _CHUNK_LINES],
                                   texts)).encode())
        if prefixes:
            body.write(b'\n')  # the end of the last line
        # The buffer's own bytes, not a copy, once nothing else refers to it.
        return body.getvalue()

    def _plan(self, state: _State | None = None) -> _Plan:
        """The families and samples of `state`, by default the latest flush.

        Keys in sorted order within each kind; a key whose series another
        key already took is left out and counted in :attr:`collisions`.
        """
        if state is None:
            state = self._state  # one flush's state, whatever happens meanwhile
        plan = _Plan()
        families: dict[str, int] = {}
        taken: set[str] = set()
        seen: set[object] = set()
        collisions = 0

        def family(
            key: str, kind: str, doc: str, suffixes: tuple[str, ...], unit: str = ''
        ) -> tuple[int, str, Mapping[str, str]] | None:
            """`key`'s family, name and labels, or None if its series is taken."""
            nonlocal collisions
            name = prometheus_name(key)
            if unit and not name.endswith('_' + unit):
                name += '_' + unit
            labels: Mapping[str, str]
            if ';' in key:
                labels = prometheus_labels(key)
                identity: object = (name, tuple(sorted(labels.items())))
            else:
                labels = _NO_LABELS
                identity = name
            index = families.get(name)
            if index is None:
                if name in taken or any(name + suffix in taken for suffix in suffixes):
                    collisions += 1
                    return None
                taken.add(name)
                taken.update([name + suffix for suffix in suffixes])
                index = families[name] = plan.new_family(name, kind, doc)
            elif plan.kinds[index] != kind or identity in seen:
                collisions += 1
                return None
            seen.add(identity)
            return index, name, labels

        add = plan.add
        counters = state.counters
        # The common case inline (a key without tags that names a new
        # family): a call per key costs as much as the work.
        new_names, new_kinds, new_docs = (
            plan.family_names.append, plan.kinds.append, plan.docs.append)
        owners, sample_names = plan.family.append, plan.names.append
        sample_labels, sample_values = plan.labels.append, plan.values.append
        kept = plan.kept_counters.append
        for key in sorted(counters):
            if ';' not in key:
                name = prometheus_name(key)
                total = name + '_total'
                if name not in taken and total not in taken:
                    taken.add(name)
                    taken.add(total)
                    seen.add(name)
                    index = families[name] = len(plan.kinds)
                    new_names(name)
                    new_kinds('counter')
                    new_docs(_COUNTER_DOC)
                    owners(index)
                    sample_names(total)
                    sample_labels(_NO_LABELS)
                    sample_values(counters[key])
                    kept(key)
                    continue
            made = family(key, 'counter', _COUNTER_DOC, ('_total',))
            if made:
                index, name, labels = made
                add(index, name + '_total', labels, state.counters[key])
                kept(key)
        for key in sorted(state.timers):
            timer = state.timers[key]
            if timer.buckets:
                made = family(key, 'histogram', _HISTOGRAM_DOC,
                              ('_bucket', '_sum', '_count'), 'seconds')
                if made:
                    plan.kept_timers.append(key)
                    index, name, labels = made
                    for bound, value in timer.buckets:
                        add(index, name + '_bucket', {**labels, 'le': repr(bound)}, value)
                    add(index, name + '_bucket', {**labels, 'le': '+Inf'},
                        timer.count_total)
                    add(index, name + '_sum', labels, timer.seconds_total)
                    add(index, name + '_count', labels, timer.count_total)
                continue
            made = family(key, 'summary', _TIMER_DOC, ('_sum', '_count'), 'seconds')
            if made:
                plan.kept_timers.append(key)
                index, name, labels = made
                for quantile, value in timer.quantiles:
                    add(index, name, {**labels, 'quantile': _format_quantile(quantile)},
                        value)
                add(index, name + '_sum', labels, timer.seconds_total)
                add(index, name + '_count', labels, timer.count_total)
        for doc, mapping, kept_keys in ((_GAUGE_DOC, state.gauges, plan.kept_gauges),
                                        (_SET_DOC, state.sets, plan.kept_sets)):
            for key in sorted(mapping):
                made = family(key, 'gauge', doc, ())
                if made:
                    kept_keys.append(key)
                    index, name, labels = made
                    add(index, name, labels, mapping[key])
        if collisions:
            logger.debug('%d statsd keys share a Prometheus series; left out', collisions)
        self.collisions = plan.collisions = collisions
        return plan


class _Plan:
    """Families and their samples, in flat lists (few objects to collect)."""

    def __init__(self) -> None:
        #: Name, kind and help of each family, in the order of exposition.
        self.family_names: list[str] = []
        self.kinds: list[str] = []
        self.docs: list[str] = []
        #: Each sample's family, name, labels and value, as they came.
        self.family = array.array('q')
        self.names: list[str] = []
        self.labels: list[Mapping[str, str]] = []
        self.values = array.array('d')
        self._in_order = True
        #: The keys exposed, in the order their samples were added.
        self.kept_counters: list[str] = []
        self.kept_timers: list[str] = []
        self.kept_gauges: list[str] = []
        self.kept_sets: list[str] = []
        #: Keys left out: their series was taken.
        self.collisions = 0

    def new_family(self, name: str, kind: str, doc: str) -> int:
        self.family_names.append(name)
        self.kinds.append(kind)
        self.docs.append(doc)
        return len(self.kinds) - 1

    def add(self, family: int, name: str, labels: Mapping[str, str], value: float) -> None:
        if family != len(self.kinds) - 1:
            self._in_order = False  # an older family
        self.family.append(family)
        self.names.append(name)
        self.labels.append(labels)
        self.values.append(value)

    def samples(self) -> Sequence[int] | None:
        """The samples in exposition order, or None if that is the order
        they came in."""
        if self._in_order:
            return None
        # Tagged keys of one name may come apart in key order; a stable
        # sort keeps each family's samples in the order they came.
        return sorted(range(len(self.family)), key=self.family.__getitem__)

    def order(self) -> Iterator[tuple[int, int]]:
        """``(family, sample)`` in exposition order; `family` is -1 but for
        the first sample of each family."""
        owners = self.family
        samples: Iterable[int] = self.samples() or range(len(owners))
        last = -1
        for sample in samples:
            owner = owners[sample]
            if owner != last:
                last = owner
                yield owner, sample
            else:
                yield -1, sample


def _timer_shape(timer: _Timer) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """What a timer's samples are named after: its bounds and quantiles."""
    return tuple(bound for bound, _ in timer.buckets), tuple(q for q, _ in timer.quantiles)


class _Layout:
    """The text of each sample of a plan but its value, in exposition order.

    It holds for every flush with the same keys (and timers of the same
    bounds and quantiles) as the one it was made from, since names, labels
    and collisions depend on nothing else; it takes memory in proportion
    to the keys of one flush, which ``max_names`` bounds.
    """

    def __init__(self, plan: _Plan, state: _State) -> None:
        self.collisions = plan.collisions
        self.counter_keys = frozenset(state.counters)
        self.timer_shapes = {key: _timer_shape(timer) for key, timer in state.timers.items()}
        self.gauge_keys = frozenset(state.gauges)
        self.set_keys = frozenset(state.sets)
        self.kept_counters = plan.kept_counters
        self.kept_timers = plan.kept_timers
        self.kept_gauges = plan.kept_gauges
        self.kept_sets = plan.kept_sets
        samples = plan.samples()
        self.order = None if samples is None else array.array('q', samples)
        names, labels, kinds = plan.names, plan.labels, plan.kinds
        family_names, docs = plan.family_names, plan.docs
        #: Each sample's line up to its value, after the end of the line
        #: before and the family's header if it is the family's first.
        self.prefixes: list[str] = []
        add = self.prefixes.append
        newline = ''
        for family, sample in plan.order():
            header = newline
            if family >= 0:
                kind = kinds[family]
                shown = family_names[family]
                if kind == 'counter':
                    shown += '_total'
                header += f'# HELP {shown} {docs[family]}\n# TYPE {shown} {kind}\n'
            tags = labels[sample]
            if tags:
                add(f'{header}{names[sample]}{_label_text(tags)} ')
            else:
                add(f'{header}{names[sample]} ')
            newline = '\n'

    def fits(self, state: _State) -> bool:
        """Whether `state` has the keys this layout was made for."""
        return (
            state.counters.keys() == self.counter_keys
            and state.gauges.keys() == self.gauge_keys
            and state.sets.keys() == self.set_keys
            and len(state.timers) == len(self.timer_shapes)
            and all(self.timer_shapes.get(key) == _timer_shape(timer)
                    for key, timer in state.timers.items())
        )

    def values(self, state: _State) -> array.array[float]:
        """The value of each sample of `state`, in exposition order."""
        values = array.array('d', map(state.counters.__getitem__, self.kept_counters))
        timers = state.timers
        for key in self.kept_timers:
            timer = timers[key]
            if timer.buckets:
                values.extend([value for _, value in timer.buckets])
                values.extend((timer.count_total, timer.seconds_total, timer.count_total))
            else:
                values.extend([value for _, value in timer.quantiles])
                values.extend((timer.seconds_total, timer.count_total))
        values.extend(map(state.gauges.__getitem__, self.kept_gauges))
        values.extend(map(state.sets.__getitem__, self.kept_sets))
        if self.order is not None:
            values = array.array('d', map(values.__getitem__, self.order))
        return values


def _label_text(labels: Mapping[str, str]) -> str:
    """``{name="value",...}``, sorted by name, values escaped."""
    return '{' + ','.join(
        f'{name}="{_escape(value)}"' for name, value in sorted(labels.items())
    ) + '}'


def _escape(value: str) -> str:
    return value.replace('\\', r'\\').replace('\n', r'\n').replace('"', r'\"')
