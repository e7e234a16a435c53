"""Graphite plaintext rendering of a flush, as the reference's graphite backend."""

# Strategy: a flush of 100k names is ~440k lines, rendered in a sink's
# thread that holds the GIL (and so slows the receive loop) while it works,
# so the work per line is a few list appends: the payload is one join of
# pieces (namespace, key, statistic, suffix and tags, value) and nothing is
# concatenated per line.  A key without tags is used as it is; a timer's
# name is built once, not once per statistic.  Each distinct value is
# formatted once per flush, together with the timestamp and newline after
# it.  Where the backend must clean names (key_name_sanitize off), the
# cleaned names are kept between flushes (see _graphitenames), since keys
# mostly persist.
# Keeping every key's finished names instead was measured slower: a lookup
# in a dictionary of 100k names costs more than the appends it saves.

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import TypeVar

from sprockets_statsd.server._aggregatorconfig import AggregatorConfig
from sprockets_statsd.server._finite import saturate
from sprockets_statsd.server._graphitenames import Names, dotted, forget_cleaned_names
from sprockets_statsd.server._graphiteown import GraphiteStats, own_lines
from sprockets_statsd.server._jsnumber import format_js_number
from sprockets_statsd.server._snapshot import Snapshot
from sprockets_statsd.server._timerdata import SingleValue, TimerData

__all__ = ['CHUNK_NAMES', 'GraphiteStats', 'format_js_number', 'render', 'render_chunks']

# Distinct values whose text is kept during one flush: the common ones
# (0, 1, counts, rates) repeat; unique ones beyond this are formatted each
# time rather than held.
_MAX_VALUES = 50_000
# Timer blocks (a timer's lines but its name, see _Blocks) kept
# during one flush: about 1 KB each (fourteen lines with the default
# threshold), so a few MB at most.  A counter's block is a tuple of texts
# the value memo holds, so counters keep up to _MAX_VALUES of them.
_MAX_BLOCKS = 4096

#: Names rendered per chunk: a few hundred KB of text, so that a sink can
#: send a flush piece by piece instead of holding all of it (80 MB for a
#: million counters), while each piece is still large enough that the
#: per-chunk overhead stays negligible.
CHUNK_NAMES = 4096

_T = TypeVar('_T')
_K = TypeVar('_K')
_V = TypeVar('_V')
# A timer read from its values: ``(values, count)`` (see TimerData.simple).
_TimerKey = tuple[Sequence[float], float]


class _Memo(dict[_K, _V]):
    """What one flush makes of each key, kept up to a bound.

    :param make: makes the value of a key
    :param bound: values kept; beyond it, values are made each time
    """

    def __init__(self, make: Callable[[_K], _V], bound: int) -> None:
        super().__init__()
        self._make = make
        self._bound = bound

    def __missing__(self, key: _K) -> _V:
        value = self._make(key)
        if len(self) < self._bound:
            self[key] = value
        return value


class _Values(_Memo[float, str]):
    """One flush's values, each as ``' <value> <timestamp>\\n'``.

    Equal numbers (1 and 1.0, 0.0 and -0.0) have the same text, so they
    may share an entry.

    :param end: the timestamp and newline, with the space before them
    :param head: put before each value's text (the name's end)
    :param tail: put after it (the next line's start)
    :param scale: each value is divided by it before formatting
    """

    def __init__(self, end: str, head: str = '', tail: str = '', scale: float = 1) -> None:
        start, end = head + ' ', end + tail

        def text(value: float) -> str:
            # A rate computed here can overflow where the count did not.
            return start + format_js_number(
                saturate(value / scale) if scale != 1 else value) + end

        super().__init__(text, _MAX_VALUES)


#: A name's lines but the name, by what they depend on: ``name.join(block)``
#: is the name's lines, joined in C.  Names of a big flush mostly share a few
#: values (whole counts, whole milliseconds), so a block is made once per
#: value, and one join per name does the rest.
_Blocks = _Memo[_K, tuple[str, ...]]


def _counter_chunks(
    snapshot: Snapshot,
    config: AggregatorConfig,
    names: Names,
    end: str,
    size: int,
) -> Iterator[str]:
    """The counters' rate lines and, with ``flush_counts``, count lines."""
    suffix = names.suffix
    if config.legacy_namespace:
        rate_head, rate_extra = dotted(names.counter), ''
        count_head, count_extra = 'stats_counts.', ''
    else:
        rate_head = count_head = dotted(names.counter)
        rate_extra, count_extra = '.rate', '.count'
    flush_counts = config.flush_counts
    interval = snapshot.flush_interval
    # Keyed by the count, so that one lookup gives the rate's text.
    rates = _Values(end, scale=interval)
    counts = _Values(end)
    # The plain path's lines of a name, by its count, without the name:
    # ``name.join(block)`` is them all (see _Blocks).
    plain_rates = _Values(end, rate_extra + suffix, count_head if flush_counts else '',
                          interval)
    blocks: _Blocks[float]
    if flush_counts:
        plain_counts = _Values(end, count_extra + suffix)
        blocks = _Memo(lambda count: (rate_head, plain_rates[count], plain_counts[count]),
                         _MAX_VALUES)
    else:
        blocks = _Memo(lambda count: (rate_head, plain_rates[count]), _MAX_VALUES)
    plain = not names.sanitize
    counters = snapshot.counters
    key_chunks = _chunked(counters, size)
    for keys, chunk in zip(key_chunks, _chunked(counters.values(), size), strict=True):
        if plain and ';' not in ''.join(keys):
            # The common case, every step in C: one join per name.
            yield ''.join(map(str.join, keys, map(blocks.__getitem__, chunk)))
            continue
        out: list[str] = []
        add = out.append
        for key, value in zip(keys, chunk, strict=True):
            name, tail = names.split(key)
            add(rate_head)
            add(name)
            add(rate_extra + tail)
            add(rates[value])
            if flush_counts:
                add(count_head)
                add(name)
                add(count_extra + tail)
                add(counts[value])
        yield ''.join(out)


def _timer_block(
    stats_of: Callable[[Sequence[float], float], Mapping[str, float]],
    head: str,
    suffix: str,
    values: _Values,
) -> Callable[[_TimerKey], tuple[str, ...]]:
    """What makes the block of a timer read from its values, from
    ``(values, count)``: `head` (the namespace), then each statistic's name,
    value and the next line's `head`."""

    def make(key: _TimerKey) -> tuple[str, ...]:
        lines = [f'.{name}{suffix}{values[number]}' for name, number in stats_of(*key).items()]
        return (head, *[line + head for line in lines[:-1]], *lines[-1:])

    return make


def _timer_chunks(
    timer_data: Mapping[str, Mapping[str, float]],
    names: Names,
    values: _Values,
    size: int,
) -> Iterator[str]:
    """Every statistic of every timer."""
    timer_ns = dotted(names.timer)
    suffix = names.suffix
    plain = not names.sanitize
    blocks: _Blocks[_TimerKey] | None = None
    simple: Callable[[Sequence[str]], Iterator[_TimerKey] | None] | None = None
    if isinstance(timer_data, TimerData) and timer_data.reads_values and plain:
        blocks = _Memo(_timer_block(timer_data.stats_of, timer_ns, suffix, values),
                         _MAX_BLOCKS)
        simple = timer_data.simple
    for keys in _chunked(timer_data, size):
        found = simple(keys) if simple is not None and ';' not in ''.join(keys) else None
        if found is not None and blocks is not None:
            # The common case of a big flush (timers with one value or
            # none), every step in C: one join per timer.
            yield ''.join(map(str.join, keys, map(blocks.__getitem__, found)))
            continue
        out: list[str] = []
        add = out.append
        for key in keys:
            data = timer_data[key]
            if plain and ';' not in key:
                head = timer_ns + key + '.'
                tail = suffix
            else:
                name, tail = names.split(key)
                head = timer_ns + name + '.'
            # A timer with one value keeps its statistics as a few numbers.
            stats: Iterable[tuple[str, float]] = (
                zip(data.names, data.values_in_order(), strict=True)
                if type(data) is SingleValue else data.items()
            )
            if tail:
                for stat, value in stats:
                    add(head)
                    add(stat)
                    add(tail)
                    add(values[value])
            else:
                for stat, value in stats:
                    add(head)
                    add(stat)
                    add(values[value])
        yield ''.join(out)


def _one_line_chunks(
    pairs: Iterable[tuple[str, float]],
    namespace: Sequence[str],
    extra: str,
    names: Names,
    values: _Values,
    size: int,
) -> Iterator[str]:
    """One line per key: the gauges, or the sets' counts (`extra` ``.count``)."""
    head = dotted(namespace)
    end = extra + names.suffix
    plain = not names.sanitize
    for chunk in _chunked(pairs, size):
        out: list[str] = []
        add = out.append
        for key, value in chunk:
            add(head)
            if plain and ';' not in key:
                add(key)
                add(end)
            else:
                name, tail = names.split(key)
                add(name)
                add(extra + tail)
            add(values[value])
        yield ''.join(out)


def _chunked(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    """`items` in lists of `size` (the last one shorter)."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def render(
    snapshot: Snapshot,
    config: AggregatorConfig,
    stats: GraphiteStats,
    *,
    timer: Callable[[], float] = time.perf_counter,
) -> bytes:
    """Render one flush as the Graphite plaintext payload, all at once.

    The lines, their names, values and order are those of etsy statsd's
    graphite backend: counters, timers, gauges, sets, then ``numStats``,
    ``graphiteStats.calculationtime``, ``processing_time`` and the
    ``graphiteStats`` of the previous send.  Every line carries the
    snapshot's timestamp.  Does no I/O, and may run in several threads at
    once.  The snapshot's timer statistics are computed here if no one has
    read them yet; that time is ``processing_time``, not
    ``calculationtime``.  :func:`render_chunks` gives the same bytes in
    pieces.

    :param snapshot: the flush to render
    :param config: the settings (namespaces, suffix, flush_counts)
    :param stats: the previous send of the sink this payload is for
    :param timer: monotonic clock in seconds, for ``calculationtime``
    :returns: ``name value timestamp\\n`` lines, UTF-8 encoded
    """
    timer_data = snapshot.timer_data
    start = timer()
    names = Names.of(config)
    end = f' {snapshot.timestamp}\n'
    # Encoded piece by piece into one buffer, whose bytes getvalue() hands
    # over without a copy: the payload is held once, not three times (the
    # pieces, their join and its encoding).
    payload = io.BytesIO()
    for chunk in _body(snapshot, timer_data, config, names, end, CHUNK_NAMES):
        payload.write(chunk.encode())
    elapsed = timer() - start
    payload.write(own_lines(snapshot, config, stats, names, end, elapsed).encode())
    return payload.getvalue()


def render_chunks(
    snapshot: Snapshot,
    config: AggregatorConfig,
    stats: GraphiteStats,
    *,
    timer: Callable[[], float] = time.perf_counter,
    chunk_names: int = CHUNK_NAMES,
) -> Iterator[bytes]:
    """Render one flush as the Graphite plaintext payload, in chunks.

    The lines, their names, values and order are those of etsy statsd's
    graphite backend: counters, timers, gauges, sets, then ``numStats``,
    ``graphiteStats.calculationtime``, ``processing_time`` and the
    ``graphiteStats`` of the previous send.  Every line carries the
    snapshot's timestamp.  Each chunk holds the whole lines of at most
    `chunk_names` names, so the caller may send each one before the next
    is rendered and never hold the whole payload.  Does no I/O, and may
    run in several threads at once.  The snapshot's timer statistics are
    computed here if no one has read them yet; that time is
    ``processing_time``, not ``calculationtime``, which counts only the
    time spent in this generator, not the caller's between chunks.

    :param snapshot: the flush to render
    :param config: the settings (namespaces, suffix, flush_counts)
    :param stats: the previous send of the sink this payload is for
    :param timer: monotonic clock in seconds, for ``calculationtime``
    :param chunk_names: names per chunk, at least 1
    :returns: ``name value timestamp\\n`` lines, UTF-8 encoded
    """
    timer_data = snapshot.timer_data
    start = timer()
    busy = 0.0
    names = Names.of(config)
    end = f' {snapshot.timestamp}\n'
    for chunk in _body(snapshot, timer_data, config, names, end, chunk_names):
        busy += timer() - start
        yield chunk.encode()
        start = timer()
    busy += timer() - start
    yield own_lines(snapshot, config, stats, names, end, busy).encode()


def _body(
    snapshot: Snapshot,
    timer_data: Mapping[str, Mapping[str, float]],
    config: AggregatorConfig,
    names: Names,
    end: str,
    size: int,
) -> Iterator[str]:
    """Every line but the server's own, `size` names at a time."""
    values = _Values(end)
    yield from _counter_chunks(snapshot, config, names, end, size)
    yield from _timer_chunks(timer_data, names, values, size)
    yield from _one_line_chunks(snapshot.gauges.items(), names.gauge, '', names, values, size)
    sizes = ((key, len(members)) for key, members in snapshot.sets.items())
    yield from _one_line_chunks(sizes, names.set, '.count', names, values, size)
    forget_cleaned_names(snapshot.num_stats)
