"""Lone keys: the keys of a flush that are Prometheus families of their own.

Strategy: a key without tags that is a counter, a gauge or a set, and
whose series no other key wants, is a family alone whatever the other keys
are, so it needs no plan (:func:`._promplan.make_plan`): most keys are.
They are found for a whole flush with a few passes in C (names cleaned at
once, names there twice found by sorting, ``_total`` clashes by one
search), and the text of their families is made in bulk.
"""

from __future__ import annotations

import collections
import itertools
import operator
import typing

from sprockets_statsd.server._promnames import prometheus_names
from sprockets_statsd.server._promplan import (
    COUNTERS,
    GAUGES,
    LONE_KINDS,
    SETS,
    TIMERS,
    State,
    family_of,
)

__all__ = ['Lone', 'split_lone']


class Lone(typing.NamedTuple):
    """The keys of a flush that are families alone, and the others.

    A key is lone when it has no tags, is a counter, a gauge or a set (one
    sample each), and no other key's series has the name of any of its
    own: whatever the other keys, it is a family of its own, and it takes
    no series any other key wants.  Most keys are, and they need no plan.
    By kind of metric, in sorted order: :attr:`keys` and their family
    :attr:`names`, and the :attr:`others`, to plan.
    """

    keys: dict[int, list[str]]
    names: dict[int, list[str]]
    others: dict[int, list[str]]


def split_lone(state: State) -> Lone:
    """The lone keys of `state` (see :class:`Lone`), found in bulk."""
    lone = Lone({}, {}, {})
    wanted: set[str] = set()  # every series of the keys planned
    for group, mapping in state.by_kind():
        ordered = sorted(mapping)
        if group == TIMERS:
            keys, others = [], ordered
        elif ';' in ''.join(ordered):
            keys = [key for key in ordered if ';' not in key]
            others = [key for key in ordered if ';' in key]
        else:
            keys, others = ordered, []
        lone.keys[group], lone.names[group] = keys, prometheus_names(keys)
        lone.others[group] = others
        for key in others:
            name, _, _, suffixes = family_of(
                group, key, state.timers[key] if group == TIMERS else None)
            wanted.add(name)
            wanted.update([name + suffix for suffix in suffixes])
    every = [*lone.names[COUNTERS], *lone.names[GAUGES], *lone.names[SETS]]
    # Names twice, found in sorted order (the names of sorted keys nearly
    # are, so this costs less than a set of them); and a counter's other
    # series is its name with _total: only a name that ends so can be it.
    ordered = sorted(every)
    if (not any(map(operator.eq, ordered, itertools.islice(ordered, 1, None)))
            and wanted.isdisjoint(every)
            and '_total\n' not in '\n'.join([*every, *wanted, ''])):
        return lone
    # The names wanted twice, and each counter's and the name its _total is.
    crowded = collections.Counter(every)
    crowded.update(wanted)
    counted = {name for name, times in crowded.items() if times > 1}
    counter_names = set(lone.names[COUNTERS])
    for name in itertools.chain(every, wanted):
        if name.endswith('_total') and name[:-6] in counter_names:
            counted.update((name, name[:-6]))
    for group in LONE_KINDS:
        keys, names = lone.keys[group], lone.names[group]
        kept = [name not in counted for name in names]
        lone.others[group] = sorted(
            [*lone.others[group], *itertools.compress(keys, map(operator.not_, kept))])
        lone.keys[group] = list(itertools.compress(keys, kept))
        lone.names[group] = list(itertools.compress(names, kept))
    return lone
