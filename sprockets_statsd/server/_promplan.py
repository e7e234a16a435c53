"""The plan of a scrape: which key's samples go to which family.

A key's family and series follow from its name, its kind and its tags
(see :mod:`._promnames`); which key a series goes to when two want it is
decided by :func:`make_plan`, over the keys of one flush in sorted order.
The text of families and samples is written here too, in pieces that
:mod:`._promlayout` keeps.
"""

from __future__ import annotations

import array
import itertools
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence

from sprockets_statsd.server._promnames import NO_LABELS, prometheus_labels, prometheus_name

__all__ = [
    'COUNTERS',
    'GAUGES',
    'LONE_KINDS',
    'SETS',
    'SUFFIXES',
    'SUFFIX_KINDS',
    'TIMERS',
    'Plan',
    'State',
    'Timer',
    'family_header',
    'family_of',
    'lone_text',
    'lone_texts',
    'make_plan',
    'sample_line',
    'sample_names',
    'sample_values',
    'timer_shape',
]

_COUNTER_DOC = 'statsd counter: the total since the server started'
_TIMER_DOC = 'statsd timer: quantiles of the latest flush with values, totals since the start'
_GAUGE_DOC = 'statsd gauge'
_SET_DOC = 'statsd set: distinct members in the last flush'
_HISTOGRAM_DOC = 'statsd timer with histogram bins: totals since the start'


def _format_quantile(quantile: float) -> str:
    return repr(round(quantile, 6))


class Timer(typing.NamedTuple):
    """A timer's running totals and its latest quantiles."""

    count_total: float = 0.0
    seconds_total: float = 0.0
    quantiles: tuple[tuple[float, float], ...] = ()
    #: ``(bound in seconds, total of values at most it)`` per finite bin
    #: bound, for a timer with histogram bins; empty for a summary.
    buckets: tuple[tuple[float, float], ...] = ()


class State(typing.NamedTuple):
    """Everything a scrape reads, replaced as a whole by each flush."""

    counters: Mapping[str, float] = {}
    timers: Mapping[str, Timer] = {}
    gauges: Mapping[str, float] = {}
    sets: Mapping[str, int] = {}

    def by_kind(self) -> tuple[tuple[int, Mapping[str, typing.Any]], ...]:
        """Each kind of metric (:data:`COUNTERS` ...) and its mapping."""
        return ((COUNTERS, self.counters), (TIMERS, self.timers),
                (GAUGES, self.gauges), (SETS, self.sets))


# The kinds of statsd metric, in the order the exposition takes them.
COUNTERS, TIMERS, GAUGES, SETS = range(4)
#: The kinds of metric whose keys may be lone (a family of one sample, see
#: :mod:`._promlone`), and the type of such a family.
LONE_KINDS: Mapping[int, str] = {COUNTERS: 'counter', GAUGES: 'gauge', SETS: 'gauge'}
#: The series a family takes besides its own name, by kind.
SUFFIXES: Mapping[str, tuple[str, ...]] = {
    'counter': ('_total',),
    'summary': ('_sum', '_count'),
    'histogram': ('_bucket', '_sum', '_count'),
    'gauge': (),
}
#: Each suffix and the kinds whose families take it.
SUFFIX_KINDS = tuple(
    (suffix, frozenset(kind for kind, taken in SUFFIXES.items() if suffix in taken))
    for suffix in ('_total', '_sum', '_count', '_bucket')
)
def family_of(
    group: int, key: str, timer: Timer | None
) -> tuple[str, str, str, tuple[str, ...]]:
    """The family `key` of `group` belongs to: name, kind, help, suffixes."""
    name = prometheus_name(key)
    if group == COUNTERS:
        return name, 'counter', _COUNTER_DOC, SUFFIXES['counter']
    if group == TIMERS:
        assert timer is not None
        if not name.endswith('_seconds'):
            name += '_seconds'
        if timer.buckets:
            return name, 'histogram', _HISTOGRAM_DOC, SUFFIXES['histogram']
        return name, 'summary', _TIMER_DOC, SUFFIXES['summary']
    return name, 'gauge', _GAUGE_DOC if group == GAUGES else _SET_DOC, ()


def sample_names(
    group: int, timer: Timer | None, name: str, labels: Mapping[str, str]
) -> list[tuple[str, Mapping[str, str]]]:
    """The name and labels of each sample of one key, in exposition order."""
    if group == COUNTERS:
        return [(name + '_total', labels)]
    if group != TIMERS:
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


def sample_values(group: int, key: str, state: State) -> list[float]:
    """The values of the samples :func:`sample_names` names."""
    if group == COUNTERS:
        return [state.counters[key]]
    if group == GAUGES:
        return [float(state.gauges[key])]
    if group == SETS:
        return [float(state.sets[key])]
    timer = state.timers[key]
    if timer.buckets:
        return [*(value for _, value in timer.buckets),
                timer.count_total, timer.seconds_total, timer.count_total]
    return [*(value for _, value in timer.quantiles), timer.seconds_total, timer.count_total]


def make_plan(state: State, keys: Mapping[int, Sequence[str]] | None = None) -> Plan:
    """The families and samples of `state`.

    Keys in sorted order within each kind; a key whose series another
    key already took is left out (listed in :attr:`Plan.losers`).

    :param keys: the keys to plan, by kind of metric, sorted (by default
        all): leaving out lone keys (:func:`._promlone.split_lone`)
        changes nothing for the others
    """
    if keys is None:
        keys = {group: sorted(mapping) for group, mapping in state.by_kind()}
    plan = Plan()
    families: dict[str, int] = {}
    taken: set[str] = set()
    seen: set[object] = set()

    def family(
        group: int, key: str, timer: Timer | None = None
    ) -> tuple[int, str, Mapping[str, str]] | None:
        """`key`'s family, name and labels, or None if its series is taken."""
        name, kind, doc, suffixes = family_of(group, key, timer)
        labels: Mapping[str, str]
        if ';' in key:
            labels = prometheus_labels(key)
            identity: object = (name, tuple(sorted(labels.items())))
        else:
            labels = NO_LABELS
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
    for key in keys[COUNTERS]:
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
                sample_labels(NO_LABELS)
                sample_values(counters[key])
                member_of(len(plan.member_keys))
                member_key(key)
                member_group(COUNTERS)
                continue
        made = family(COUNTERS, key)
        if made:
            add(made[0], COUNTERS, key, made[1], made[2], None, state)
    for key in keys[TIMERS]:
        timer = state.timers[key]
        made = family(TIMERS, key, timer)
        if made:
            add(made[0], TIMERS, key, made[1], made[2], timer, state)
    for group in (GAUGES, SETS):
        for key in keys[group]:
            made = family(group, key)
            if made:
                add(made[0], group, key, made[1], made[2], None, state)
    return plan




class Plan:
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
        timer: Timer | None,
        state: State,
    ) -> None:
        """The samples of `key` of `group`, in `family` as `name`."""
        if family != len(self.kinds) - 1:
            self._in_order = False  # an older family
        member = len(self.member_keys)
        self.member_keys.append(key)
        self.member_groups.append(group)
        for (sample, tags), value in zip(sample_names(group, timer, name, labels),
                                         sample_values(group, key, state), strict=True):
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


def timer_shape(timer: Timer) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """What a timer's samples are named after: its bounds and quantiles."""
    return tuple(bound for bound, _ in timer.buckets), tuple(q for q, _ in timer.quantiles)


def lone_texts(group: int, names: Sequence[str]) -> list[str]:
    """The text of the family of each lone key of `group` named `names`,
    with ``%s`` for its value: what :func:`family_header` and
    :func:`sample_line` make, in bulk."""
    after_help, after_type, after_name = _lone_parts(group)
    return list(map(''.join, zip(
        itertools.repeat('# HELP '), names, itertools.repeat(after_help), names,
        itertools.repeat(after_type), names, itertools.repeat(after_name + '%s\n'))))


def lone_text(group: int, names: Sequence[str], values: Iterable[object]) -> str:
    """The families of the lone keys of `group` named `names`, with their
    `values` written as ``%s`` writes them: the text of :func:`lone_texts`
    formatted.

    One join of a list filled a column at a time by slice assignment,
    which costs about half the time of joining each family's pieces.
    """
    count = len(names)
    if not count:
        return ''
    after_help, after_type, after_name = _lone_parts(group)
    # '# HELP ', then per family: name, after_help, name, after_type, name,
    # after_name, value, and the next family's '# HELP ' (or the last '\n').
    pieces = ['\n# HELP '] * (8 * count + 1)
    pieces[0] = '# HELP '
    pieces[1::8] = pieces[3::8] = pieces[5::8] = names
    pieces[2::8] = [after_help] * count
    pieces[4::8] = [after_type] * count
    pieces[6::8] = [after_name] * count
    pieces[7::8] = map(str, values)
    pieces[-1] = '\n'
    return ''.join(pieces)


def _lone_parts(group: int) -> tuple[str, str, str]:
    """What follows a lone family's name in its HELP line, in its TYPE line
    and in its sample line, up to the value."""
    kind = LONE_KINDS[group]
    if group == COUNTERS:
        return (f'_total {_COUNTER_DOC}\n# TYPE ', f'_total {kind}\n', '_total ')
    doc = _GAUGE_DOC if group == GAUGES else _SET_DOC
    return f' {doc}\n# TYPE ', f' {kind}\n', ' '


def family_header(name: str, kind: str, doc: str) -> str:
    """A family's HELP and TYPE lines (what Layout writes inline too)."""
    shown = name + '_total' if kind == 'counter' else name
    return f'# HELP {shown} {doc}\n# TYPE {shown} {kind}\n'


def sample_line(name: str, labels: Mapping[str, str]) -> str:
    """A sample's line with ``%s`` for its value (the rest ``%``-escaped)."""
    if labels:
        return f'{name}{_label_text(labels).replace("%", "%%")} %s\n'
    return f'{name} %s\n'


def _label_text(labels: Mapping[str, str]) -> str:
    """``{name="value",...}``, sorted by name, values escaped."""
    return '{' + ','.join(
        f'{name}="{_escape(value)}"' for name, value in sorted(labels.items())
    ) + '}'


def _escape(value: str) -> str:
    return value.replace('\\', r'\\').replace('\n', r'\n').replace('"', r'\"')
