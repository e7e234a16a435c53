"""The kept text of a scrape: every family of a flush but its values, in order.

Strategy: the text is kept in pieces (:class:`_Chunk`) formatted with one
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

import array
import bisect
import io
import itertools
import math
import operator
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client.utils import floatToGoString

from sprockets_statsd.server._promlone import split_lone
from sprockets_statsd.server._promplan import (
    COUNTERS,
    GAUGES,
    LONE_KINDS,
    NO_LABELS,
    SETS,
    SUFFIX_KINDS,
    SUFFIXES,
    TIMERS,
    Plan,
    State,
    family_header,
    family_of,
    lone_text,
    lone_texts,
    make_plan,
    prometheus_labels,
    prometheus_name,
    prometheus_names,
    sample_line,
    sample_names,
    sample_values,
    timer_shape,
)

__all__ = ['CHUNK_FAMILIES', 'Layout']

#: Families per piece of the kept text: a key that comes or goes copies
#: its piece (about a MB), and a piece is formatted in one call.
CHUNK_FAMILIES = 8192
#: The smallest value Go (and so prometheus_client) writes with an
#: exponent where Python's repr does not.
_GO_EXPONENT = 1e6


#: A family as kept: the key that comes first in it, the ``(kind, key)`` of
#: each key in it (None for one key of one sample), its text.
_Unit = tuple[str, 'tuple[tuple[int, str], ...] | None', str]


class _Chunk:
    """Consecutive families whose first keys are of one kind of metric.

    Its text is every line of those families with ``%s`` for the values,
    for one ``%`` formatting; it is replaced, never changed, so a chunk
    may be shared by layouts.  A chunk of lone families only (see
    :func:`.split_lone`) may be made without its text (:meth:`lone`),
    which is then made from its keys each time it is needed, until
    :meth:`kept` gives the chunk with its text.
    """

    __slots__ = ('group', 'keys', 'members', 'starts', 'template')

    def __init__(
        self,
        group: int,
        keys: list[str],
        members: list[tuple[tuple[int, str], ...] | None],
        texts: list[str] | None,
    ) -> None:
        self.group = group
        #: Each family's first key, in order.
        self.keys = keys
        #: Each family's keys, None if all are just their first key.
        self.members = None if not any(members) else members
        self.template: str | None = None
        #: Where each family's text starts, and the end.
        self.starts: array.array[int] | None = None
        if texts is not None:
            self.template = ''.join(texts)
            self.starts = array.array('q', itertools.accumulate(map(len, texts), initial=0))

    @classmethod
    def lone(cls, group: int, keys: list[str]) -> _Chunk:
        """A chunk of the lone families of `keys`, its text not kept."""
        return cls(group, keys, [], None)

    def kept(self) -> _Chunk:
        """This chunk, or the same families with their text kept."""
        if self.template is not None:
            return self
        return _Chunk(self.group, self.keys, [], self._lone_texts())

    def _lone_texts(self) -> list[str]:
        return lone_texts(self.group, prometheus_names(self.keys))

    def units(self) -> Iterator[_Unit]:
        if self.template is None or self.starts is None:
            yield from zip(self.keys, itertools.repeat(None), self._lone_texts())
            return
        members = self.members or itertools.repeat(None)
        template, starts = self.template, self.starts
        for index, (key, member) in enumerate(zip(self.keys, members, strict=False)):
            yield key, member, template[starts[index]:starts[index + 1]]

    def render(self, state: State) -> str:
        """The text of the chunk's families with their values in `state`."""
        if self.template is None:
            return lone_text(self.group, prometheus_names(self.keys), _texts(self.values(state)))
        return self.template % _texts(self.values(state))

    def values(self, state: State) -> Sequence[float]:
        """The values of the chunk's samples in `state`, in order."""
        group, keys = self.group, self.keys
        if self.members is None:
            if group == COUNTERS:
                return tuple(map(state.counters.__getitem__, keys))
            mapping = state.gauges if group == GAUGES else state.sets
            return tuple(map(float, map(mapping.__getitem__, keys)))
        values: list[float] = []
        for key, members in zip(keys, self.members, strict=True):
            for member_group, member in members or ((group, key),):
                values.extend(sample_values(member_group, member, state))
        return values


def _chunked(
    group: int, units: Sequence[_Unit], keys: Sequence[str] = (), names: Sequence[str] = ()
) -> list[_Chunk]:
    """The families of `group` in chunks of :data:`CHUNK_FAMILIES`, in order:
    `units`, and those of the lone `keys`, named `names` (see
    :func:`.split_lone`), each sorted by first key.  A whole chunk of lone
    families is made without its text (:meth:`_Chunk.lone`); the others'
    text is made a slice at a time."""
    chunks: list[_Chunk] = []
    firsts: list[str] = []
    members: list[tuple[tuple[int, str], ...] | None] = []
    texts: list[str] = []

    def close() -> None:
        nonlocal firsts, members, texts
        chunks.append(_Chunk(group, firsts, members, texts))
        firsts, members, texts = [], [], []

    start = 0
    for unit in [*units, None]:
        end = len(keys) if unit is None else bisect.bisect_left(keys, unit[0], start)
        while start < end:
            if not firsts and end - start >= CHUNK_FAMILIES:
                chunks.append(_Chunk.lone(group, list(keys[start:start + CHUNK_FAMILIES])))
                start += CHUNK_FAMILIES
                continue
            stop = min(end, start + CHUNK_FAMILIES - len(firsts))
            firsts += keys[start:stop]
            members += itertools.repeat(None, stop - start)
            texts += lone_texts(group, names[start:stop])
            start = stop
            if len(firsts) == CHUNK_FAMILIES:
                close()
        if unit is not None:
            firsts.append(unit[0])
            members.append(unit[1])
            texts.append(unit[2])
            if len(firsts) == CHUNK_FAMILIES:
                close()
    if firsts:
        close()
    return chunks


def _planned(plan: Plan) -> dict[int, list[_Unit]]:
    """The families of `plan` as units, by the kind of their first key."""
    planned: dict[int, list[_Unit]] = {COUNTERS: [], TIMERS: [], GAUGES: [], SETS: []}
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
    planned: dict[int, list[_Unit]],
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


class Layout:
    """The text of every family of a flush but its values, in order.

    Made from the lone keys of a flush and a plan of the others; then,
    flush after flush, updated for the keys that came and went, as long
    as they change no other key's series: a new key whose family is new,
    a key gone that was a family alone and that no key left out wanted the
    series of, a key left out that goes.  Any other change (a key that
    joins or leaves a family of several, or takes or frees a series
    another key wants) makes a new plan.  Keeps the text (about the size
    of the exposition; but for chunks of lone keys until :meth:`thicken`)
    and, once keys change, the family names, in proportion to
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
            for chunk in _chunked(group, planned[group], lone.keys[group], lone.names[group])
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
                keys = (chunk.keys if chunk.members is None else
                        [key for key, members in zip(chunk.keys, chunk.members, strict=True)
                         if members is None])
                self._families.update(dict.fromkeys(prometheus_names(keys), kind))
            self._families.update(self._planned)
            self._planned = {}
        return self._families

    def thicken(self) -> None:
        """Keep the text of every chunk: what a scrape then writes is only
        the values.  For the merge thread, after a first scrape."""
        self.chunks = [chunk.kept() for chunk in self.chunks]

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
        self, gone: list[tuple[int, str]], new: list[tuple[int, str]], state: State
    ) -> dict[_Chunk, tuple[set[str], list[_Unit]]] | None:
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
                chunk = _Chunk(group, [], [], [])
                self.firsts.insert(index, (group, key))
                self.chunks.insert(index, chunk)
            edits.setdefault(chunk, (set(), []))[1].append(
                (key, ((group, key),) if group == TIMERS else None, text))
        return edits

    def _apply(
        self,
        edits: dict[_Chunk, tuple[set[str], list[_Unit]]],
        gone: list[tuple[int, str]],
    ) -> None:
        """Make the chunks `edits` says; forget the keys left out that went."""
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
        for key in gone:
            self.losers.pop(key, None)
        self.contested = {name for names in self.losers.values() for name in names}
        self.collisions = len(self.losers)
