"""Aggregation per flush interval, as etsy statsd's stats.js and process_metrics."""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import pytest

from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.server.aggregator import Aggregator, Snapshot
from sprockets_statsd.server.app import report_interval
from sprockets_statsd.server.config import AggregatorConfig

T0 = 1_700_000_000.0


def flush_once(*packets: bytes, **config: Any) -> Snapshot:
    """Feed packets to a fresh aggregator and flush it once."""
    aggregator = Aggregator(AggregatorConfig(**config))
    for packet in packets:
        aggregator.receive(packet)
    return aggregator.flush(T0)


def user_counters(snapshot: Snapshot) -> dict[str, float]:
    """The counters without the three internal ones."""
    return {k: v for k, v in snapshot.counters.items() if not k.startswith('statsd.')}


# -- counters -----------------------------------------------------------


def test_counters_add_up_within_an_interval() -> None:
    """Counter values are summed; negative values subtract."""
    snap = flush_once(b'a:1|c\na:2|c', b'a:-0.5|c')
    assert snap.counters['a'] == 2.5


def test_counter_sample_rate_scales_the_count() -> None:
    """A sampled counter adds value * (1/rate)."""
    snap = flush_once(b'a:1|c|@0.1', flush_interval=10.0)
    assert snap.counters['a'] == 1 * (1 / 0.1)
    assert snap.counter_rates['a'] == snap.counters['a'] / 10.0


def test_counter_rate_per_second() -> None:
    """counter_rates is the count divided by the interval in seconds.

    Reference vector: 2 in a 100 ms interval is 20 per second.
    """
    snap = flush_once(b'a:2|c', flush_interval=0.1)
    assert snap.counters['a'] == 2
    assert snap.counter_rates['a'] == 20


def test_internal_counters_come_first_and_count_traffic() -> None:
    """bad_lines_seen, packets_received, metrics_received lead, in that order."""
    snap = flush_once(b'a:1|c\nbad\n\nb:1|x:2|c', b'c:1|c')
    assert list(snap.counters)[:3] == [
        'statsd.bad_lines_seen',
        'statsd.packets_received',
        'statsd.metrics_received',
    ]
    assert snap.packets_received == 2
    assert snap.metrics_received == 4
    assert snap.bad_lines_seen == 2
    assert snap.counters['statsd.bad_lines_seen'] == 2
    assert user_counters(snap) == {'a': 1, 'b': 2, 'c': 1}


def test_prefix_stats_renames_the_internal_metrics() -> None:
    """prefix_stats changes the namespace of the internal counters and lag."""
    aggregator = Aggregator(AggregatorConfig(prefix_stats='agg'))
    aggregator.receive(b'x')
    first = aggregator.flush(T0)
    second = aggregator.flush(T0 + 10)
    assert first.counters['agg.bad_lines_seen'] == 1
    assert 'agg.timestamp_lag' in second.gauges


def test_empty_and_blank_lines_are_not_metrics() -> None:
    """Empty lines and whitespace-only lines are skipped without counting."""
    snap = flush_once(b'\n\n \r\n\t\na:1|c\r\n')
    assert snap.metrics_received == 1
    assert snap.bad_lines_seen == 0


def test_bad_lines_do_not_stop_the_packet() -> None:
    """Lines after a bad line are still aggregated."""
    snap = flush_once(b'nope:1|zz\na:1|c\n:3|c\nb:4|g')
    assert snap.counters['a'] == 1
    assert snap.gauges['b'] == 4
    assert snap.bad_lines_seen == 2


def test_each_bad_piece_is_counted() -> None:
    """bad_lines_seen counts bad pieces, as the reference does per field set."""
    snap = flush_once(b'a:1|c:x|c:2|q:3|c')
    assert snap.counters['a'] == 4
    assert snap.bad_lines_seen == 2
    assert snap.metrics_received == 1


def test_tagged_lines_aggregate_under_the_tagged_key() -> None:
    """DogStatsD tags are part of the key; bad tagged lines are counted."""
    snap = flush_once(b'r:1|c|#env:prod\nr:2|c|#env:prod\nr:1|c\nno-colon|#a:b')
    assert snap.counters['r;env=prod'] == 3
    assert snap.counters['r'] == 1
    assert snap.bad_lines_seen == 1


def test_key_prefix_applies_to_received_keys_only() -> None:
    """key_prefix is prepended to every received key, not the internals."""
    snap = flush_once(b'a:1|c\nt:1|ms\ng:1|g\ns:1|s', key_prefix='web1')
    assert 'web1.a' in snap.counters
    assert 'web1.t' in snap.timers
    assert 'web1.g' in snap.gauges
    assert 'web1.s' in snap.sets
    assert 'statsd.packets_received' in snap.counters


def test_sanitizing_can_be_switched_off() -> None:
    """key_name_sanitize=False keeps the received name."""
    snap = flush_once(b'a/b c:1|c', key_name_sanitize=False)
    assert 'a/b c' in snap.counters


def test_invalid_utf8_never_raises() -> None:
    """Undecodable bytes are replaced; receive() does not raise."""
    snap = flush_once(b'\xff\xfe:1|c\nok\xff:1|c\ns:\xc3|s')
    assert snap.counters['ok'] == 1
    assert snap.sets['s'] == frozenset({'\ufffd'})
    assert snap.bad_lines_seen == 1  # the name was nothing but garbage


# -- timers -------------------------------------------------------------


def test_timer_values_are_sorted_raw_and_count_is_rate_scaled() -> None:
    """Timer statistics use the raw values; only count/count_ps are scaled."""
    snap = flush_once(b't:300|ms\nt:100|ms|@0.5\nt:200|h', flush_interval=1.0)
    assert snap.timers['t'] == (100.0, 200.0, 300.0)
    assert snap.timer_counters['t'] == 1 + 2 + 1
    data = snap.timer_data['t']
    assert data['count'] == 4
    assert data['count_ps'] == 4
    assert data['sum'] == 600
    assert data['upper'] == 300


def test_timer_reference_vector_three_values() -> None:
    """[100, 200, 300] in 100 ms: std 81.64965809277261, count_ps 30, median 200."""
    snap = flush_once(b't:100|ms:200|ms:300|ms', flush_interval=0.1)
    data = snap.timer_data['t']
    assert data['std'] == 81.64965809277261
    assert data['upper'] == 300
    assert data['lower'] == 100
    assert data['count'] == 3
    assert data['count_ps'] == 30
    assert data['sum'] == 600
    assert data['sum_squares'] == 140000
    assert data['mean'] == 200
    assert data['median'] == 200


def test_timer_single_value() -> None:
    """One value: std 0, everything else the value, every pct stat equal it."""
    snap = flush_once(b't:100|ms', flush_interval=0.1, percent_thresholds=(90, 80))
    data = snap.timer_data['t']
    assert data['std'] == 0
    assert data['count_ps'] == 10
    for pct in ('90', '80'):
        assert data[f'count_{pct}'] == 1
        assert data[f'mean_{pct}'] == 100
        assert data[f'upper_{pct}'] == 100
        assert data[f'sum_{pct}'] == 100
        assert data[f'sum_squares_{pct}'] == 10000


def test_timer_multiple_percentiles() -> None:
    """[100, 200, 300] with 90 and 80: the 80th covers the two lowest."""
    snap = flush_once(b't:100|ms:200|ms:300|ms', percent_thresholds=(90, 80))
    data = snap.timer_data['t']
    assert (data['mean_90'], data['upper_90'], data['sum_90']) == (200, 300, 600)
    assert (data['mean_80'], data['upper_80'], data['sum_80']) == (150, 200, 300)
    assert data['count_80'] == 2


def test_timer_sampled_counts() -> None:
    """Reference vector: 3 values sampled to a count of 50 in 100 ms."""
    aggregator = Aggregator(
        AggregatorConfig(flush_interval=0.1, percent_thresholds=(90, 80))
    )
    for value in (100, 200, 300):
        aggregator.receive(b'a:%d|ms|@0.06' % value)
    data = aggregator.flush(T0).timer_data['a']
    assert data['count'] == pytest.approx(50)
    assert data['count_ps'] == pytest.approx(500)
    assert data['mean_80'] == 150


def test_timer_top_percentile() -> None:
    """Reference vector: [10 x8, 100, 200] with -20 -> mean 150, lower 100."""
    values = b':'.join(b'%d|ms' % v for v in [10] * 8 + [100, 200])
    snap = flush_once(b't:' + values, percent_thresholds=(-20,))
    data = snap.timer_data['t']
    assert data['mean_top20'] == 150
    assert data['lower_top20'] == 100
    assert data['sum_top20'] == 300
    assert data['sum_squares_top20'] == 50000
    assert data['count_top20'] == 2
    assert 'upper_top20' not in data


def test_timer_top_percentile_single_value() -> None:
    """Reference vector: one value with -10 gives that value everywhere."""
    data = flush_once(b't:100|ms', percent_thresholds=(-10,)).timer_data['t']
    assert (data['mean_top10'], data['lower_top10'], data['sum_top10']) == (
        100,
        100,
        100,
    )


def test_timer_top_percentile_covering_every_value() -> None:
    """-100 covers all values; the reference's NaN here is a plain sum."""
    data = flush_once(b't:1|ms:2|ms:3|ms', percent_thresholds=(-100,)).timer_data['t']
    assert data['sum_top100'] == 6
    assert data['mean_top100'] == 2
    assert data['sum_squares_top100'] == 14


def test_timer_threshold_with_no_values_is_skipped() -> None:
    """A threshold that rounds to zero values emits nothing (n > 1)."""
    data = flush_once(b't:1|ms:2|ms', percent_thresholds=(10, 90)).timer_data['t']
    assert 'mean_10' not in data
    assert data['count_90'] == 2


def test_threshold_rounding_is_javascripts() -> None:
    """k = Math.round(|pct|/100 * n): 25% of 2 is 0.5, rounded up to 1."""
    data = flush_once(b't:1|ms:2|ms', percent_thresholds=(25,)).timer_data['t']
    assert data['count_25'] == 1
    assert data['upper_25'] == 1


def test_fractional_threshold_names() -> None:
    """99.9 becomes _99_9 and -99.5 becomes _top99_5."""
    data = flush_once(
        b't:1|ms:2|ms', percent_thresholds=(99.9, -99.5)
    ).timer_data['t']
    assert 'upper_99_9' in data
    assert 'lower_top99_5' in data


def test_timer_even_median() -> None:
    """Reference vector: [300, 200, 400, 100] has median 250."""
    data = flush_once(b't:300|ms:200|ms:400|ms:100|ms').timer_data['t']
    assert data['median'] == 250


def test_timer_emission_order() -> None:
    """Percentile stats first, then std ... median, as the reference emits."""
    data = flush_once(b't:1|ms').timer_data['t']
    assert list(data) == [
        'count_90',
        'mean_90',
        'upper_90',
        'sum_90',
        'sum_squares_90',
        'std',
        'upper',
        'lower',
        'count',
        'count_ps',
        'sum',
        'sum_squares',
        'mean',
        'median',
    ]


def test_timer_sums_add_left_to_right() -> None:
    """Sums are plain sequential double additions, like the reference."""
    data = flush_once(b't:0.3|ms:0.1|ms:0.2|ms').timer_data['t']
    assert data['sum'] == (0.1 + 0.2) + 0.3 == 0.6000000000000001
    assert data['mean'] == 0.6000000000000001 / 3
    assert math.fsum([0.1, 0.2, 0.3]) == 0.6  # what a compensated sum gives


def test_histogram_reference_vector() -> None:
    """First matching substring wins; bins are exclusive upper bounds."""
    histograms = (
        ('foo', ()),
        ('abcd', (1, 5, math.inf)),
        ('abc', (1, 2.21, math.inf)),
        ('a', (1, 2)),
    )
    packets = [
        b'a:' + b':'.join(b'%d|ms' % v for v in range(1, 11)),
        b'abc:0.1234|ms:2.89|ms:4|ms:6|ms:8|ms',
        b'foo:0|ms:2|ms',
        b'barbazfoobar:0|ms',
        b'xyz:0|ms',
    ]
    snap = flush_once(*packets, histograms=histograms)
    a = snap.timer_data['a']
    assert a['histogram.bin_1'] == 0
    assert a['histogram.bin_2'] == 1
    assert 'histogram.bin_inf' not in a  # values >= 2 are dropped
    abc = snap.timer_data['abc']
    assert [(k, v) for k, v in abc.items() if k.startswith('histogram.')] == [
        ('histogram.bin_1', 1),
        ('histogram.bin_2_21', 0),
        ('histogram.bin_inf', 4),
    ]
    for key in ('foo', 'barbazfoobar', 'xyz'):
        assert not any(k.startswith('histogram') for k in snap.timer_data[key])


def test_calculated_timer_metrics_filters_output() -> None:
    """Only the listed statistics are kept; _percent selects every threshold."""
    snap = flush_once(
        b't:1|ms:2|ms',
        percent_thresholds=(90, -50),
        histograms=(('t', (10,)),),
        calculated_timer_metrics=('count', 'upper_percent', 'lower_percent', 'histogram'),
    )
    assert list(snap.timer_data['t']) == [
        'upper_90',
        'lower_top50',
        'count',
        'histogram.bin_10',
    ]


def test_calculated_timer_metrics_applies_to_idle_timers() -> None:
    """An idle timer's count/count_ps are filtered too."""
    aggregator = Aggregator(AggregatorConfig(calculated_timer_metrics=('count',)))
    aggregator.receive(b't:1|ms')
    aggregator.flush(T0)
    assert dict(aggregator.flush(T0 + 10).timer_data['t']) == {'count': 0}


def test_idle_timer_emits_zero_counts_only() -> None:
    """A kept timer without values in the interval has count and count_ps 0."""
    aggregator = Aggregator(AggregatorConfig())
    aggregator.receive(b't:5|ms')
    aggregator.flush(T0)
    snap = aggregator.flush(T0 + 10)
    assert snap.timers['t'] == ()
    assert dict(snap.timer_data['t']) == {'count': 0, 'count_ps': 0}
    assert snap.timer_counters['t'] == 0


# -- gauges -------------------------------------------------------------


def test_gauge_set_then_delta() -> None:
    """A signed value adjusts an existing non-zero gauge: 50 then -3 is 47."""
    assert flush_once(b'g:50|g', b'g:-3|g').gauges['g'] == 47
    assert flush_once(b'g:50|g\ng:+3|g').gauges['g'] == 53


def test_signed_gauge_without_value_sets_it() -> None:
    """A new gauge, or one at zero, is set even by a signed value."""
    assert flush_once(b'g:-3|g').gauges['g'] == -3
    assert flush_once(b'g:0|g\ng:-3|g').gauges['g'] == -3
    assert flush_once(b'g:5|g\ng:-5|g\ng:-2|g').gauges['g'] == -2


def test_gauge_ignores_sample_rate() -> None:
    """The sample rate does not scale gauges."""
    assert flush_once(b'g:10|g|@0.1').gauges['g'] == 10


def test_gauges_persist_across_flushes() -> None:
    """Without deletion, the last value is sent again every flush."""
    aggregator = Aggregator(AggregatorConfig())
    aggregator.receive(b'g:7|g')
    aggregator.flush(T0)
    assert aggregator.flush(T0 + 10).gauges['g'] == 7
    aggregator.receive(b'g:+1|g')
    assert aggregator.flush(T0 + 20).gauges['g'] == 8


@pytest.mark.parametrize('ttl', [1, 3])
def test_gauges_are_deleted_after_ttl_idle_flushes(ttl: int) -> None:
    """With delete_gauges, a gauge survives gauges_max_ttl flushes."""
    aggregator = Aggregator(AggregatorConfig(delete_gauges=True, gauges_max_ttl=ttl))
    aggregator.receive(b'g:7|g')
    present = [('g' in aggregator.flush(T0 + 10 * i).gauges) for i in range(ttl + 2)]
    assert present == [True] * ttl + [False, False]


def test_gauge_update_resets_ttl() -> None:
    """A new value restarts the gauge's time to live."""
    aggregator = Aggregator(AggregatorConfig(delete_gauges=True, gauges_max_ttl=2))
    aggregator.receive(b'g:7|g')
    aggregator.flush(T0)
    aggregator.receive(b'g:+1|g')
    assert aggregator.flush(T0 + 10).gauges['g'] == 8
    assert aggregator.flush(T0 + 20).gauges['g'] == 8
    assert 'g' not in aggregator.flush(T0 + 30).gauges


def test_deleted_gauge_restarts_from_a_delta() -> None:
    """After deletion a signed value sets the gauge afresh."""
    aggregator = Aggregator(AggregatorConfig(delete_idle_stats=True))
    aggregator.receive(b'g:7|g')
    aggregator.flush(T0)
    aggregator.flush(T0 + 10)
    aggregator.receive(b'g:+2|g')
    assert aggregator.flush(T0 + 20).gauges['g'] == 2


# -- sets ---------------------------------------------------------------


def test_sets_count_distinct_members() -> None:
    """Set members are distinct strings; the sample rate is ignored."""
    snap = flush_once(b's:a|s\ns:b|s\ns:a|s|@0.1\ns:1|s\ns:1.0|s')
    assert snap.sets['s'] == frozenset({'a', 'b', '1', '1.0'})


def test_sets_are_emptied_each_flush() -> None:
    """A kept set starts the next interval empty."""
    aggregator = Aggregator(AggregatorConfig())
    aggregator.receive(b's:a|s')
    aggregator.flush(T0)
    assert aggregator.flush(T0 + 10).sets['s'] == frozenset()


# -- idle rules ---------------------------------------------------------


def test_idle_counters_send_zero_by_default() -> None:
    """Counters are zeroed, not deleted, and keep their first-seen order."""
    aggregator = Aggregator(AggregatorConfig())
    aggregator.receive(b'b:1|c\na:1|c')
    aggregator.flush(T0)
    aggregator.receive(b'a:2|c')
    snap = aggregator.flush(T0 + 10)
    assert user_counters(snap) == {'b': 0, 'a': 2}
    assert list(user_counters(snap)) == ['b', 'a']


def test_delete_idle_stats_switches_on_every_deletion() -> None:
    """delete_idle_stats drops idle counters, timers, sets and gauges."""
    aggregator = Aggregator(AggregatorConfig(delete_idle_stats=True))
    aggregator.receive(b'c:1|c\nt:1|ms\ns:x|s\ng:1|g')
    first = aggregator.flush(T0)
    assert {'c', 't', 's', 'g'} <= {*first.counters, *first.timers, *first.sets, *first.gauges}
    second = aggregator.flush(T0 + 10)
    assert user_counters(second) == {}
    assert dict(second.timers) == {}
    assert dict(second.timer_data) == {}
    assert dict(second.sets) == {}
    assert list(second.gauges) == ['statsd.timestamp_lag']


def test_internal_counters_are_never_deleted() -> None:
    """With delete_counters the internal counters are zeroed and kept.

    Like the reference, a user counter whose name contains one of their
    names is kept as well.
    """
    aggregator = Aggregator(AggregatorConfig(delete_counters=True))
    aggregator.receive(b'app.bad_lines_seen:1|c\nother:1|c')
    aggregator.flush(T0)
    snap = aggregator.flush(T0 + 10)
    assert dict(snap.counters) == {
        'statsd.bad_lines_seen': 0,
        'statsd.packets_received': 0,
        'statsd.metrics_received': 0,
        'app.bad_lines_seen': 0,
    }


@pytest.mark.parametrize(
    ('switch', 'gone'),
    [
        ('delete_counters', 'c'),
        ('delete_timers', 't'),
        ('delete_sets', 's'),
        ('delete_gauges', 'g'),
    ],
)
def test_each_deletion_switch_overrides_the_default(switch: str, gone: str) -> None:
    """One switch on deletes only its type; False overrides delete_idle_stats."""
    on: dict[str, Any] = {switch: True}
    off: dict[str, Any] = {switch: False}
    aggregator = Aggregator(AggregatorConfig(**on))
    aggregator.receive(b'c:1|c\nt:1|ms\ns:x|s\ng:1|g')
    aggregator.flush(T0)
    snap = aggregator.flush(T0 + 10)
    present = {*snap.counters, *snap.timers, *snap.sets, *snap.gauges}
    assert present >= {'c', 't', 's', 'g'} - {gone}
    assert gone not in present

    keep_all = Aggregator(AggregatorConfig(delete_idle_stats=True, **off))
    keep_all.receive(b'c:1|c\nt:1|ms\ns:x|s\ng:1|g')
    keep_all.flush(T0)
    snap = keep_all.flush(T0 + 10)
    assert gone in {*snap.counters, *snap.timers, *snap.sets, *snap.gauges}


def test_delete_timers_also_drops_timer_counters() -> None:
    """A deleted timer restarts its rate-scaled count from zero."""
    aggregator = Aggregator(AggregatorConfig(delete_timers=True))
    aggregator.receive(b't:1|ms|@0.5')
    aggregator.flush(T0)
    aggregator.receive(b't:1|ms')
    assert aggregator.flush(T0 + 10).timer_counters['t'] == 1


# -- flush bookkeeping ----------------------------------------------------


@pytest.mark.parametrize(
    ('now', 'expected'),
    [(T0 + 0.4, int(T0)), (T0 + 0.5, int(T0) + 1), (T0 + 0.9, int(T0) + 1)],
)
def test_timestamp_is_rounded_to_whole_seconds(now: float, expected: int) -> None:
    """The flush timestamp is Math.round(now): halves round up."""
    assert Aggregator(AggregatorConfig()).flush(now).timestamp == expected


def test_timestamp_lag_from_the_second_flush() -> None:
    """The lag gauge is absent at first, then actual minus expected spacing."""
    aggregator = Aggregator(AggregatorConfig(flush_interval=10))
    first = aggregator.flush(T0)
    assert first.timestamp_lag is None
    assert 'statsd.timestamp_lag' not in first.gauges
    second = aggregator.flush(T0 + 12.2)
    assert second.timestamp_lag == 2
    assert second.gauges['statsd.timestamp_lag'] == 2
    third = aggregator.flush(T0 + 21.6)
    assert third.timestamp_lag == 0
    assert second.num_stats == 4  # three internal counters and the lag


def test_processing_time_uses_the_injected_timer() -> None:
    """processing_time is whole milliseconds measured with `timer`."""
    ticks = itertools.count(0.0, 0.0126)  # 12.6 ms per call
    aggregator = Aggregator(AggregatorConfig(), timer=lambda: next(ticks))
    assert aggregator.flush(T0).processing_time == 13


def test_snapshot_is_immutable_and_detached() -> None:
    """A snapshot cannot be changed, and later traffic does not leak in."""
    aggregator = Aggregator(AggregatorConfig())
    aggregator.receive(b'a:1|c\nt:1|ms\ns:x|s\ng:1|g')
    snap = aggregator.flush(T0)
    aggregator.receive(b'a:5|c\nt:2|ms\ns:y|s\ng:9|g')
    assert snap.counters['a'] == 1
    assert snap.timers['t'] == (1.0,)
    assert snap.sets['s'] == frozenset({'x'})
    assert snap.gauges['g'] == 1
    with pytest.raises(TypeError):
        snap.counters['a'] = 2  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.timestamp = 0  # type: ignore[misc]


def test_num_stats_counts_every_flushed_key() -> None:
    """Reference vectors: 3 at the first flush; +1 per counter/timer/gauge/set."""
    assert flush_once().num_stats == 3
    assert flush_once(b'a:1|c\nt:1|ms\ng:1|g\ns:1|s\na:2|c').num_stats == 7


def test_config_property() -> None:
    """The aggregator exposes its configuration."""
    config = AggregatorConfig(flush_interval=5)
    assert Aggregator(config).config is config


def test_memos_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The name and body memos are cleared when full, without losing data."""
    from sprockets_statsd.server import _linememo

    monkeypatch.setattr(_linememo, '_MAX_KEYS', 4)
    monkeypatch.setattr(_linememo, '_MAX_BODIES', 4)
    aggregator = Aggregator(AggregatorConfig())
    for i in range(20):
        aggregator.receive(b'k%d:%d|c' % (i % 6, i))
    snap = aggregator.flush(T0)
    assert sum(user_counters(snap).values()) == sum(range(20))
    assert len(aggregator._memo.keys) <= 4
    assert len(aggregator._memo.bodies) <= 4


def test_bad_lines_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    """One warning per flush with the count and an example, not one per line."""
    aggregator = Aggregator(AggregatorConfig())
    aggregator.receive(b'bad1\nbad2\nbad3')
    assert not caplog.records
    report_interval(aggregator.flush(T0), aggregator.config)
    assert len(caplog.records) == 1
    assert '3 bad lines' in caplog.text
    assert 'bad1' in caplog.text
    caplog.clear()
    report_interval(aggregator.flush(T0 + 10), aggregator.config)
    assert not caplog.records


# -- configuration --------------------------------------------------------


@pytest.mark.parametrize(
    ('field', 'value'),
    [
        ('flush_interval', 0),
        ('flush_interval', -1),
        ('flush_interval', math.inf),
        ('flush_interval', True),
        ('flush_interval', '10'),
        ('percent_thresholds', (0,)),
        ('percent_thresholds', (101,)),
        ('percent_thresholds', (-100.5,)),
        ('percent_thresholds', (math.nan,)),
        ('percent_thresholds', ('90',)),
        ('gauges_max_ttl', 0),
        ('gauges_max_ttl', 1.5),
        ('gauges_max_ttl', True),
        ('key_prefix', 'has space'),
        ('key_prefix', 'trailing.'),
        ('key_prefix', 'a..b'),
        ('global_suffix', 'x;y'),
        ('prefix_stats', ''),
        ('global_prefix', 'a\nb'),
        ('histograms', (('t', (10, 5)),)),
        ('histograms', (('t', (math.inf, 5)),)),
        ('histograms', (('t', (math.nan,)),)),
        ('histograms', (('t', ('x',)),)),
        ('histograms', (('t',),)),
        ('histograms', ((1, (5,)),)),
        ('calculated_timer_metrics', ('upper_90',)),
    ],
)
def test_bad_settings_raise_configuration_error(field: str, value: Any) -> None:
    """Every unusable setting is refused with a message naming it."""
    settings: dict[str, Any] = {field: value}
    with pytest.raises(ConfigurationError, match=field):
        AggregatorConfig(**settings)


def test_config_normalises_sequences() -> None:
    """Lists become tuples and numbers become floats, so configs are hashable."""
    config = AggregatorConfig(
        percent_thresholds=[90, -5],  # type: ignore[arg-type]
        histograms=[('t', [1, math.inf])],  # type: ignore[arg-type]
        calculated_timer_metrics=['count'],  # type: ignore[arg-type]
    )
    assert config.percent_thresholds == (90.0, -5.0)
    assert config.histograms == (('t', (1.0, math.inf)),)
    assert config.calculated_timer_metrics == ('count',)
    assert hash(config)


def test_deletion_switch_defaults() -> None:
    """delete_* follow delete_idle_stats unless set explicitly."""
    assert not AggregatorConfig().deletes_counters
    on = AggregatorConfig(delete_idle_stats=True, delete_sets=False)
    assert (on.deletes_counters, on.deletes_timers, on.deletes_gauges) == (
        True,
        True,
        True,
    )
    assert not on.deletes_sets


def test_idle_names_take_values_again_in_order() -> None:
    """A counter or timer idle for a flush takes new samples in its old place;
    a deleted one comes back last; deleted idle counters stay deleted."""
    aggregator = Aggregator(AggregatorConfig())
    aggregator.receive(b'a:1|c\nb:2|c\nt:1|ms\nu:4|ms')
    aggregator.flush(T0)
    idle = aggregator.flush(T0 + 10)
    assert dict(idle.timers) == {'t': (), 'u': ()}
    assert [idle.counters[k] for k in ('a', 'b')] == [0, 0]
    aggregator.delete('counters', 'a')
    aggregator.receive(b'u:3|ms:2|ms\nb:1|c\na:7|c')
    snap = aggregator.flush(T0 + 20)
    assert list(snap.counters)[-2:] == ['b', 'a']
    assert snap.counters['a'] == 7
    assert dict(snap.timers) == {'t': (), 'u': (2.0, 3.0)}
    assert snap.timer_counters['u'] == 2
    assert snap.timer_data['u']['count'] == 2
    assert aggregator.flush(T0 + 30).counters['a'] == 0

    deleting = Aggregator(AggregatorConfig(delete_counters=True, prefix_stats='x'))
    deleting.receive(b'a:1|c\nmy.bad_lines_seen:1|c')
    assert 'a' in deleting.flush(T0).counters
    assert list(deleting.flush(T0 + 10).counters) == [
        'x.bad_lines_seen', 'x.packets_received', 'x.metrics_received',
        'my.bad_lines_seen',
    ]


def test_each_flush_is_stamped_after_the_previous_one() -> None:
    """Flushes whose clock readings round to the same second (or go back)
    get timestamps one second after the previous flush's, so that Graphite
    never overwrites one interval with the next; the lag gauge follows."""
    aggregator = Aggregator(AggregatorConfig(flush_interval=1.0))
    stamps = [aggregator.flush(T0 + 0.4).timestamp,
              aggregator.flush(T0 + 0.45).timestamp,
              aggregator.flush(T0 - 3).timestamp,
              aggregator.flush(T0 + 10).timestamp]
    t0 = round(T0)
    assert stamps == [t0, t0 + 1, t0 + 2, t0 + 10]
    assert aggregator.flush(T0 + 10).gauges['statsd.timestamp_lag'] == 0


def test_timers_deleted_and_sent_again_in_one_interval() -> None:
    """A timer deleted (admin console) after its second value, and one sent
    again with two more, are flushed as what they hold at the flush."""
    aggregator = Aggregator(AggregatorConfig())
    aggregator.receive(b't:2|ms\nt:1|ms\nu:5|ms\nu:6|ms\nv:9|ms')
    assert aggregator.delete('timers', 't') == ['t']
    assert aggregator.delete('timers', 'u') == ['u']
    aggregator.receive(b't:4|ms\nt:3|ms')
    snapshot = aggregator.flush(T0)
    assert dict(snapshot.timers) == {'v': (9.0,), 't': (3.0, 4.0)}
    assert snapshot.timer_data['t']['sum'] == 7
    # The next interval starts with every kept timer idle.
    aggregator.receive(b'v:1|ms\nv:2|ms')
    assert dict(aggregator.flush(T0 + 10).timers) == {'v': (1.0, 2.0), 't': ()}
