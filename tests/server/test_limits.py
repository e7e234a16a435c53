"""Tier 1: the bounds on names and timer values (max_names, max_timer_values)."""

from __future__ import annotations

import logging
import math
import random
import statistics

import pytest

from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.server import cli
from sprockets_statsd.server.aggregator import Aggregator
from sprockets_statsd.server.app import report_interval
from sprockets_statsd.server.config import AggregatorConfig
from sprockets_statsd.server.graphite import GraphiteStats, render

NOW = 1_700_000_000.0


def aggregator(**options: object) -> Aggregator:
    """An aggregator with a seeded sampler, so runs repeat exactly."""
    return Aggregator(AggregatorConfig(**options), chooser=random.Random(7))  # type: ignore[arg-type]


@pytest.mark.parametrize('field', ['max_names', 'max_timer_values'])
@pytest.mark.parametrize('value', [0, -1, 2.5, True])
def test_bounds_must_be_positive_whole_numbers(field: str, value: object) -> None:
    """A bound that is not a whole number >= 1 is a configuration error naming it."""
    with pytest.raises(ConfigurationError, match=field):
        AggregatorConfig(**{field: value})  # type: ignore[arg-type]


def test_new_names_beyond_the_cap_are_dropped_and_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    """Past max_names, samples of new names are dropped; known names still count."""
    # The three internal counters take three of the eight names.
    agg = aggregator(max_names=8)
    agg.receive(b'a:1|c\nt:5|ms\ng:3|g\ns:x|s\nb:1|c')   # five names: full
    agg.receive(b'new.c:1|c\nnew.t:1|ms\nnew.g:1|g\nnew.s:y|s\nnew.g:+1|g')
    agg.receive(b'a:2|c\nt:7|ms\ng:+1|g\ns:z|s')          # known names go on
    caplog.set_level(logging.WARNING)
    snap = agg.flush(NOW)
    report_interval(snap, agg.config)
    assert dict(snap.counters) == {
        'statsd.bad_lines_seen': 0.0, 'statsd.packets_received': 3.0,
        'statsd.metrics_received': 14.0, 'a': 3.0, 'b': 1.0,
        'statsd.names_dropped': 5.0,
    }
    assert dict(snap.timers) == {'t': (5.0, 7.0)}
    assert dict(snap.gauges) == {'g': 4.0}
    assert dict(snap.sets) == {'s': frozenset({'x', 'z'})}
    assert snap.names_dropped == 5
    assert 'dropped 5 samples of new names' in caplog.text
    payload = render(snap, agg.config, GraphiteStats()).decode()
    assert 'stats_counts.statsd.names_dropped 5 ' in payload


def test_names_dropped_is_absent_until_the_cap_is_reached() -> None:
    """Below the cap the output has exactly the reference's series."""
    agg = aggregator()
    agg.receive(b'a:1|c')
    payload = render(agg.flush(NOW), agg.config, GraphiteStats()).decode()
    assert 'names_dropped' not in payload


def test_idle_deletion_frees_room_for_new_names() -> None:
    """Names deleted at a flush make room for new ones in the next interval."""
    # Three internal counters, and the timestamp_lag gauge from the second
    # flush on, leave room for two names.
    agg = aggregator(max_names=6, delete_idle_stats=True)
    agg.receive(b'old.a:1|c\nold.b:1|c')
    agg.flush(NOW)
    agg.flush(NOW + 10)              # the idle names are deleted here
    agg.receive(b'new.a:1|c\nnew.b:1|c')
    snap = agg.flush(NOW + 20)
    assert snap.counters['new.a'] == 1.0
    assert snap.counters['new.b'] == 1.0
    assert snap.names_dropped == 0


def test_kept_names_keep_their_room_across_flushes() -> None:
    """Persisting idle names (the reference's default) keep occupying the cap."""
    agg = aggregator(max_names=4)
    agg.receive(b'kept:1|c')
    agg.flush(NOW)
    agg.receive(b'other:1|c\nkept:1|c')
    snap = agg.flush(NOW + 10)
    assert 'other' not in snap.counters
    assert snap.counters['kept'] == 1.0
    assert snap.names_dropped == 1


def test_admin_delete_frees_room() -> None:
    """Deleting names through the admin console makes room at once."""
    agg = aggregator(max_names=5)
    agg.receive(b'first:1|c')
    agg.receive(b'second:1|c')
    assert agg.delete('counters', 'first') == ['first']
    agg.receive(b'second:1|c\nthird:1|c')
    snap = agg.flush(NOW)
    assert snap.counters['third'] == 1.0
    assert snap.names_dropped == 0


def test_timer_values_within_the_bound_are_exact() -> None:
    """Up to max_timer_values the statistics are the reference's, unchanged."""
    bounded, unbounded = aggregator(max_timer_values=10), aggregator()
    packet = b'\n'.join(b't:%d|ms' % v for v in range(10))
    for agg in (bounded, unbounded):
        agg.receive(packet)
    assert dict(bounded.flush(NOW).timer_data['t']) == dict(unbounded.flush(NOW).timer_data['t'])


def test_timer_values_beyond_the_bound_keep_exact_totals() -> None:
    """Past max_timer_values: count, sum, sum of squares, mean, std, upper, lower exact."""
    values = [float((v * 7919) % 1000) for v in range(5000)]
    agg = aggregator(max_timer_values=500, percent_thresholds=(90, -10),
                     histograms=(('t', (250.0, math.inf)),))
    for start in range(0, len(values), 100):
        agg.receive(b'\n'.join(b't:%r|ms' % v for v in values[start:start + 100]))
    snap = agg.flush(NOW)
    assert len(snap.timers['t']) == 500              # memory stays bounded
    stats = snap.timer_data['t']
    n = len(values)
    mean = sum(values) / n
    assert stats['count'] == n
    assert stats['upper'] == max(values)
    assert stats['lower'] == min(values)
    assert stats['sum'] == pytest.approx(sum(values))
    assert stats['sum_squares'] == pytest.approx(sum(v * v for v in values))
    assert stats['mean'] == pytest.approx(mean)
    assert stats['std'] == pytest.approx(statistics.pstdev(values))
    assert stats['count_90'] == 4500
    assert stats['count_top10'] == 500
    # Estimates from a uniform sample of 500: within a few percent here.
    assert stats['median'] == pytest.approx(statistics.median(values), rel=0.1)
    assert stats['upper_90'] == pytest.approx(900, rel=0.05)
    assert stats['sum_90'] == pytest.approx(sum(sorted(values)[:4500]), rel=0.05)
    assert stats['histogram.bin_250'] + stats['histogram.bin_inf'] == pytest.approx(n, abs=2)
    assert stats['histogram.bin_250'] == pytest.approx(1250, rel=0.15)


def test_sampling_state_starts_afresh_each_interval() -> None:
    """The exact totals of one interval do not leak into the next."""
    agg = aggregator(max_timer_values=2)
    agg.receive(b't:1|ms\nt:2|ms\nt:3|ms')
    assert agg.flush(NOW).timer_data['t']['sum'] == 6
    agg.receive(b't:10|ms')
    assert agg.flush(NOW + 10).timer_data['t']['sum'] == 10


def test_command_line_sets_the_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """--max-names and --max-timer-values (and their variables) reach the config."""
    config, _ = cli.settings_from(['--max-names', '1000', '--max-timer-values', '50'])
    assert config.aggregator.max_names == 1000
    assert config.aggregator.max_timer_values == 50
    monkeypatch.setenv('STATSD_MAX_NAMES', '77')
    config, _ = cli.settings_from([])
    assert config.aggregator.max_names == 77


def test_one_kept_value_still_counts_every_value() -> None:
    """With room for one value per timer, the first is kept as it came and
    the next ones go to the sample with exact totals."""
    agg = aggregator(max_timer_values=1)
    agg.receive(b't:5|ms\nu:2|ms')
    agg.receive(b't:7|ms\nt:9|ms')
    snap = agg.flush(NOW)
    assert len(snap.timers['t']) == 1
    assert snap.timers['u'] == (2.0,)
    stats = snap.timer_data['t']
    assert (stats['count'], stats['sum'], stats['upper'], stats['lower']) == (3, 21, 9, 5)
    assert snap.timer_data['u']['sum'] == 2
