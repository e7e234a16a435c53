"""The non-finite rule: samples that cannot be represented are bad lines,
aggregates that overflow saturate, identically on every output."""

from __future__ import annotations

import math

import pytest

from sprockets_statsd.server._finite import LARGEST, saturate, saturated, saturated_list, total
from tests.server.helpers import send_udp
from tests.server.outputs import serving_everything


@pytest.mark.parametrize(('value', 'expected'), [
    (1.5, 1.5), (-2.0, -2.0), (math.inf, LARGEST), (-math.inf, -LARGEST),
    (math.nan, LARGEST), (LARGEST, LARGEST),
])
def test_saturate(value: float, expected: float) -> None:
    """Finite numbers pass; infinities become the largest double of their
    sign; NaN (only ever an undefined timer statistic) the largest double."""
    assert saturate(value) == expected


def test_saturated_returns_finite_mappings_themselves() -> None:
    """A mapping whose values are all finite is returned as it is (no copy);
    one with an overflow is copied with each value saturated."""
    fine = {'a': 1.0, 'b': -LARGEST, 'c': LARGEST}
    assert saturated(fine) is fine
    assert saturated({'a': 1.0, 'b': math.inf, 'c': -math.inf}) == {
        'a': 1.0, 'b': LARGEST, 'c': -LARGEST}


def test_saturated_list_returns_finite_lists_themselves() -> None:
    """The same rule for a list of values: itself when all are finite, a
    saturated copy otherwise."""
    fine = [1.0, -LARGEST, LARGEST]
    assert saturated_list(fine) is fine
    assert saturated_list([1.0, math.inf, -math.inf]) == [1.0, LARGEST, -LARGEST]


def test_total_saturates_an_overflowing_sum() -> None:
    """The exact sum of finite values, or the largest double of the sum's
    sign when it overflows (where math.fsum raises)."""
    assert total([0.1] * 10) == 1.0
    assert total([1e308, 1e308, -1.0]) == LARGEST
    assert total([-1e308, -1e308]) == -LARGEST


async def test_one_sender_cannot_blank_or_poison_any_output() -> None:
    """Overflowing samples from one sender (1e308 timers, counters and gauge
    deltas, a rate of 5e-324) leave every output well-formed: another
    sender's metric is on each of them with its value, the overflowed
    aggregates read the largest double everywhere, the unrepresentable
    samples are counted as bad lines, and a second interval is the same."""
    async with serving_everything() as surfaces:
        address = surfaces.server.udp_addresses[0]
        for interval in range(2):
            send_udp(address, b'good:7|c', b't:1e308|ms\nt:1e308|ms',
                     b'c:1e308|c\nc:1e308|c', b'g:+1e308|g\ng:+1e308|g',
                     b'x:0|c|@5e-324\ny:1e308|c|@0.5')
            await surfaces.wait_for_packets(5)
            out = await surfaces.collect()
            assert out.graphite_value('stats_counts.good') == 7
            assert out.graphite_value('stats_counts.statsd.bad_lines_seen') == 2
            assert out.graphite_value('stats_counts.c') == LARGEST
            assert out.graphite_value('stats.gauges.g') == LARGEST
            assert out.graphite_value('stats.timers.t.sum') == LARGEST
            assert out.graphite_value('stats.timers.t.upper') == 1e308
            assert out.metric('good_total') == 7 * (interval + 1)
            assert out.metric('c_total') == LARGEST
            assert out.metric('g') == LARGEST
            # The saturated sum of milliseconds, in seconds, per interval.
            assert out.metric('t_seconds_sum') == LARGEST / 1000 * (interval + 1)
            assert out.metric('t_seconds_count') == 2 * (interval + 1)
            assert out.load['good'] == 7 * (interval + 1)
            assert out.load['c'] == LARGEST
            assert out.load['stats.gauges.g'] == LARGEST
            assert out.load['stats.timers.t.sum'] == LARGEST
            assert out.load['stats.timers.t.upper'] == 1e308
            assert out.overview['counter', 'good'] == str(7 * (interval + 1))
            assert float(out.overview['counter', 'c']) == float(format(LARGEST, '.6g'))
            assert 'x' not in out.load
            assert 'y' not in out.load
