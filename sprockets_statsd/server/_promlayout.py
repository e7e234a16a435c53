"""The kept text of a scrape: every family of a flush but its values, in order.

Strategy: the text is kept in pieces (:class:`.Chunk`) formatted with one
``%`` each.  It is made from a plan of the keys that need one and, in
bulk, from the lone keys (:func:`.split_lone`: most keys, each a family of
its own that no other key contends for).  A flush's new and gone keys are
diffed against the kept keys
in C; a key that makes a family of its own, or that was one alone, only
adds or drops its family's text in its piece, found by bisection (the
exposition order is that of each family's first key).  Which key a
series goes to depends on every other key only through collisions, so
the kept family names and the keys left out say when a change is that
simple; any other change plans the whole flush anew."""

from __future__ import annotations

import bisect
import io
import itertools
import operator
from collections.abc import Iterable, Mapping, Sequence

from sprockets_statsd.server._promchunk import Chunk, Unit, chunked
from sprockets_statsd.server._promlone import split_lone
from sprockets_statsd.server._promnames import (
    NO_LABELS,
    prometheus_labels,
    prometheus_name,
    prometheus_names,
)
from sprockets_statsd.server._promplan import (
    COUNTERS,
    GAUGES,
    LONE_KINDS,
    SETS,
    SUFFIX_KINDS,
    SUFFIXES,
    TIMERS,
    Plan,
    State,
    family_header,
    family_of,
    make_plan,
    sample_line,
    sample_names,
    timer_shape,
)

__all__ = ['Layout']


def _planned(plan: Plan) -> dict[int, list[Unit]]:
    """The families of `plan` as units, by the kind of their first key."""
    planned: dict[int, list[Unit]] = {COUNTERS: [], TIMERS: [], GAUGES: [], SETS: []}
    names, labels, member_of = plan.names, plan.labels, plan.member_of
    member_groups, member_keys = plan.member_groups, plan.member_keys
    family_names, kinds, docs = plan.family_names, plan.kinds, plan.docs
    samples = plan.samples()
    columns = (plan.family, names, labels, member_of)
    rows: Iterable[tuple[int, str, Mapping[str, str], int]] = zip(
        *columns if samples is None else
        [map(column.__getitem__, samples) for column in columns], strict=True)
    last = -1
    family: list[int] = []  # the keys of the family at hand
    texts: list[str] = []   # and its lines
    for owner, name, tags, member in rows:
        line = sample_line(name, tags)
        if owner == last:
            texts.append(line)
            if family[-1] != member:
                family.append(member)
            continue
        if family:
            _add_unit(planned, family, texts, member_groups, member_keys)
        last, family = owner, [member]
        texts = [family_header(family_names[owner], kinds[owner], docs[owner]), line]
    if family:
        _add_unit(planned, family, texts, member_groups, member_keys)
    return planned


def _add_unit(
    planned: dict[int, list[Unit]],
    family: list[int],
    texts: list[str],
    groups: Sequence[int],
    keys: Sequence[str],
) -> None:
    """File a family of `planned` under the kind of its first key."""
    group = groups[family[0]]
    members = (tuple((groups[m], keys[m]) for m in family)
               if len(family) > 1 or group == TIMERS else None)
    planned[group].append((keys[family[0]], members, ''.join(texts)))


class Layout:
    """The text of every family of a flush but its values, in order.

    Made from the lone keys of a flush and a plan of the others; then,
    flush after flush, updated for the keys that came and went, as long
    as they change no other key's series: a new key whose family is new,
    a key gone that was a family alone and that no key left out wanted the
    series of, a key left out that goes.  Any other change (a key that
    joins or leaves a family of several, or takes or frees a series
    another key wants) makes a new plan.  Keeps the text of the chunks
    that are not of lone keys only, the keys of those that are, and, once
    keys change, the family names, in proportion to
    ``max_names``, and the state it was last made or updated for
    (:attr:`state`), whose keys it has.
    """

    def __init__(self, state: State) -> None:
        self.state = state
        lone = split_lone(state)
        plan = make_plan(state, lone.others)
        self.collisions = len(plan.losers)
        self.losers = plan.losers
        self.contested = {name for names in plan.losers.values() for name in names}
        # The kind of each family by name (see families), made once needed.
        self._families: dict[str, str] | None = None
        self._planned = dict(zip(plan.family_names, plan.kinds, strict=True))
        planned = _planned(plan)
        self.chunks = [
            chunk
            for group in (COUNTERS, TIMERS, GAUGES, SETS)
            for chunk in chunked(group, planned[group], lone.keys[group], lone.names[group])
        ]
        self.firsts = [(chunk.group, chunk.keys[0]) for chunk in self.chunks]

    @property
    def families(self) -> dict[str, str]:
        """The type of each family, by name: made when keys first come or
        go, in the merge thread, rather than by the first scrape."""
        if self._families is None:
            # A family of one key and one sample is named after that key;
            # the others are the plan's.
            self._families = {}
            for chunk in self.chunks:
                kind = LONE_KINDS.get(chunk.group)
                if kind is None:
                    continue  # a timer's family has members: it is planned
                names = (chunk.names() if chunk.members is None else prometheus_names(
                    [key for key, members in zip(chunk.keys, chunk.members, strict=True)
                     if members is None]))
                self._families.update(dict.fromkeys(names, kind))
            self._families.update(self._planned)
            self._planned = {}
        return self._families

    def render(self, state: State) -> bytes:
        """The exposition of `state`, which has the keys of the layout."""
        body = io.BytesIO()
        for chunk in self.chunks:
            body.write(chunk.render(state).encode())
        # The buffer's own bytes, not a copy, once nothing else refers to it.
        return body.getvalue()

    def update(self, state: State, *, edit: bool = True) -> bool:
        """Take in the keys of `state`; False if that needs a new plan (the
        layout is then spoilt).

        :param edit: edit the text for keys that came or went; if false,
            any change of keys is answered False (editing keeps the family
            names, tens of MB with hundreds of thousands of keys, which a
            layout nobody has scraped yet is better made anew without)
        """
        old, self.state = self.state, state
        if old is state:
            return True
        gone: list[tuple[int, str]] = []
        new: list[tuple[int, str]] = []
        for group, before, after in ((COUNTERS, old.counters, state.counters),
                                     (GAUGES, old.gauges, state.gauges),
                                     (SETS, old.sets, state.sets)):
            gone.extend((group, key) for key in itertools.filterfalse(after.__contains__, before))
            new.extend((group, key) for key in itertools.filterfalse(before.__contains__, after))
        held = old.timers
        for key, timer in state.timers.items():
            was = held.get(key)
            if was is None:
                new.append((TIMERS, key))
            elif timer_shape(was) != timer_shape(timer):
                new.append((TIMERS, key))
                gone.append((TIMERS, key))  # its samples changed names
        gone.extend((TIMERS, key)
                    for key in itertools.filterfalse(state.timers.__contains__, held))
        if not gone and not new:
            return True
        if not edit:
            return False
        edits = self._edits(gone, sorted(new), state)
        if edits is None:
            return False
        self._apply(edits, gone)
        return True

    def _locate(self, group: int, key: str) -> tuple[Chunk, int] | None:
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
        self, gone: list[tuple[int, str]], new: list[tuple[int, str]], state: State
    ) -> dict[Chunk, tuple[set[str], list[Unit]]] | None:
        """What each chunk loses and gains, or None if a plan is needed.

        Updates the family names as it goes; a layout it returns None for
        is spoilt.
        """
        families = self.families

        def taken(name: str) -> bool:
            return name in families or any(
                name.endswith(suffix) and families.get(name[:-len(suffix)]) in kinds
                for suffix, kinds in SUFFIX_KINDS
            )

        edits: dict[Chunk, tuple[set[str], list[Unit]]] = {}
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
            if group == TIMERS and not name.endswith('_seconds'):
                name += '_seconds'
            series = {name, *(name + s for s in SUFFIXES[families.pop(name)])}
            if series & self.contested:
                return None  # a key left out may want it now
            edits.setdefault(chunk, (set(), []))[0].add(key)
        for group, key in new:
            timer = state.timers[key] if group == TIMERS else None
            name, kind, doc, suffixes = family_of(group, key, timer)
            if taken(name) or any(taken(name + s) for s in suffixes):
                return None  # a series of another key, or a family to join
            families[name] = kind
            labels = prometheus_labels(key) if ';' in key else NO_LABELS
            samples = sample_names(group, timer, name, labels)
            text = family_header(name, kind, doc) + ''.join(
                sample_line(sample, tags) for sample, tags in samples)
            index = bisect.bisect_right(self.firsts, (group, key))
            if index and self.chunks[index - 1].group == group:
                chunk = self.chunks[index - 1]
            elif index < len(self.chunks) and self.chunks[index].group == group:
                chunk = self.chunks[index]
            else:  # the first family of its kind of metric
                chunk = Chunk(group, [], [], [])
                self.firsts.insert(index, (group, key))
                self.chunks.insert(index, chunk)
            edits.setdefault(chunk, (set(), []))[1].append(
                (key, ((group, key),) if group == TIMERS else None, text))
        return edits

    def _apply(
        self,
        edits: dict[Chunk, tuple[set[str], list[Unit]]],
        gone: list[tuple[int, str]],
    ) -> None:
        """Make the chunks `edits` says; forget the keys left out that went."""
        chunks: list[Chunk] = []
        for chunk in self.chunks:
            if chunk not in edits:
                chunks.append(chunk)
                continue
            removed, added = edits[chunk]
            if chunk.template is None and all(
                    members is None and ';' not in key for key, members, _ in added):
                # Lone families still: their text is not kept either.
                keys = sorted([*itertools.filterfalse(removed.__contains__, chunk.keys),
                               *(key for key, _, _ in added)])
                chunks.extend(chunked(chunk.group, (), keys, prometheus_names(keys)))
                continue
            units = [unit for unit in chunk.units() if unit[0] not in removed]
            units.extend(added)
            units.sort(key=operator.itemgetter(0))  # each part sorted already
            chunks.extend(chunked(chunk.group, units))
        self.chunks = chunks
        self.firsts = [(chunk.group, chunk.keys[0]) for chunk in chunks]
        for key in gone:
            self.losers.pop(key, None)
        self.contested = {name for names in self.losers.values() for name in names}
        self.collisions = len(self.losers)
