"""Graphite payloads byte for byte as etsy statsd's graphite backend sends them."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

from sprockets_statsd.server._jsnumber import js_round
from sprockets_statsd.server.aggregator import Aggregator, Snapshot
from sprockets_statsd.server.config import AggregatorConfig
from sprockets_statsd.server.graphite import GraphiteStats, format_js_number, render

T0 = 1_700_000_000


def frozen_clock() -> Any:
    """A timer that never advances, so calculationtime is 0."""
    return lambda: 0.0


def flush(config: AggregatorConfig, *packets: bytes, flushes: int = 1) -> Snapshot:
    """Feed packets, then flush `flushes` times 10 s apart; return the last."""
    aggregator = Aggregator(config, timer=frozen_clock())
    for packet in packets:
        aggregator.receive(packet)
    snapshot = aggregator.flush(T0)
    for i in range(1, flushes):
        snapshot = aggregator.flush(T0 + 10 * i)
    return snapshot


def lines(payload: bytes) -> list[str]:
    """The payload's lines; it must end with a newline."""
    text = payload.decode()
    assert text.endswith('\n')
    return text[:-1].split('\n')


def values(payload: bytes) -> dict[str, str]:
    """Name -> value text of a payload."""
    return {line.split(' ')[0]: line.split(' ')[1] for line in lines(payload)}


# -- Number#toString --------------------------------------------------------


@pytest.mark.parametrize(
    ('value', 'text'),
    [
        (5.0, '5'),
        (5, '5'),
        (0.375, '0.375'),
        (5e-8, '5e-8'),
        (81.64965809277261, '81.64965809277261'),
        (1e21, '1e+21'),
        (1e20, '100000000000000000000'),
        (1.2345678901234568e20, '123456789012345680000'),
        (-0.0, '0'),
        (0.0, '0'),
        (-2.5, '-2.5'),
        (0.1 + 0.2, '0.30000000000000004'),
        (1e-6, '0.000001'),
        (1.5e-7, '1.5e-7'),
        (1.234e-6, '0.000001234'),
        (123.456, '123.456'),
        (1e16, '10000000000000000'),
        (2.0**53, '9007199254740992'),
        (-1.5e300, '-1.5e+300'),
        (5e-324, '5e-324'),
        (1.7976931348623157e308, '1.7976931348623157e+308'),
        (math.nan, 'NaN'),
        (math.inf, 'Infinity'),
        (-math.inf, '-Infinity'),
    ],
)
def test_format_js_number(value: float, text: str) -> None:
    """Values are written exactly like JavaScript's Number#toString."""
    assert format_js_number(value) == text


@pytest.mark.parametrize(
    ('value', 'rounded'),
    [(2.5, 3), (-2.5, -2), (0.49999999999999994, 0), (1.4, 1), (-1.6, -2)],
)
def test_js_round(value: float, rounded: int) -> None:
    """Math.round sends halves up, and is exact just below one half."""
    assert js_round(value) == rounded


# -- default (legacy) namespace ----------------------------------------------


def test_first_flush_of_an_idle_server() -> None:
    """Reference: the first flush has numStats 3 and every internal line."""
    config = AggregatorConfig()
    payload = render(
        flush(config),
        config,
        GraphiteStats(last_flush=T0 - 10, last_exception=T0 - 10),
        timer=frozen_clock(),
    )
    ts = f' {T0}'
    assert lines(payload) == [
        'stats.statsd.bad_lines_seen 0' + ts,
        'stats_counts.statsd.bad_lines_seen 0' + ts,
        'stats.statsd.packets_received 0' + ts,
        'stats_counts.statsd.packets_received 0' + ts,
        'stats.statsd.metrics_received 0' + ts,
        'stats_counts.statsd.metrics_received 0' + ts,
        'statsd.numStats 3' + ts,
        'stats.statsd.graphiteStats.calculationtime 0' + ts,
        'stats.statsd.processing_time 0' + ts,
        f'stats.statsd.graphiteStats.last_exception {T0 - 10}' + ts,
        f'stats.statsd.graphiteStats.last_flush {T0 - 10}' + ts,
        'stats.statsd.graphiteStats.flush_time 0' + ts,
        'stats.statsd.graphiteStats.flush_length 0' + ts,
    ]


def test_every_type_in_legacy_names_and_order() -> None:
    """Counters, timers, gauges, sets, then internals, with legacy names."""
    config = AggregatorConfig(flush_interval=0.1)
    snap = flush(
        config, b'c:100|c\nt:100|ms:200|ms:300|ms\ng:70|g\ns:a|s\ns:b|s'
    )
    got = lines(render(snap, config, GraphiteStats(), timer=frozen_clock()))
    names = [line.split(' ')[0] for line in got]
    assert names[6:10] == ['stats.c', 'stats_counts.c', 'stats.timers.t.count_90', 'stats.timers.t.mean_90']
    assert names[10:22] == [
        f'stats.timers.t.{stat}'
        for stat in [
            'upper_90', 'sum_90', 'sum_squares_90', 'std', 'upper', 'lower',
            'count', 'count_ps', 'sum', 'sum_squares', 'mean', 'median',
        ]
    ]
    assert names[22:25] == ['stats.gauges.g', 'stats.sets.s.count', 'statsd.numStats']
    data = {line.split(' ')[0]: line.split(' ')[1] for line in got}
    assert data['stats.c'] == '1000'  # 100 in 100 ms
    assert data['stats_counts.c'] == '100'
    assert data['stats.timers.t.std'] == '81.64965809277261'
    assert data['stats.timers.t.count_ps'] == '30'
    assert data['stats.gauges.g'] == '70'
    assert data['stats.sets.s.count'] == '2'
    assert data['statsd.numStats'] == '7'
    assert all(line.endswith(f' {T0}') for line in got)


def test_bad_line_and_lag_on_the_second_flush() -> None:
    """Reference: one bad line gives numStats 4 at the 2nd flush (with the lag)."""
    config = AggregatorConfig(legacy_namespace=False)
    aggregator = Aggregator(config, timer=frozen_clock())
    aggregator.receive(b'a_bad_test_value|z')
    first = values(render(aggregator.flush(T0), config, GraphiteStats()))
    assert first['stats.counters.statsd.bad_lines_seen.count'] == '1'
    assert first['stats.statsd.numStats'] == '3'
    second = values(render(aggregator.flush(T0 + 10), config, GraphiteStats()))
    assert second['stats.statsd.numStats'] == '4'
    assert second['stats.gauges.statsd.timestamp_lag'] == '0'


def test_timer_with_histogram_reference_vector() -> None:
    """Reference: a 100 ms timer in a 200 ms interval, histogram bin 1000."""
    config = AggregatorConfig(
        flush_interval=0.2,
        legacy_namespace=False,
        histograms=(('a_test_value', (1000,)),),
    )
    got = values(render(flush(config, b'a_test_value:100|ms'), config, GraphiteStats()))
    assert got['stats.timers.a_test_value.mean_90'] == '100'
    assert got['stats.timers.a_test_value.histogram.bin_1000'] == '1'
    assert got['stats.timers.a_test_value.count_ps'] == '5'
    assert got['stats.timers.a_test_value.count'] == '1'
    assert got['stats.statsd.numStats'] == '4'


def test_sampled_timer_counts() -> None:
    """Reference: a timer sampled at 0.1 counts 10, 50 per second in 200 ms."""
    config = AggregatorConfig(flush_interval=0.2)
    got = values(render(flush(config, b'a:100|ms|@0.1'), config, GraphiteStats()))
    assert got['stats.timers.a.count'] == '10'
    assert got['stats.timers.a.count_ps'] == '50'


def test_sanitised_names_reach_graphite() -> None:
    """Reference: fo/o -> fo-o, b ar -> b_ar, foo+bar -> foobar."""
    config = AggregatorConfig()
    payload = render(
        flush(config, b'fo/o:250|c', b'b ar:250|c', b'foo+bar:250|c'),
        config,
        GraphiteStats(),
    ).decode()
    assert 'stats_counts.fo-o 250' in payload
    assert 'stats_counts.b_ar 250' in payload
    assert 'stats_counts.foobar 250' in payload


# -- options -----------------------------------------------------------------


def test_non_legacy_namespace_names() -> None:
    """legacy_namespace=False: .rate/.count, and numStats under stats."""
    config = AggregatorConfig(legacy_namespace=False)
    got = values(render(flush(config, b'c:1|c\ng:1|g\ns:1|s\nt:1|ms'), config, GraphiteStats()))
    for name in (
        'stats.counters.c.rate',
        'stats.counters.c.count',
        'stats.gauges.g',
        'stats.sets.s.count',
        'stats.timers.t.mean',
        'stats.statsd.numStats',
        'stats.statsd.graphiteStats.calculationtime',
        'stats.statsd.processing_time',
        'stats.statsd.graphiteStats.flush_length',
        'stats.counters.statsd.packets_received.rate',
    ):
        assert name in got


def test_custom_prefixes_and_empty_segments() -> None:
    """Prefixes rename segments; an empty prefix drops its segment."""
    config = AggregatorConfig(
        legacy_namespace=False,
        global_prefix='',
        prefix_counter='cnt',
        prefix_timer='',
        prefix_gauge='gau',
        prefix_set='st',
        prefix_stats='agg',
    )
    got = values(render(flush(config, b'c:1|c\ng:1|g\ns:1|s\nt:1|ms'), config, GraphiteStats()))
    for name in (
        'cnt.c.rate',
        'cnt.c.count',
        'gau.g',
        'st.s.count',
        't.mean',
        'agg.numStats',
        'agg.graphiteStats.calculationtime',
        'agg.processing_time',
        'agg.graphiteStats.last_flush',
        'cnt.agg.bad_lines_seen.count',
    ):
        assert name in got


def test_prefixes_are_ignored_in_legacy_mode() -> None:
    """global_prefix and the type prefixes apply only without legacy names."""
    config = AggregatorConfig(global_prefix='x', prefix_counter='y', prefix_gauge='z')
    got = values(render(flush(config, b'c:1|c\ng:1|g'), config, GraphiteStats()))
    assert 'stats.c' in got
    assert 'stats.gauges.g' in got


def test_global_suffix_goes_before_tags() -> None:
    """globalSuffix is appended to the name, before any ;tags."""
    config = AggregatorConfig(global_suffix='host1')
    got = values(
        render(
            flush(config, b'c:1|c|#env:prod\nt:1|ms|#env:prod\ng:2|g|#env:prod\ns:x|s|#env:prod'),
            config,
            GraphiteStats(),
        )
    )
    for name in (
        'stats.c.host1;env=prod',
        'stats_counts.c.host1;env=prod',
        'stats.timers.t.mean.host1;env=prod',
        'stats.gauges.g.host1;env=prod',
        'stats.sets.s.count.host1;env=prod',
        'statsd.numStats.host1',
        'stats.statsd.graphiteStats.calculationtime.host1',
        'stats.statsd.processing_time.host1',
        'stats.statsd.graphiteStats.last_exception.host1',
        'stats.statsd.bad_lines_seen.host1',
    ):
        assert name in got


def test_global_suffix_non_legacy() -> None:
    """The suffix follows the full name in the non-legacy namespace too."""
    config = AggregatorConfig(legacy_namespace=False, global_suffix='sfx')
    got = values(render(flush(config, b'c:1|c'), config, GraphiteStats()))
    assert 'stats.counters.c.rate.sfx' in got
    assert 'stats.statsd.numStats.sfx' in got
    assert 'stats.statsd.graphiteStats.flush_time.sfx' in got


def test_tagged_histogram_names() -> None:
    """Histogram bins sit between the timer name and the suffix and tags."""
    config = AggregatorConfig(histograms=(('t', (0.5, math.inf)),), global_suffix='s')
    got = values(render(flush(config, b't:1|ms|#a:b'), config, GraphiteStats()))
    assert got['stats.timers.t.histogram.bin_0_5.s;a=b'] == '0'
    assert got['stats.timers.t.histogram.bin_inf.s;a=b'] == '1'


@pytest.mark.parametrize('legacy', [True, False])
def test_flush_counts_off_drops_raw_counts(legacy: bool) -> None:
    """flush_counts=False sends only the per-second rate of counters."""
    config = AggregatorConfig(flush_counts=False, legacy_namespace=legacy)
    got = values(render(flush(config, b'c:1|c'), config, GraphiteStats()))
    assert not any(k.startswith('stats_counts.') or k.endswith('.c.count') for k in got)
    assert ('stats.c' if legacy else 'stats.counters.c.rate') in got


def test_backend_sanitises_names_when_ingress_does_not() -> None:
    """With key_name_sanitize off, the name part is cleaned, tags are not."""
    config = AggregatorConfig(key_name_sanitize=False)
    got = values(render(flush(config, b'a/b+c:1|c\nx;t=v!:1|c'), config, GraphiteStats()))
    assert 'stats_counts.a-bc' in got
    assert 'stats_counts.x;t=v!' in got


def test_graphite_stats_describe_the_previous_send() -> None:
    """last_exception, last_flush, flush_time, flush_length come from `stats`."""
    config = AggregatorConfig()
    got = values(
        render(
            flush(config),
            config,
            GraphiteStats(last_flush=T0 - 10, last_exception=None, flush_time=2.5, flush_length=640),
        )
    )
    assert got['stats.statsd.graphiteStats.last_flush'] == str(T0 - 10)
    assert got['stats.statsd.graphiteStats.last_exception'] == '0'
    assert got['stats.statsd.graphiteStats.flush_time'] == '2.5'
    assert got['stats.statsd.graphiteStats.flush_length'] == '640'


def test_calculationtime_uses_the_injected_timer() -> None:
    """calculationtime is whole milliseconds spent building the lines."""
    config = AggregatorConfig()
    ticks = itertools.count(0.0, 0.0034)
    got = values(render(flush(config), config, GraphiteStats(), timer=lambda: next(ticks)))
    assert got['stats.statsd.graphiteStats.calculationtime'] == '3'


def test_processing_time_is_rendered() -> None:
    """processing_time comes from the snapshot, in whole milliseconds."""
    config = AggregatorConfig()
    ticks = itertools.count(0.0, 0.007)
    snapshot = Aggregator(config, timer=lambda: next(ticks)).flush(T0)
    assert values(render(snapshot, config, GraphiteStats()))['stats.statsd.processing_time'] == '7'


def test_gauge_values_keep_their_precision() -> None:
    """Fractions, negatives and tiny values render like JavaScript."""
    config = AggregatorConfig()
    got = values(render(flush(config, b'a:-0.375|g\nb:0.00000005|g\nc:1e21|g'), config, GraphiteStats()))
    assert got['stats.gauges.a'] == '-0.375'
    assert got['stats.gauges.b'] == '5e-8'
    assert got['stats.gauges.c'] == '1e+21'


def test_payload_is_utf8() -> None:
    """Unsanitised non-ASCII tags are encoded as UTF-8."""
    config = AggregatorConfig(key_name_sanitize=False)
    payload = render(flush(config, 'k;city=k\u00f6ln:1|c'.encode()), config, GraphiteStats())
    assert 'stats_counts.k;city=k\u00f6ln 1'.encode() in payload


@pytest.mark.parametrize(('line', 'name'), [
    (b'a;t=x y:1|c', 'stats_counts.a;t=x_y'),
    (b'a;t=x\ty:1|c', 'stats_counts.a;t=x_y'),
    (b'a;t=x\x00y\x7f:1|c', 'stats_counts.a;t=xy'),
    (b'a b\x00;t=v:1|c', 'stats_counts.a_b;t=v'),
    ('\u2603;t=v:1|c'.encode(), 'stats_counts._;t=v'),
])
def test_without_ingress_sanitising_every_line_is_well_formed(line: bytes, name: str) -> None:
    """With key_name_sanitize off, whitespace and control characters in the
    tags cannot break the plaintext protocol, nor an empty name: each metric
    is one ``name value timestamp`` line."""
    config = AggregatorConfig(key_name_sanitize=False)
    payload = render(flush(config, line), config, GraphiteStats())
    for text in payload.decode().split('\n')[:-1]:
        assert len(text.split(' ')) == 3, text
        assert text.isprintable(), text
    assert values(payload)[name] == '1'


def test_overflowing_aggregates_saturate_in_graphite() -> None:
    """Counters, gauges and timer statistics whose sums overflow are sent as
    the largest double, never NaN or Infinity."""
    config = AggregatorConfig(flush_interval=0.5)
    payload = render(
        flush(config, b'c:1e308|c\nc:1e308|c\ng:+1e308|g\ng:+1e308|g\n'
              b't:1e308|ms\nt:1e308|ms\nt:1|ms'),
        config, GraphiteStats(),
    )
    got = values(payload)
    assert got['stats_counts.c'] == got['stats.c'] == '1.7976931348623157e+308'
    assert got['stats.gauges.g'] == '1.7976931348623157e+308'
    assert got['stats.timers.t.sum'] == '1.7976931348623157e+308'
    assert got['stats.timers.t.sum_squares'] == '1.7976931348623157e+308'
    assert not any(v in ('NaN', 'Infinity', '-Infinity') for v in got.values())
