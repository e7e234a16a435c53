"""A piece of the kept text of a scrape: consecutive families of one kind.

A :class:`Chunk` holds the text of up to :data:`CHUNK_FAMILIES` families
with ``%s`` for their values, so that one ``%`` formats the whole piece;
a piece of lone families only (see :mod:`._promlone`) may be kept without
its text, which is then written from its keys each time.  Chunks are
replaced, never changed, so layouts may share them.
"""

from __future__ import annotations

import array
import bisect
import itertools
import math
import typing
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.utils import floatToGoString

from sprockets_statsd.server._promnames import prometheus_names
from sprockets_statsd.server._promplan import (
    COUNTERS,
    GAUGES,
    State,
    lone_text,
    lone_texts,
    sample_values,
)

__all__ = ['CHUNK_FAMILIES', 'Chunk', 'Unit', 'chunked']

#: Families per piece of the kept text: a key that comes or goes copies
#: its piece (about a MB), and a piece is formatted in one call.
CHUNK_FAMILIES = 8192
#: The smallest value Go (and so prometheus_client) writes with an
#: exponent where Python's repr does not.
_GO_EXPONENT = 1e6


#: A family as kept: the key that comes first in it, the ``(kind, key)`` of
#: each key in it (None for one key of one sample), its text.
Unit = tuple[str, 'tuple[tuple[int, str], ...] | None', str]


class Chunk:
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
    def lone(cls, group: int, keys: list[str]) -> Chunk:
        """A chunk of the lone families of `keys`, its text not kept."""
        return cls(group, keys, [], None)

    def kept(self) -> Chunk:
        """This chunk, or the same families with their text kept."""
        if self.template is not None:
            return self
        return Chunk(self.group, self.keys, [], self._lone_texts())

    def _lone_texts(self) -> list[str]:
        return lone_texts(self.group, prometheus_names(self.keys))

    def units(self) -> Iterator[Unit]:
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


def chunked(
    group: int, units: Sequence[Unit], keys: Sequence[str] = (), names: Sequence[str] = ()
) -> list[Chunk]:
    """The families of `group` in chunks of :data:`CHUNK_FAMILIES`, in order:
    `units`, and those of the lone `keys`, named `names` (see
    :func:`.split_lone`), each sorted by first key.  A whole chunk of lone
    families is made without its text (:meth:`Chunk.lone`); the others'
    text is made a slice at a time."""
    chunks: list[Chunk] = []
    firsts: list[str] = []
    members: list[tuple[tuple[int, str], ...] | None] = []
    texts: list[str] = []

    def close() -> None:
        nonlocal firsts, members, texts
        chunks.append(Chunk(group, firsts, members, texts))
        firsts, members, texts = [], [], []

    start = 0
    for unit in [*units, None]:
        end = len(keys) if unit is None else bisect.bisect_left(keys, unit[0], start)
        while start < end:
            if not firsts and end - start >= CHUNK_FAMILIES:
                chunks.append(Chunk.lone(group, list(keys[start:start + CHUNK_FAMILIES])))
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
