"""Property tests: arbitrary input never escapes, good lines always count."""

from __future__ import annotations

import math
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from sprockets_statsd.server.aggregator import Aggregator, Snapshot
from sprockets_statsd.server.config import AggregatorConfig
from sprockets_statsd.server.parser import ParseResult, Sample, parse_packet

T0 = 1_700_000_000.0

# Bytes that matter to the grammar, mixed into otherwise random input so
# that examples reach deep into it rather than failing at the first ':'.
_SYNTAX = st.sampled_from(
    [b':', b'|', b'\n', b'\r', b'|#', b',', b'@', b'c', b'ms', b'g', b's', b'h',
     b'1', b'-', b'+', b'.', b'e', b' ', b';', b'\xff', b'0.5', b'a',
     b'|c:', b'|T', b'|T17', b'|card:', b'|e:', b'_e{', b'_sc|', b'=', b'#', b'}:',
     b':1:2', b'|d', b'd']
)
packets = st.lists(st.one_of(_SYNTAX, st.binary(max_size=8)), max_size=40).map(b''.join)

names = st.text('abcxyz019._-', min_size=1, max_size=12).filter(
    lambda n: n.strip('._-') != ''
)
rates = st.sampled_from([None, 1.0, 0.5, 0.25, 0.1])
numbers = st.one_of(
    st.just(-0.0),
    st.integers(-10**6, 10**6).map(float),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32).map(float),
)
BAD_LINES = [
    'nocolon', 'k:1|x', 'k:1', ':1|c', 'k:|c', 'k:NaN|c', 'k:Infinity|g',
    'k:0x1A|c', 'k:-5|ms', 'k:-5|ms\r', 'k:1|c|@2', 'k:1|c|@0', 'k:1|c|0.5',
    'k:1|', 'k:1|MS', 'k:1_0|c', '!!!:1|c',
    'k:1|g|T', 'k:1|g|Tx', 'k:1|c|c:', 'k:1|c|card:', 'k:1|c|e:', 'k:1|c|9',
    'k:1|c||#a:b', 'x,a=b;c=d:1|c', '_sc|x', '_e{x,1}:a|b', 'k:x|d|#a:b',
]


def model(result: ParseResult) -> dict[str, object]:
    """Aggregate parse_packet's samples the simplest way (the spec's words)."""
    counters: dict[str, float] = {}
    timers: dict[str, list[float]] = defaultdict(list)
    gauges: dict[str, float] = {}
    sets: dict[str, set[str]] = defaultdict(set)
    for sample in result.samples:
        if sample.kind == 'c':
            assert isinstance(sample.value, float)
            counters[sample.key] = counters.get(sample.key, 0.0) + sample.value * (
                1 / sample.rate
            )
        elif sample.kind == 'ms':
            assert isinstance(sample.value, float)
            timers[sample.key].append(sample.value)
        elif sample.kind == 'g':
            assert isinstance(sample.value, float)
            old = gauges.get(sample.key)
            gauges[sample.key] = (
                old + sample.value if old and sample.delta else sample.value
            )
        else:
            assert isinstance(sample.value, str)
            sets[sample.key].add(sample.value)
    return {
        'counters': counters,
        'timers': {k: tuple(sorted(v)) for k, v in timers.items()},
        'gauges': gauges,
        'sets': {k: frozenset(v) for k, v in sets.items()},
    }


def observed(snapshot: Snapshot) -> dict[str, object]:
    """The same view of an aggregator's snapshot, internals left out."""
    return {
        'counters': {
            k: v for k, v in snapshot.counters.items() if not k.startswith('statsd.')
        },
        'timers': dict(snapshot.timers),
        'gauges': dict(snapshot.gauges),
        'sets': dict(snapshot.sets),
    }


@settings(max_examples=300, deadline=None)
@given(st.lists(packets, max_size=4))
def test_arbitrary_bytes_never_escape_and_agree(data: list[bytes]) -> None:
    """Neither parse_packet nor receive() raises on any bytes, and both agree.

    The aggregator's memoised fast path must give exactly what the
    standalone parser gives for the same packets.
    """
    aggregator = Aggregator(AggregatorConfig())
    seen = bad = events = checks = unknown = 0
    combined: list[Sample] = []
    for packet in data:
        result = parse_packet(packet)
        seen += result.metrics_seen
        bad += result.bad_lines
        events += result.events
        checks += result.service_checks
        unknown += result.unknown_fields
        combined.extend(result.samples)
        aggregator.receive(packet)
    snapshot = aggregator.flush(T0)
    expected = model(ParseResult(tuple(combined), seen, bad))
    assert observed(snapshot) == expected
    assert snapshot.packets_received == len(data)
    assert snapshot.metrics_received == seen
    assert snapshot.bad_lines_seen == bad
    assert snapshot.counters.get('statsd.events_seen', 0) == events
    assert snapshot.counters.get('statsd.service_checks_seen', 0) == checks
    assert snapshot.counters.get('statsd.unknown_fields_seen', 0) == unknown
    for key in observed(snapshot)['counters']:  # type: ignore[attr-defined]
        # Nothing malformed reaches a key: a clean name, then sorted k=v tags.
        name, *tags = key.split(';')
        assert name
        assert '=' not in name or not tags
        assert all(t.partition('=')[0] and t.partition('=')[2] for t in tags)
        assert [t.partition('=')[0] for t in tags] == sorted(
            {t.partition('=')[0] for t in tags}
        )


def _good_line(name: str, kind: str, value: float, rate: float | None) -> str:
    if kind == 'ms':
        value = abs(value)
    text = repr(value) if kind != 's' else f'm{int(value)}'
    suffix = f'|@{rate}' if rate is not None else ''
    return f'{name}:{text}|{kind}{suffix}'


good_lines = st.tuples(names, st.sampled_from(['c', 'ms', 'g', 's']), numbers, rates)


@settings(max_examples=250, deadline=None)
@given(
    st.lists(
        st.one_of(good_lines, st.sampled_from(BAD_LINES)), min_size=1, max_size=30
    ),
    st.sampled_from(['\n', '\r\n']),
)
def test_good_lines_count_next_to_bad_ones(
    entries: list[tuple[str, str, float, float | None] | str], newline: str
) -> None:
    """Every good line is aggregated and every bad line counted, in any mix."""
    counters: dict[str, float] = {}
    timers: dict[str, list[float]] = defaultdict(list)
    gauges: dict[str, float] = {}
    sets: dict[str, set[str]] = defaultdict(set)
    text_lines = []
    bad = 0
    for entry in entries:
        if isinstance(entry, str):
            text_lines.append(entry)
            bad += 1
            continue
        name, kind, value, rate = entry
        # Separate namespaces per type keep the expectation simple.
        name = f'{kind}.{name}'
        line = _good_line(name, kind, value, rate)
        text_lines.append(line)
        if kind == 'c':
            counters[name] = counters.get(name, 0.0) + value * (1 / (rate or 1.0))
        elif kind == 'ms':
            timers[name].append(abs(value))
        elif kind == 'g':
            old = gauges.get(name)
            # repr() writes a sign only for negatives (-0.0 included).
            delta = math.copysign(1.0, value) < 0
            gauges[name] = old + value if old and delta else value
        else:
            sets[name].add(f'm{int(value)}')
    aggregator = Aggregator(AggregatorConfig())
    aggregator.receive(newline.join(text_lines).encode())
    snapshot = aggregator.flush(T0)
    assert observed(snapshot) == {
        'counters': counters,
        'timers': {k: tuple(sorted(v)) for k, v in timers.items()},
        'gauges': gauges,
        'sets': {k: frozenset(v) for k, v in sets.items()},
    }
    assert snapshot.bad_lines_seen == bad
    assert snapshot.metrics_received == len(entries)


tag_sets = st.dictionaries(
    st.text('abkz', min_size=1, max_size=3), st.text('xy019', min_size=1, max_size=3),
    max_size=4,
)


def _render(name: str, tags: dict[str, str], dialect: str, order: list[int]) -> tuple[str, str]:
    """``(head, tail)`` of a line carrying `tags` in `dialect` and `order`."""
    items = [list(tags.items())[i] for i in order]
    if dialect == 'graphite':
        return name + ''.join(f';{k}={v}' for k, v in items), ''
    if dialect == 'influxdb':
        return name + ''.join(f',{k}={v}' for k, v in items), ''
    return name, ('|#' + ','.join(f'{k}:{v}' for k, v in items)) if items else ''


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(['graphite', 'influxdb', 'dogstatsd']),
            st.randoms(use_true_random=False),
            st.lists(st.integers(0, 1000), min_size=1, max_size=4),
            st.sampled_from(['', '|c:abc', '|T1700000000', '|card:low', '|zz:new']),
            rates,
        ),
        min_size=1,
        max_size=20,
    ),
    tag_sets,
)
def test_one_tag_set_is_one_series_in_any_dialect_and_order(
    lines: list[tuple[str, object, list[int], str, float | None]],
    tags: dict[str, str],
) -> None:
    """Packed counters with one tag set, in any dialect, order and fields, sum to one key."""
    text = []
    total = 0.0
    for dialect, rnd, values, extra, rate in lines:
        order = list(range(len(tags)))
        rnd.shuffle(order)  # type: ignore[attr-defined]
        head, tail = _render('m', tags, dialect, order)
        packed = ':'.join(str(v) for v in values)
        rate_text = f'|@{rate}' if rate is not None else ''
        text.append(f'{head}:{packed}|c{rate_text}{tail}{extra}')
        for value in values:  # in the aggregator's order: floats add exactly alike
            total += value * (1 / (rate or 1.0))
    aggregator = Aggregator(AggregatorConfig())
    aggregator.receive('\n'.join(text).encode())
    snapshot = aggregator.flush(T0)
    key = 'm' + ''.join(f';{k}={tags[k]}' for k in sorted(tags))
    assert observed(snapshot)['counters'] == {key: total}
    assert snapshot.bad_lines_seen == 0


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(' +-.0123456789eE_x', max_size=8),
        numbers.map(repr),
        st.sampled_from(['-0', '+0', '1e999', 'NaN', '-1', ' 5 ', '\u0663']),
    ),
    st.sampled_from(['c', 'ms', 'g', 'h', 'd', 's']),
)
def test_the_fast_path_agrees_with_the_general_one(value: str, kind: str) -> None:
    """``value|type`` (the inlined path) reads as ``value|type|@1`` does."""
    from sprockets_statsd.server.parser import parse_body

    fast = parse_body(f'{value}|{kind}')
    general = parse_body(f'{value}|{kind}|@1')
    assert fast == general
