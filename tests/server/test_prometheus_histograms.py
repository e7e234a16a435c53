"""Timers with histogram bins: real Prometheus histograms, and bins by name prefix."""

from __future__ import annotations

import math

from sprockets_statsd.server._timerstats import histogram_bins
from sprockets_statsd.server.aggregator import Aggregator
from sprockets_statsd.server.config import AggregatorConfig
from sprockets_statsd.server.graphite import GraphiteStats, render
from tests.server import test_prometheus as prometheus

BINS = ('api.*', (10.0, 100.0, math.inf))
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Exposed(prometheus.Exposed):
    """An aggregator feeding a collector that knows the histogram bins."""

    def __init__(self, *histograms: tuple[str, tuple[float, ...]]) -> None:
        super().__init__(histograms=histograms)

    def both(self) -> tuple[dict[str, str], Samples]:
        """The family types and (sample name, sorted labels) -> value."""
        # /metrics renders without prometheus_client: the same bytes.
        assert self.collector.exposition().decode() == self.text()
        return {n: f.type for n, f in self.families().items()}, self.samples()


def test_a_timer_with_bins_is_a_cumulative_histogram() -> None:
    """_bucket{le} counts values at most each bound, +Inf is the count."""
    exposed = Exposed(BINS)
    exposed.flush(b'api.lat:5|ms\napi.lat:10|ms\napi.lat:50|ms\napi.lat:500|ms')
    types, samples = exposed.both()
    assert types['api_lat_seconds'] == 'histogram'
    assert samples[('api_lat_seconds_bucket', (('le', '0.01'),))] == 2
    assert samples[('api_lat_seconds_bucket', (('le', '0.1'),))] == 3
    assert samples[('api_lat_seconds_bucket', (('le', '+Inf'),))] == 4
    assert samples[('api_lat_seconds_count', ())] == 4
    assert samples[('api_lat_seconds_sum', ())] == 0.565


def test_buckets_add_up_over_flushes_and_keep_tags() -> None:
    """Buckets are totals since the start; tags become labels beside le."""
    exposed = Exposed(BINS)
    exposed.flush(b'api.lat:5|ms|#env:prod')
    exposed.flush(b'api.lat:50|ms|#env:prod')
    exposed.flush(b'')  # an idle flush changes nothing
    _, samples = exposed.both()
    assert samples[('api_lat_seconds_bucket', (('env', 'prod'), ('le', '0.01')))] == 1
    assert samples[('api_lat_seconds_bucket', (('env', 'prod'), ('le', '0.1')))] == 2
    assert samples[('api_lat_seconds_count', (('env', 'prod'),))] == 2


def test_ms_h_and_d_are_binned_alike() -> None:
    """Timers, DogStatsD histograms and distributions all get the bins."""
    exposed = Exposed(BINS)
    exposed.flush(b'api.a:5|ms\napi.b:5|h\napi.c:5:50|d')
    types, samples = exposed.both()
    for name in ('api_a', 'api_b', 'api_c'):
        assert types[f'{name}_seconds'] == 'histogram'
        assert samples[(f'{name}_seconds_bucket', (('le', '0.01'),))] == 1
    assert samples[('api_c_seconds_bucket', (('le', '+Inf'),))] == 2


def test_sampled_values_scale_the_buckets_like_the_count() -> None:
    """With ``@0.5`` every bucket counts double, as the count does."""
    exposed = Exposed(BINS)
    exposed.flush(b'api.lat:5|ms|@0.5\napi.lat:50|ms|@0.5')
    _, samples = exposed.both()
    assert samples[('api_lat_seconds_bucket', (('le', '0.01'),))] == 2
    assert samples[('api_lat_seconds_bucket', (('le', '+Inf'),))] == 4


def test_timers_without_bins_stay_summaries() -> None:
    """Only the timers the bins match become histograms."""
    exposed = Exposed(BINS)
    exposed.flush(b'db.lat:5|ms\nmyapi.lat:5|ms')
    types, _ = exposed.both()
    assert types['db_lat_seconds'] == 'summary'
    assert types['myapi_lat_seconds'] == 'summary'  # a prefix, not a substring


def test_histograms_of_two_servers_add_up() -> None:
    """Bucket by bucket, two servers' histograms sum to one server's."""
    lines = [b'api.lat:%d|ms' % v for v in (1, 9, 10, 11, 99, 100, 101, 5000)]
    one, left, right = Exposed(BINS), Exposed(BINS), Exposed(BINS)
    one.flush(b'\n'.join(lines))
    left.flush(b'\n'.join(lines[::2]))
    right.flush(b'\n'.join(lines[1::2]))
    _, total = one.both()
    _, a = left.both()
    _, b = right.both()
    buckets = [key for key in total if key[0] == 'api_lat_seconds_bucket']
    assert len(buckets) == 3
    for key in buckets:
        assert a[key] + b[key] == total[key]


def test_bins_by_prefix_or_substring() -> None:
    """``api.*`` matches names starting with ``api.``; ``*`` every timer."""
    histograms = (('api.*', (1.0,)), ('db', (2.0,)), ('*', (3.0,)))
    assert histogram_bins('api.get', histograms) == (1.0,)
    assert histogram_bins('myapi.get', histograms) == (3.0,)
    assert histogram_bins('mydb.get', histograms) == (2.0,)
    assert histogram_bins('other', histograms) == (3.0,)
    assert histogram_bins('other', histograms[:2]) == ()


def test_graphite_bins_by_prefix() -> None:
    """The Graphite histogram lines use the same prefix rule."""
    aggregator = Aggregator(AggregatorConfig(histograms=(BINS,)))
    aggregator.receive(b'api.lat:5|ms\nmyapi.lat:5|ms')
    lines = render(aggregator.flush(1_700_000_000), aggregator.config, GraphiteStats())
    assert b'stats.timers.api.lat.histogram.bin_10 1 ' in lines
    assert b'myapi.lat.histogram' not in lines
