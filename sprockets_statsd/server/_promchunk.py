"""A piece of the kept text of a scrape: consecutive families of one kind.

A :class:`Chunk` holds the text of up to :data:`CHUNK_FAMILIES` families
with ``%s`` for their values, so that one ``%`` formats the whole piece;
a piece of lone families only (see :mod:`._promlone`) keeps only their
keys and names, and its text is written from them, values and all, each
time: that is about as fast as formatting a kept text, which would be
most of the memory of a layout.  Chunks are replaced, never changed, so
layouts may share them.
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
    :func:`.split_lone`) is made without its text (:meth:`lone`), which
    is then made from its keys' names each time it is needed.
    """

    __slots__ = ('_names', 'group', 'keys', 'members', 'starts', 'template')

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
        # The names of a chunk of lone families, one per line: a fifth of
        # the size of its text, and split faster than the keys are named.
        self._names = ''

    @classmethod
    def lone(cls, group: int, keys: list[str], names: Sequence[str]) -> Chunk:
        """A chunk of the lone families of `keys`, named `names`, its text
        not kept."""
        chunk = cls(group, keys, [], None)
        # A name is made of [A-Za-z0-9_] only (see _promnames).
        chunk._names = '\n'.join(names)
        return chunk

    def names(self) -> list[str]:
        """The name of each family's first key."""
        if self.template is None:
            return self._names.split('\n')
        return prometheus_names(self.keys)

    def units(self) -> Iterator[Unit]:
        if self.template is None or self.starts is None:
            yield from zip(self.keys, itertools.repeat(None),
                           lone_texts(self.group, self.names()))
            return
        members = self.members or itertools.repeat(None)
        template, starts = self.template, self.starts
        for index, (key, member) in enumerate(zip(self.keys, members, strict=False)):
            yield key, member, template[starts[index]:starts[index + 1]]

    def render(self, state: State) -> str:
        """The text of the chunk's families with their values in `state`."""
        if self.template is None:
            return lone_text(self.group, self.names(), _texts(self.values(state)))
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
    :func:`.split_lone`), each sorted by first key.  A chunk of lone
    families only is made without its text (:meth:`Chunk.lone`); the
    others' text is made a slice at a time."""
    chunks: list[Chunk] = []
    # The chunk at hand: runs of lone keys (their places in `keys`) and units.
    runs: list[range | Unit] = []
    size = 0

    def close() -> None:
        nonlocal runs, size
        if len(runs) == 1 and isinstance(runs[0], range):
            lone = runs[0]
            chunks.append(Chunk.lone(group, list(keys[lone.start:lone.stop]),
                                     names[lone.start:lone.stop]))
        else:
            firsts: list[str] = []
            members: list[tuple[tuple[int, str], ...] | None] = []
            texts: list[str] = []
            for run in runs:
                if isinstance(run, range):
                    firsts += keys[run.start:run.stop]
                    members += itertools.repeat(None, len(run))
                    texts += lone_texts(group, names[run.start:run.stop])
                else:
                    firsts.append(run[0])
                    members.append(run[1])
                    texts.append(run[2])
            chunks.append(Chunk(group, firsts, members, texts))
        runs, size = [], 0

    start = 0
    for unit in [*units, None]:
        end = len(keys) if unit is None else bisect.bisect_left(keys, unit[0], start)
        while start < end:
            stop = min(end, start + CHUNK_FAMILIES - size)
            runs.append(range(start, stop))
            size += stop - start
            start = stop
            if size == CHUNK_FAMILIES:
                close()
        if unit is not None:
            runs.append(unit)
            size += 1
            if size == CHUNK_FAMILIES:
                close()
    if runs:
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
