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
family but its values, in pieces (:class:`_Chunk`) formatted with one
``%`` each.  A flush's new and gone keys are diffed against the kept keys
in C; a key that makes a family of its own, or that was one alone, only
adds or drops its family's text in its piece, found by bisection (the
exposition order is that of each family's first key).  Which key a
series goes to depends on every other key only through collisions, so
the kept family names and the keys left out say when a change is that
simple; any other change plans the whole flush anew.
"""

from __future__ import annotations

import array
import bisect
import collections
import io
import itertools
import logging
import math
import operator
import re
import threading
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


# The kinds of statsd metric, in the order the exposition takes them.
_COUNTERS, _TIMERS, _GAUGES, _SETS = range(4)
#: The series a family takes besides its own name, by kind.
_SUFFIXES: Mapping[str, tuple[str, ...]] = {
    'counter': ('_total',),
    'summary': ('_sum', '_count'),
    'histogram': ('_bucket', '_sum', '_count'),
    'gauge': (),
}
#: Each suffix and the kinds whose families take it.
_SUFFIX_KINDS = tuple(
    (suffix, frozenset(kind for kind, taken in _SUFFIXES.items() if suffix in taken))
    for suffix in ('_total', '_sum', '_count', '_bucket')
)
#: Flushes taken in but not yet merged, beyond which :meth:`add` merges
#: them itself: each holds a flush's mappings, tens of MB with hundreds of
#: thousands of keys, and the merge in a worker thread keeps up unless the
#: machine is overloaded.
_MAX_PENDING = 4
#: Families per piece of the kept text: a key that comes or goes copies
#: its piece (about a MB), and a piece is formatted in one call.
_CHUNK_FAMILIES = 8192
#: The smallest value Go (and so prometheus_client) writes with an
#: exponent where Python's repr does not.
_GO_EXPONENT = 1e6


def _family_of(
    group: int, key: str, timer: _Timer | None
) -> tuple[str, str, str, tuple[str, ...]]:
    """The family `key` of `group` belongs to: name, kind, help, suffixes."""
    name = prometheus_name(key)
    if group == _COUNTERS:
        return name, 'counter', _COUNTER_DOC, _SUFFIXES['counter']
    if group == _TIMERS:
        assert timer is not None
        if not name.endswith('_seconds'):
            name += '_seconds'
        if timer.buckets:
            return name, 'histogram', _HISTOGRAM_DOC, _SUFFIXES['histogram']
        return name, 'summary', _TIMER_DOC, _SUFFIXES['summary']
    return name, 'gauge', _GAUGE_DOC if group == _GAUGES else _SET_DOC, ()


def _sample_names(
    group: int, timer: _Timer | None, name: str, labels: Mapping[str, str]
) -> list[tuple[str, Mapping[str, str]]]:
    """The name and labels of each sample of one key, in exposition order."""
    if group == _COUNTERS:
        return [(name + '_total', labels)]
    if group != _TIMERS:
        return [(name, labels)]
    assert timer is not None
    if timer.buckets:
        return [
            *((name + '_bucket', {**labels, 'le': repr(bound)}) for bound, _ in timer.buckets),
            (name + '_bucket', {**labels, 'le': '+Inf'}),
            (name + '_sum', labels),
            (name + '_count', labels),
        ]
    return [
        *((name, {**labels, 'quantile': _format_quantile(q)}) for q, _ in timer.quantiles),
        (name + '_sum', labels),
        (name + '_count', labels),
    ]


def _sample_values(group: int, key: str, state: _State) -> list[float]:
    """The values of the samples :func:`_sample_names` names."""
    if group == _COUNTERS:
        return [state.counters[key]]
    if group == _GAUGES:
        return [float(state.gauges[key])]
    if group == _SETS:
        return [float(state.sets[key])]
    timer = state.timers[key]
    if timer.buckets:
        return [*(value for _, value in timer.buckets),
                timer.count_total, timer.seconds_total, timer.count_total]
    return [*(value for _, value in timer.quantiles), timer.seconds_total, timer.count_total]


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
        self._state = _State()
        self._pending: collections.deque[Snapshot] = collections.deque()
        self._merging = threading.Lock()
        self._rendering = threading.Lock()
        self._layout: _Layout | None = None
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
            self.merge()

    def merge(self) -> _State:
        """Merge the flushes taken in so far; the state they give.

        Blocks for up to a second or more with hundreds of thousands of
        keys: call it in a thread.  A flush that cannot be merged is
        logged and left out.
        """
        with self._merging:
            while self._pending:
                snapshot = self._pending.popleft()
                try:
                    self._state = self._merged(self._state, snapshot)
                except Exception:
                    logger.exception('a flush could not be merged into /metrics')
            return self._state

    def _merged(self, old: _State, snapshot: Snapshot) -> _State:
        """The state after `old` takes in `snapshot`."""
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
        return _State(counters, timers, snapshot.gauges, sets)

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
        plan = self._plan(self.merge())
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
        family but its values (see :class:`_Layout`) is kept from one call
        to the next: when keys come or go, only their families' text is
        made or dropped, unless they change which key a series goes to.
        Takes up to a second or more for hundreds of thousands of keys, so
        call it in a thread; calls take turns.
        """
        with self._rendering:
            state = self.merge()  # one flush's state, whatever happens meanwhile
            layout = self._layout
            if layout is None or not layout.update(state):
                self._layout = None  # not kept while its successor is built
                layout = self._layout = _Layout(self._plan(state), state)
            self.collisions = layout.collisions
            return layout.render(state)

    def _plan(self, state: _State) -> _Plan:
        """The families and samples of `state`.

        Keys in sorted order within each kind; a key whose series another
        key already took is left out and counted in :attr:`collisions`.
        """
        plan = _Plan()
        families: dict[str, int] = {}
        taken: set[str] = set()
        seen: set[object] = set()

        def family(
            group: int, key: str, timer: _Timer | None = None
        ) -> tuple[int, str, Mapping[str, str]] | None:
            """`key`'s family, name and labels, or None if its series is taken."""
            name, kind, doc, suffixes = _family_of(group, key, timer)
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
                    plan.losers[group, key] = (name, *(name + s for s in suffixes))
                    return None
                taken.add(name)
                taken.update([name + suffix for suffix in suffixes])
                index = families[name] = plan.new_family(name, kind, doc)
            elif plan.kinds[index] != kind or identity in seen:
                plan.losers[group, key] = (name, *(name + s for s in suffixes))
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
        member_of = plan.member_of.append
        member_key, member_group = plan.member_keys.append, plan.member_groups.append
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
                    member_of(len(plan.member_keys))
                    member_key(key)
                    member_group(_COUNTERS)
                    continue
            made = family(_COUNTERS, key)
            if made:
                add(made[0], _COUNTERS, key, made[1], made[2], None, state)
        for key in sorted(state.timers):
            timer = state.timers[key]
            made = family(_TIMERS, key, timer)
            if made:
                add(made[0], _TIMERS, key, made[1], made[2], timer, state)
        for group, mapping in ((_GAUGES, state.gauges), (_SETS, state.sets)):
            for key in sorted(mapping):
                made = family(group, key)
                if made:
                    add(made[0], group, key, made[1], made[2], None, state)
        if plan.losers:
            logger.debug('%d statsd keys share a Prometheus series; left out',
                         len(plan.losers))
        self.collisions = len(plan.losers)
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
        #: Each key exposed and its kind of metric, in the order their
        #: samples came (no tuple each: this runs for a whole flush), and
        #: the index of each sample's key there.
        self.member_keys: list[str] = []
        self.member_groups = array.array('b')
        self.member_of = array.array('q')
        #: Keys left out (their series was taken): the series they wanted.
        self.losers: dict[tuple[int, str], tuple[str, ...]] = {}

    def new_family(self, name: str, kind: str, doc: str) -> int:
        self.family_names.append(name)
        self.kinds.append(kind)
        self.docs.append(doc)
        return len(self.kinds) - 1

    def add(
        self,
        family: int,
        group: int,
        key: str,
        name: str,
        labels: Mapping[str, str],
        timer: _Timer | None,
        state: _State,
    ) -> None:
        """The samples of `key` of `group`, in `family` as `name`."""
        if family != len(self.kinds) - 1:
            self._in_order = False  # an older family
        member = len(self.member_keys)
        self.member_keys.append(key)
        self.member_groups.append(group)
        for (sample, tags), value in zip(_sample_names(group, timer, name, labels),
                                         _sample_values(group, key, state), strict=True):
            self.family.append(family)
            self.names.append(sample)
            self.labels.append(tags)
            self.values.append(value)
            self.member_of.append(member)

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


def _header(name: str, kind: str, doc: str) -> str:
    """A family's HELP and TYPE lines (what _Layout writes inline too)."""
    shown = name + '_total' if kind == 'counter' else name
    return f'# HELP {shown} {doc}\n# TYPE {shown} {kind}\n'


def _line(name: str, labels: Mapping[str, str]) -> str:
    """A sample's line with ``%s`` for its value (the rest ``%``-escaped)."""
    if labels:
        return f'{name}{_label_text(labels).replace("%", "%%")} %s\n'
    return f'{name} %s\n'


#: A family as kept: the key that comes first in it, the ``(kind, key)`` of
#: each key in it (None for one key of one sample), its text.
_Unit = tuple[str, 'tuple[tuple[int, str], ...] | None', str]


class _Chunk:
    """Consecutive families whose first keys are of one kind of metric.

    Its text is every line of those families with ``%s`` for the values,
    for one ``%`` formatting; it is replaced, never changed, so a chunk
    may be shared by layouts.
    """

    __slots__ = ('group', 'keys', 'members', 'starts', 'template')

    def __init__(
        self,
        group: int,
        keys: list[str],
        members: list[tuple[tuple[int, str], ...] | None],
        texts: list[str],
    ) -> None:
        self.group = group
        #: Each family's first key, in order.
        self.keys = keys
        #: Each family's keys, None if all are just their first key.
        self.members = None if not any(members) else members
        self.template = ''.join(texts)
        #: Where each family's text starts, and the end.
        self.starts = array.array('q', itertools.accumulate(map(len, texts), initial=0))

    def units(self) -> Iterator[_Unit]:
        members = self.members or itertools.repeat(None)
        template, starts = self.template, self.starts
        for index, (key, member) in enumerate(zip(self.keys, members, strict=False)):
            yield key, member, template[starts[index]:starts[index + 1]]

    def values(self, state: _State) -> Sequence[float]:
        """The values of the chunk's samples in `state`, in order."""
        group, keys = self.group, self.keys
        if self.members is None:
            if group == _COUNTERS:
                return tuple(map(state.counters.__getitem__, keys))
            mapping = state.gauges if group == _GAUGES else state.sets
            return tuple(map(float, map(mapping.__getitem__, keys)))
        values: list[float] = []
        for key, members in zip(keys, self.members, strict=True):
            for member_group, member in members or ((group, key),):
                values.extend(_sample_values(member_group, member, state))
        return values


def _chunked(group: int, units: Sequence[_Unit]) -> list[_Chunk]:
    chunks = []
    for start in range(0, len(units), _CHUNK_FAMILIES):
        piece = units[start:start + _CHUNK_FAMILIES]
        chunks.append(_Chunk(group, [key for key, _, _ in piece],
                             [member for _, member, _ in piece], [text for _, _, text in piece]))
    return chunks


def _texts(values: Sequence[float]) -> tuple[float | str, ...]:
    """`values` for ``%s``: floatToGoString's text where it is not repr's.

    Sums and compares in C first: all finite (the sum is then finite,
    see _finite) and below :data:`_GO_EXPONENT` is the common case.
    """
    whole = sum(values)
    if whole - whole == 0 and (not values or max(values) < _GO_EXPONENT):
        return tuple(values)
    go = typing.cast(Callable[[float], str], floatToGoString)
    return tuple(v if -math.inf < v < _GO_EXPONENT else go(v) for v in values)


class _Layout:
    """The text of every family of a flush but its values, in order.

    Built from a plan; then, flush after flush, updated for the keys that
    came and went, as long as they change no other key's series: a new key
    whose family is new, a key gone that was a family alone and that no
    key left out wanted the series of, a key left out that goes.  Any
    other change (a key that joins or leaves a family of several, or takes
    or frees a series another key wants) makes a new plan.  Keeps the
    text (about the size of the exposition), the family names and the
    keys of the flush, in proportion to ``max_names``.
    """

    def __init__(self, plan: _Plan, state: _State) -> None:
        self.collisions = len(plan.losers)
        self.losers = plan.losers
        self.contested = {name for names in plan.losers.values() for name in names}
        #: The kind of each family, by name.
        self.families = dict(zip(plan.family_names, plan.kinds, strict=True))
        #: The keys of the flush, by kind (the timers': their shapes).
        self.keys = {_COUNTERS: set(state.counters), _GAUGES: set(state.gauges),
                     _SETS: set(state.sets)}
        self.timer_shapes = {key: _timer_shape(timer) for key, timer in state.timers.items()}
        self.chunks: list[_Chunk] = []
        names, labels, member_of = plan.names, plan.labels, plan.member_of
        member_groups, member_keys = plan.member_groups, plan.member_keys
        family_names, kinds, docs = plan.family_names, plan.kinds, plan.docs
        samples = plan.samples()
        columns = (plan.family, names, labels, member_of)
        rows: Iterable[tuple[int, str, Mapping[str, str], int]] = zip(
            *columns if samples is None else
            [map(column.__getitem__, samples) for column in columns], strict=True)
        # One loop, inline, filling the lists of one chunk at a time: it
        # runs once per sample of a whole flush.
        group, last, size = -1, -1, _CHUNK_FAMILIES
        keys: list[str] = []
        members: list[tuple[tuple[int, str], ...] | None] = []
        texts: list[str] = []
        family: list[int] = []  # the keys of the family at hand
        for owner, name, tags, member in rows:
            line = _line(name, tags)
            if owner == last:
                texts[-1] += line
                if family[-1] != member:
                    family.append(member)
                continue
            last = owner
            if len(family) > 1 or group == _TIMERS:  # the family before
                members[-1] = tuple((member_groups[m], member_keys[m]) for m in family)
            first = member_groups[member]
            if first != group or len(keys) == size:
                if keys:
                    self.chunks.append(_Chunk(group, keys, members, texts))
                group, keys, members, texts = first, [], [], []
            family = [member]
            keys.append(member_keys[member])
            members.append(None)
            texts.append(_header(family_names[owner], kinds[owner], docs[owner]) + line)
        if len(family) > 1 or group == _TIMERS:
            members[-1] = tuple((member_groups[m], member_keys[m]) for m in family)
        if keys:
            self.chunks.append(_Chunk(group, keys, members, texts))
        self.firsts = [(chunk.group, chunk.keys[0]) for chunk in self.chunks]

    def render(self, state: _State) -> bytes:
        """The exposition of `state`, which has the keys of the layout."""
        body = io.BytesIO()
        for chunk in self.chunks:
            body.write((chunk.template % _texts(chunk.values(state))).encode())
        # The buffer's own bytes, not a copy, once nothing else refers to it.
        return body.getvalue()

    def update(self, state: _State) -> bool:
        """Take in the keys of `state`; False if that needs a new plan (the
        layout is then spoilt)."""
        gone: list[tuple[int, str]] = []
        new: list[tuple[int, str]] = []
        for group, mapping in ((_COUNTERS, state.counters), (_GAUGES, state.gauges),
                               (_SETS, state.sets)):
            kept = self.keys[group]
            gone.extend((group, key) for key in kept.difference(mapping))
            new.extend((group, key) for key in itertools.filterfalse(kept.__contains__, mapping))
        shapes = self.timer_shapes
        for key, timer in state.timers.items():
            shape = shapes.get(key)
            if shape != _timer_shape(timer):
                new.append((_TIMERS, key))
                if shape is not None:
                    gone.append((_TIMERS, key))  # its samples changed names
        gone.extend((_TIMERS, key) for key in shapes.keys() - state.timers.keys())
        if not gone and not new:
            return True
        edits = self._edits(gone, sorted(new), state)
        if edits is None:
            return False
        self._apply(edits, gone, new, state)
        return True

    def _locate(self, group: int, key: str) -> tuple[_Chunk, int] | None:
        """The chunk and place of the family `key` of `group` comes first in."""
        index = bisect.bisect_right(self.firsts, (group, key)) - 1
        if index < 0 or self.chunks[index].group != group:
            return None
        chunk = self.chunks[index]
        place = bisect.bisect_left(chunk.keys, key)
        if place == len(chunk.keys) or chunk.keys[place] != key:
            return None
        return chunk, place

    def _edits(
        self, gone: list[tuple[int, str]], new: list[tuple[int, str]], state: _State
    ) -> dict[_Chunk, tuple[set[str], list[_Unit]]] | None:
        """What each chunk loses and gains, or None if a plan is needed.

        Updates the family names as it goes; a layout it returns None for
        is spoilt.
        """
        families = self.families

        def taken(name: str) -> bool:
            return name in families or any(
                name.endswith(suffix) and families.get(name[:-len(suffix)]) in kinds
                for suffix, kinds in _SUFFIX_KINDS
            )

        edits: dict[_Chunk, tuple[set[str], list[_Unit]]] = {}
        for group, key in gone:
            if (group, key) in self.losers:
                continue
            found = self._locate(group, key)
            if found is None:
                return None  # one key among others in a family
            chunk, place = found
            if chunk.members is not None and chunk.members[place] not in (
                    None, ((group, key),)):
                return None  # the first of a family of several
            name = prometheus_name(key)
            if group == _TIMERS and not name.endswith('_seconds'):
                name += '_seconds'
            series = {name, *(name + s for s in _SUFFIXES[families.pop(name)])}
            if series & self.contested:
                return None  # a key left out may want it now
            edits.setdefault(chunk, (set(), []))[0].add(key)
        for group, key in new:
            timer = state.timers[key] if group == _TIMERS else None
            name, kind, doc, suffixes = _family_of(group, key, timer)
            if taken(name) or any(taken(name + s) for s in suffixes):
                return None  # a series of another key, or a family to join
            families[name] = kind
            labels = prometheus_labels(key) if ';' in key else _NO_LABELS
            text = _header(name, kind, doc) + ''.join(
                _line(sample, tags) for sample, tags in _sample_names(group, timer, name, labels))
            index = bisect.bisect_right(self.firsts, (group, key))
            if index and self.chunks[index - 1].group == group:
                chunk = self.chunks[index - 1]
            elif index < len(self.chunks) and self.chunks[index].group == group:
                chunk = self.chunks[index]
            else:  # the first family of its kind of metric
                chunk = _Chunk(group, [], [], [])
                self.firsts.insert(index, (group, key))
                self.chunks.insert(index, chunk)
            edits.setdefault(chunk, (set(), []))[1].append(
                (key, ((group, key),) if group == _TIMERS else None, text))
        return edits

    def _apply(
        self,
        edits: dict[_Chunk, tuple[set[str], list[_Unit]]],
        gone: list[tuple[int, str]],
        new: list[tuple[int, str]],
        state: _State,
    ) -> None:
        """Make the chunks `edits` says, and keep the keys of `state`."""
        chunks: list[_Chunk] = []
        for chunk in self.chunks:
            if chunk not in edits:
                chunks.append(chunk)
                continue
            removed, added = edits[chunk]
            units = [unit for unit in chunk.units() if unit[0] not in removed]
            units.extend(added)
            units.sort(key=operator.itemgetter(0))  # each part sorted already
            chunks.extend(_chunked(chunk.group, units))
        self.chunks = chunks
        self.firsts = [(chunk.group, chunk.keys[0]) for chunk in chunks]
        for group, key in gone:
            self.losers.pop((group, key), None)
            if group == _TIMERS:
                del self.timer_shapes[key]
            else:
                self.keys[group].discard(key)
        for group, key in new:
            if group == _TIMERS:
                self.timer_shapes[key] = _timer_shape(state.timers[key])
            else:
                self.keys[group].add(key)
        self.contested = {name for names in self.losers.values() for name in names}
        self.collisions = len(self.losers)


def _label_text(labels: Mapping[str, str]) -> str:
    """``{name="value",...}``, sorted by name, values escaped."""
    return '{' + ','.join(
        f'{name}="{_escape(value)}"' for name, value in sorted(labels.items())
    ) + '}'


def _escape(value: str) -> str:
    return value.replace('\\', r'\\').replace('\n', r'\n').replace('"', r'\"')
