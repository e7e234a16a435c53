"""The fast rendering paths give exactly what the plain ones give, within bounds.

The plain ones are written out here: a name joined per line, every value
formatted by the general algorithm, every timer's statistics computed
eagerly.  Random flushes, with names that come and go, go through both.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import math
import random
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sprockets_statsd.server import (
    _graphitenames,
    _jsnumber,
    _timerdata,
    _timernames,
    _timerstats,
    graphite,
)
from sprockets_statsd.server._finite import saturated
from sprockets_statsd.server._jsnumber import format_js_number, js_round
from sprockets_statsd.server.aggregator import Aggregator, Snapshot
from sprockets_statsd.server.config import AggregatorConfig
from sprockets_statsd.server.parser import sanitize_key

T0 = 1_700_000_000

CONFIGS = [
    AggregatorConfig(),
    AggregatorConfig(legacy_namespace=False, global_suffix='host1'),
    AggregatorConfig(
        key_name_sanitize=False,
        global_suffix='sfx',
        percent_thresholds=(90, -10, 99.9),
        histograms=(('t', (0.5, 10, math.inf)),),
    ),
    AggregatorConfig(
        legacy_namespace=False,
        global_prefix='',
        prefix_counter='',
        prefix_timer='',
        flush_counts=False,
        key_name_sanitize=False,
        delete_idle_stats=True,
        calculated_timer_metrics=('count', 'upper_percent', 'histogram'),
        histograms=(('x', (1, math.inf)),),
    ),
    AggregatorConfig(delete_idle_stats=True, flush_interval=0.1),
]

# Names that exercise tags, sanitising (by either side) and the suffix.
NAMES = ['a', 't.x', 'b/c', 'sp ace', 'plus+x', 'k\u00f6ln', 'tx', 'x.y.z', 'q']
TAGS = ['', '|#env:prod', '|#a:b,c:d', '|#role']
VALUES = [0, 1, 2, -3, 0.375, 1e-7, 5e-8, 1e21, 1.5e300, 12.5, 0.1, 250, 1e16]


def frozen() -> float:
    """A clock that never advances, so calculationtime is 0."""
    return 0.0


def reference_number(x: float) -> str:
    """Number#toString the general way, without the fast path."""
    return _jsnumber._format_general(float(x))


def reference_render(
    snapshot: Snapshot, config: AggregatorConfig, stats: graphite.GraphiteStats
) -> list[str]:
    """The payload's lines, every name joined and every value formatted anew."""
    if config.legacy_namespace:
        base: tuple[str, ...] = ('stats',)
        parts = ('', 'timers', 'gauges', 'sets')
    else:
        base = (config.global_prefix,) if config.global_prefix else ()
        parts = (config.prefix_counter, config.prefix_timer, config.prefix_gauge,
                 config.prefix_set)
    counter_ns, timer_ns, gauge_ns, set_ns = (base + ((p,) if p else ()) for p in parts)
    suffix = '.' + config.global_suffix if config.global_suffix else ''

    def name(namespace: Sequence[str], key: str, *extra: str) -> str:
        part, semicolon, tags = key.partition(';')
        if not config.key_name_sanitize:
            part = sanitize_key(part)
        return '.'.join((*namespace, part, *extra)) + suffix + semicolon + tags

    num = reference_number
    ts = snapshot.timestamp
    lines = []
    for key, value in snapshot.counters.items():
        rate = num(snapshot.counter_rates[key])
        if config.legacy_namespace:
            lines.append(f'{name(counter_ns, key)} {rate} {ts}')
            if config.flush_counts:
                lines.append(f'{name(("stats_counts",), key)} {num(value)} {ts}')
        else:
            lines.append(f'{name(counter_ns, key, "rate")} {rate} {ts}')
            if config.flush_counts:
                lines.append(f'{name(counter_ns, key, "count")} {num(value)} {ts}')
    for key, data in snapshot.timer_data.items():
        for stat, value in data.items():
            lines.append(f'{name(timer_ns, key, stat)} {num(value)} {ts}')
    for key, value in snapshot.gauges.items():
        lines.append(f'{name(gauge_ns, key)} {num(value)} {ts}')
    for key, members in snapshot.sets.items():
        lines.append(f'{name(set_ns, key, "count")} {len(members)} {ts}')
    own = config.prefix_stats
    internal = '.'.join((*base, own))
    if config.legacy_namespace:
        lines += [
            f'{own}.numStats{suffix} {snapshot.num_stats} {ts}',
            f'stats.{own}.graphiteStats.calculationtime{suffix} 0 {ts}',
            f'stats.{own}.processing_time{suffix} {snapshot.processing_time} {ts}',
        ]
    else:
        lines += [
            f'{internal}.numStats{suffix} {snapshot.num_stats} {ts}',
            f'{internal}.graphiteStats.calculationtime{suffix} 0 {ts}',
            f'{internal}.processing_time{suffix} {snapshot.processing_time} {ts}',
        ]
    for stat, value in (
        ('last_exception', stats.last_exception or 0),
        ('last_flush', stats.last_flush or 0),
        ('flush_time', stats.flush_time),
        ('flush_length', stats.flush_length),
    ):
        lines.append(f'{internal}.graphiteStats.{stat}{suffix} {num(value)} {ts}')
    return lines


def rendered_lines(snapshot: Snapshot, config: AggregatorConfig,
                   stats: graphite.GraphiteStats) -> list[str]:
    """render()'s payload as lines; it must end with exactly one newline."""
    text = graphite.render(snapshot, config, stats, timer=frozen).decode()
    assert text.endswith('\n')
    assert not text.endswith('\n\n')
    return text[:-1].split('\n')


def random_packet(rng: random.Random, names: Sequence[str]) -> bytes:
    """A few lines of every type for `names`, with tags and sample rates."""
    lines = []
    for _ in range(rng.randint(1, 12)):
        metric = rng.choice(names) + ''.join(rng.choices('xyz', k=rng.randint(0, 1)))
        kind = rng.choice(['c', 'ms', 'g', 's'])
        value = rng.choice(VALUES)
        if kind == 'ms':
            value = abs(value)
        text = f'm{rng.randint(0, 3)}' if kind == 's' else repr(value)
        if kind == 'g' and rng.random() < 0.2:
            text = '+' + text if value >= 0 else text
        rate = rng.choice(['', '', '|@0.5', '|@0.1'])
        lines.append(f'{metric}:{text}|{kind}{rate}{rng.choice(TAGS)}')
    return '\n'.join(lines).encode()


# -- whole payloads ----------------------------------------------------------


@pytest.mark.parametrize('config', CONFIGS, ids=range(len(CONFIGS)))
def test_random_flushes_match_the_plain_rendering(config: AggregatorConfig) -> None:
    """Every flush, as names come and go, renders byte for byte as the plain way."""
    rng = random.Random(f'render-{config}')
    aggregator = Aggregator(config, timer=frozen)
    stats = graphite.GraphiteStats(last_flush=T0 - 10, last_exception=None,
                                   flush_time=2.5, flush_length=640)
    for flush in range(6):
        # A different subset of the names each interval, sometimes none.
        names = rng.sample(NAMES, rng.randint(0, len(NAMES)))
        for _ in range(rng.randint(0, 30) if names else 0):
            aggregator.receive(random_packet(rng, names))
        snapshot = aggregator.flush(T0 + 10 * flush)
        assert rendered_lines(snapshot, config, stats) == reference_render(
            snapshot, config, stats
        )



@pytest.mark.parametrize('config', CONFIGS, ids=range(len(CONFIGS)))
@pytest.mark.parametrize('size', [1, 3, 4096])
def test_chunks_join_to_the_whole_payload(config: AggregatorConfig, size: int) -> None:
    """render_chunks() gives render()'s bytes, each chunk whole lines of at
    most `size` names, the server's own lines last."""
    rng = random.Random(f'chunks-{config}-{size}')
    aggregator = Aggregator(config, timer=frozen)
    stats = graphite.GraphiteStats()
    names = [f'{n}{i}' for n in NAMES for i in range(5)]
    for flush in range(3):
        for _ in range(40):
            aggregator.receive(random_packet(rng, names))
        snapshot = aggregator.flush(T0 + 10 * flush)
        chunks = list(graphite.render_chunks(snapshot, config, stats, timer=frozen,
                                             chunk_names=size))
        assert b''.join(chunks) == graphite.render(snapshot, config, stats, timer=frozen)
        own = chunks.pop().decode().split('\n')
        assert own[0].split(' ')[0].endswith(f'numStats{_graphitenames.Names.of(config).suffix}')
        assert all(chunk.endswith(b'\n') for chunk in chunks)
        # Each kind of metric is cut into pieces of `size` names.
        assert len(chunks) == sum(
            -(-len(mapping) // size)
            for mapping in (snapshot.counters, snapshot.timers, snapshot.gauges,
                            snapshot.sets)
        )
        lines = [line for chunk in chunks for line in chunk.decode()[:-1].split('\n')]
        assert lines == reference_render(snapshot, config, stats)[:len(lines)]


BOUNDED = [
    # Values past the value memo's bound: formatted directly.
    ('_MAX_VALUES', 3, AggregatorConfig(),
     b'\n'.join(f'g{i}:{v!r}|g'.encode() for i, v in enumerate(VALUES))
     + b'\nt:1|ms:2|ms:2.5|ms\nc:7|c'),
    # One-value timers past the block memo's bound: a block made each time.
    ('_MAX_BLOCKS', 2, AggregatorConfig(),
     b'\n'.join(b't%d:%d|ms' % (i, i % 5) for i in range(20))),
    # Counters past the value memo's bound, with and without count lines.
    ('_MAX_VALUES', 2, AggregatorConfig(),
     b'\n'.join(b'c%d:%d|c' % (i, i % 7) for i in range(30))),
    ('_MAX_VALUES', 2, AggregatorConfig(flush_counts=False, legacy_namespace=False),
     b'\n'.join(b'c%d:%d|c' % (i, i % 7) for i in range(30))),
]


@pytest.mark.parametrize(('bound', 'size', 'config', 'packet'), BOUNDED)
def test_memos_beyond_their_bound_give_the_same_lines(
    monkeypatch: pytest.MonkeyPatch, bound: str, size: int, config: AggregatorConfig,
    packet: bytes,
) -> None:
    """With a per-flush memo full, what it would have kept is made each time,
    and the payload is the same."""
    monkeypatch.setattr(graphite, bound, size)
    aggregator = Aggregator(config, timer=frozen)
    aggregator.receive(packet)
    snapshot = aggregator.flush(T0)
    stats = graphite.GraphiteStats()
    assert rendered_lines(snapshot, config, stats) == reference_render(snapshot, config, stats)


def test_the_value_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-flush memo of formatted values stops growing at its bound."""
    monkeypatch.setattr(graphite, '_MAX_VALUES', 10)
    values = graphite._Values(' 1\n')
    texts = [values[float(i) / 3] for i in range(100)]
    assert len(values) == 10
    assert texts == [' ' + reference_number(i / 3) + ' 1\n' for i in range(100)]
    assert values[0.0] == values[-0.0] == ' 0 1\n'


def test_cleaned_names_are_bounded_by_the_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    """The memo of names cleaned by the backend drops names that are gone."""
    monkeypatch.setattr(_graphitenames, '_sanitized', {})
    monkeypatch.setattr(_graphitenames, '_SANITIZED_SLACK', 0)
    config = AggregatorConfig(key_name_sanitize=False, delete_idle_stats=True)
    aggregator = Aggregator(config, timer=frozen)
    stats = graphite.GraphiteStats()
    sizes = []
    for flush, count in enumerate([200, 200, 5, 5, 300]):
        first = 1000 * flush  # new names every interval
        aggregator.receive(
            b'\n'.join(f'n/{i}:1|c'.encode() for i in range(first, first + count))
        )
        snapshot = aggregator.flush(T0 + 10 * flush)
        assert rendered_lines(snapshot, config, stats) == reference_render(
            snapshot, config, stats
        )
        sizes.append(len(_graphitenames._sanitized))
        assert len(_graphitenames._sanitized) <= 2 * snapshot.num_stats
    # It grew with the names, and was emptied when they went.
    assert sizes[0] >= 200
    assert sizes[2] == 0


# -- threads -----------------------------------------------------------------


def test_sinks_rendering_one_flush_in_threads_agree() -> None:
    """Several threads rendering one fresh flush get the same payload; the
    timer statistics are computed once, by whichever thread comes first."""
    calls = 0
    called = threading.Condition()

    def clock() -> float:
        nonlocal calls
        with called:
            calls += 1
            called.notify_all()
            if calls == 1:
                # Hold the first computation open for a while: a second
                # one, started by another thread meanwhile, would show.
                called.wait_for(lambda: calls > 1, timeout=0.5)
        return 0.0

    config = AggregatorConfig(key_name_sanitize=False, histograms=(('t', (5, 50)),))
    aggregator = Aggregator(config, timer=clock)
    rng = random.Random(7)
    for _ in range(300):
        aggregator.receive(random_packet(rng, [f'{n}{i}' for n in NAMES for i in range(20)]))
    snapshot = aggregator.flush(T0)
    threads = 4
    barrier = threading.Barrier(threads)

    def render() -> bytes:
        barrier.wait(timeout=30)
        return graphite.render(snapshot, config, graphite.GraphiteStats(), timer=frozen)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        payloads = [f.result(timeout=60) for f in [pool.submit(render) for _ in range(threads)]]
    assert all(p == payloads[0] for p in payloads)
    assert payloads[0].decode()[:-1].split('\n') == reference_render(
        snapshot, config, graphite.GraphiteStats()
    )
    assert calls == 2  # the start and the end of one computation


# -- timer statistics --------------------------------------------------------


def test_flush_leaves_timer_statistics_to_the_first_reader() -> None:
    """flush() and num_stats do not compute timer statistics; the first read
    does, once, and processing_time measures it."""
    ticks: list[float] = []

    def clock() -> float:
        ticks.append(0.004 * len(ticks))
        return ticks[-1]

    aggregator = Aggregator(AggregatorConfig(), timer=clock)
    aggregator.receive(b't:3|ms:1|ms\nu:2|ms\nc:1|c')
    snapshot = aggregator.flush(T0)
    assert snapshot.num_stats == 6
    assert snapshot.timers['t'] == (1.0, 3.0)
    assert ticks == []
    assert snapshot.timer_data['u']['upper'] == 2
    assert len(ticks) == 2
    assert snapshot.processing_time == 4  # whole ms between the two ticks
    assert snapshot.timer_data['t']['mean'] == 2
    assert len(ticks) == 2


def reference_timer_stats(
    values: Sequence[float],
    count: float,
    interval: float,
    thresholds: Sequence[float],
    bins: Sequence[float],
    wanted: tuple[str, ...] | None,
) -> dict[str, float]:
    """process_metrics for one timer, the plain way (no name caches, no
    single-value shortcut)."""
    n = len(values)
    sums = list(itertools.accumulate(values))
    squares = list(itertools.accumulate(v * v for v in values))
    stats: dict[str, float] = {}
    for pct in thresholds:
        k, total, total_squares, mean, boundary = n, values[0], values[0] * values[0], values[0], values[-1]
        if n > 1:
            k = js_round(abs(pct) / 100 * n)
            if k == 0:
                continue
            if pct > 0:
                boundary, total, total_squares = values[k - 1], sums[k - 1], squares[k - 1]
            else:
                boundary = values[n - k]
                below = n - k - 1
                total = sums[-1] - (sums[below] if below >= 0 else 0.0)
                total_squares = squares[-1] - (squares[below] if below >= 0 else 0.0)
            mean = total / k
        suffix = format_js_number(pct).replace('.', '_', 1).replace('-', 'top', 1)
        stats['count_' + suffix] = k
        stats['mean_' + suffix] = mean
        stats[('upper_' if pct > 0 else 'lower_') + suffix] = boundary
        stats['sum_' + suffix] = total
        stats['sum_squares_' + suffix] = total_squares
    mean = sums[-1] / n
    diffs = 0.0
    for v in values:
        diffs += (v - mean) * (v - mean)
    mid = n // 2
    stats.update({
        'std': math.sqrt(diffs / n), 'upper': values[-1], 'lower': values[0],
        'count': count, 'count_ps': count / interval, 'sum': sums[-1],
        'sum_squares': squares[-1], 'mean': mean,
        'median': values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2,
    })
    i = 0
    for bound in bins:
        start = i
        while i < n and values[i] < bound:
            i += 1
        name = 'inf' if bound == math.inf else format_js_number(bound)
        stats['histogram.bin_' + name.replace('.', '_', 1)] = i - start
    if wanted:
        stats = {
            k: v for k, v in stats.items()
            if _timernames._PERCENT_KEY.sub('_percent', k.partition('.')[0]) in wanted
        }
    return stats


_finite = st.floats(0, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(_finite, min_size=1, max_size=7).map(sorted),
    count=st.sampled_from([1.0, 2.0, 10.0, 3.5]),
    thresholds=st.lists(
        st.sampled_from([90.0, 50.0, -10.0, 99.9, -100.0, 100.0, 1.0]),
        max_size=3, unique=True,
    ),
    bins=st.sampled_from([(), (1.0,), (0.5, 10.0, math.inf)]),
    wanted=st.sampled_from([None, ('count', 'upper_percent', 'histogram'), ('std',)]),
)
def test_timer_stats_match_the_plain_computation(
    values: list[float],
    count: float,
    thresholds: list[float],
    bins: tuple[float, ...],
    wanted: tuple[str, ...] | None,
) -> None:
    """timer_stats, with its cached names and single-value path, computes
    what the plain loop computes, keys in the same order."""
    args: tuple[Any, ...] = (values, count, 10.0, thresholds, bins, wanted)
    got = _timerstats.timer_stats(*args)
    expected = reference_timer_stats(*args)
    assert list(got.items()) == list(expected.items())


# -- numbers -----------------------------------------------------------------


@settings(max_examples=2000, deadline=None)
@given(st.one_of(
    st.floats(),
    st.floats(-1e-3, 1e-3),
    st.floats(1e15, 1e22),
    st.integers(-2**60, 2**60),
    st.integers(-10**6, 10**6).map(lambda i: i / 8),
))
def test_fast_number_path_matches_the_general_one(x: float) -> None:
    """format_js_number's repr() shortcut writes what the digit algorithm writes."""
    assert format_js_number(x) == reference_number(x)


@pytest.mark.parametrize(
    ('value', 'text'),
    [(1e-4, '0.0001'), (9999999999999998.0, '9999999999999998'), (1e16, '10000000000000000'),
     (-0.0, '0'), (-1e-5, '-0.00001'), (123456.5, '123456.5')],
)
def test_fast_number_path_edges(value: float, text: str) -> None:
    """The ends of repr()'s plain range, and negative zero, are written right."""
    assert format_js_number(value) == text


@pytest.mark.parametrize('thresholds', [(90.0,), (90.0, -10.0, 99.9), ()])
@pytest.mark.parametrize('value', [0.0, 1.0, 12.5, 1e-7, 1e200, 1.7976931348623157e308])
def test_single_value_statistics_are_timer_stats(
    thresholds: tuple[float, ...], value: float
) -> None:
    """A timer with one value gets the statistics timer_stats() computes,
    in the same order, saturated alike; the compact form reads as a dict."""
    config = AggregatorConfig(percent_thresholds=thresholds, flush_interval=4)
    computed = _timerstats.TimerStatistics(
        {'t': (value,), 'u': (1.0, 2.0)}, {'t': 2.5, 'u': 2}, config, frozen
    ).data
    single = computed['t']
    assert isinstance(single, _timerdata.SingleValue)
    expected = saturated(_timerstats.timer_stats(
        (value,), 2.5, 4, thresholds, (), None))
    assert list(single.items()) == list(expected.items())
    assert dict(single) == expected
    assert list(single.values()) == list(expected.values())
    assert len(single) == len(expected)
    assert single['count_ps'] == expected['count_ps']
    assert not isinstance(computed['u'], _timerdata.SingleValue)
    filtered = AggregatorConfig(calculated_timer_metrics=('count',))
    assert not isinstance(_timerstats.TimerStatistics(
        {'t': (value,)}, {'t': 1}, filtered, frozen).data['t'], _timerdata.SingleValue)


# -- timers with one value ---------------------------------------------------

SINGLE_CONFIGS = [
    AggregatorConfig(),
    AggregatorConfig(legacy_namespace=False, global_suffix='host1',
                     percent_thresholds=(90, -10, 99.9), flush_interval=4),
    AggregatorConfig(percent_thresholds=()),
    AggregatorConfig(key_name_sanitize=False),
]


@pytest.mark.parametrize('config', SINGLE_CONFIGS, ids=range(len(SINGLE_CONFIGS)))
@pytest.mark.parametrize('size', [1, 2, 7, 4096])
def test_one_value_timers_render_as_the_plain_way(config: AggregatorConfig, size: int) -> None:
    """Chunks of timers that each got one value (the blocks joined in C)
    and chunks mixed with tagged, idle and several-value timers give
    exactly the plain rendering, flush after flush."""
    rng = random.Random(f'single-{config}-{size}')
    aggregator = Aggregator(config, timer=frozen)
    stats = graphite.GraphiteStats()
    values = [*VALUES[1:], 1.7976931348623157e308]  # its square saturates
    for flush in range(3):
        lines = []
        for i in range(40):
            value = abs(rng.choice(values))
            rate = rng.choice(['', '', '|@0.5'])
            lines.append(f't{i}:{value!r}|ms{rate}')
        if flush:
            # Second values, tags and idle timers, but not in every chunk.
            lines += ['t3:2|ms', 't30:0.5|ms|#env:prod', 't31 x:4|ms']
            del lines[10:14]
        aggregator.receive('\n'.join(lines).encode())
        snapshot = aggregator.flush(T0 + 10 * flush)
        payload = b''.join(graphite.render_chunks(snapshot, config, stats, timer=frozen,
                                                  chunk_names=size))
        assert payload.decode()[:-1].split('\n') == reference_render(snapshot, config, stats)


def test_timer_data_reads_one_value_and_idle_timers_from_the_timers() -> None:
    """TimerData keeps the timers' order, computes nothing for a timer with
    one value or none, and tells which chunks are read from their values."""
    config = AggregatorConfig(flush_interval=4)
    data = _timerstats.TimerStatistics(
        {'a': (2.0,), 'b': (1.0, 3.0), 'c': (), 'd': (5.0,)},
        {'a': 2.0, 'b': 2.0, 'c': 0.0, 'd': 1.0}, config, frozen,
    ).data
    assert isinstance(data, _timerdata.TimerData)
    assert list(data) == ['a', 'b', 'c', 'd']
    assert len(data) == 4
    assert 'a' in data
    assert 'x' not in data
    assert dict(data['a']) == saturated(_timerstats.timer_stats((2.0,), 2.0, 4, (90,), (), None))
    assert data['b']['mean'] == 2
    assert dict(data['c']) == {'count': 0, 'count_ps': 0}
    assert data.reads_values
    assert list(data.simple(['a', 'c', 'd']) or ()) == [((2.0,), 2.0), ((), 0.0), ((5.0,), 1.0)]
    assert list(data.simple(['d']) or ()) == [((5.0,), 1.0)]
    assert data.simple(['a', 'b']) is None
    assert isinstance(data.stats_of((7.0,), 1.0), _timerdata.SingleValue)
    assert data.stats_of((), 0.0) is data['c']
    with pytest.raises(KeyError):
        data['x']


def test_timer_data_without_single_values() -> None:
    """With a statistics filter every timer is computed: none is read from
    its values."""
    config = AggregatorConfig(calculated_timer_metrics=('count',))
    data = _timerstats.TimerStatistics(
        {'a': (2.0,), 'c': ()}, {'a': 1.0, 'c': 0.0}, config, frozen).data
    assert isinstance(data, _timerdata.TimerData)
    assert not data.reads_values
    assert data.simple(['a']) is None
    assert dict(data['a']) == {'count': 1}
    assert dict(data['c']) == {'count': 0}
    with pytest.raises(TypeError, match='computed statistics'):
        data.stats_of((2.0,), 1.0)
