"""The Prometheus collector, read back with prometheus_client's own parser."""

from __future__ import annotations

import logging
import math

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sprockets_statsd.server.aggregator import Aggregator
from sprockets_statsd.server.config import AggregatorConfig
from sprockets_statsd.server.prometheus import (
    StatsdCollector,
    prometheus_labels,
    prometheus_name,
)


class Exposed:
    """An aggregator feeding a collector in its own registry."""

    def __init__(self, **settings: object) -> None:
        config = AggregatorConfig(**settings)  # type: ignore[arg-type]
        self.aggregator = Aggregator(config)
        self.collector = StatsdCollector(config.percent_thresholds, config.histograms)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)

    def flush(self, *packets: bytes) -> None:
        for packet in packets:
            self.aggregator.receive(packet)
        self.collector.add(self.aggregator.flush(1_700_000_000))

    def text(self) -> str:
        return generate_latest(self.registry).decode()

    def families(self) -> dict[str, prometheus_client.Metric]:
        """The parsed exposition, by family name."""
        return {f.name: f for f in text_string_to_metric_families(self.text())}

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """(sample name, sorted labels) -> value of every sample."""
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in self.families().values()
            for s in f.samples
        }


@pytest.mark.parametrize(('key', 'name'), [
    ('api.requests', 'api_requests'),
    ('api.get-user;env=prod', 'api_get_user'),
    ('5xx.errors', '_5xx_errors'),
    ('already_fine', 'already_fine'),
    ('k\u00f6ln.hits', 'k_ln_hits'),
])
def test_names_follow_the_documented_rule(key: str, name: str) -> None:
    """Every character outside [A-Za-z0-9_] becomes _, a leading digit
    gets a _ in front, and the tags are not part of the name."""
    assert prometheus_name(key) == name


def test_tags_become_labels() -> None:
    """;k=v tags are labels; reserved and invalid label names are renamed;
    a tag without a value is true."""
    assert prometheus_labels('x;env=prod;region=eu-1') == {'env': 'prod', 'region': 'eu-1'}
    assert prometheus_labels('x;quantile=a;le=b') == {
        'exported_quantile': 'a', 'exported_le': 'b'}
    assert prometheus_labels('x;__secret=1;9lives=2;a-b=3') == {
        'tag__secret': '1', '_9lives': '2', 'a_b': '3'}
    assert prometheus_labels('x;flag;;=v') == {'flag': 'true'}


def test_counters_are_cumulative_totals() -> None:
    """A statsd counter is a Prometheus counter: flushes add up."""
    exposed = Exposed()
    exposed.flush(b'hits:3|c')
    exposed.flush(b'hits:4|c\nhits:1|c|@0.5')
    families = exposed.families()
    assert families['hits'].type == 'counter'
    assert exposed.samples()[('hits_total', ())] == 9
    assert exposed.samples()[('statsd_metrics_received_total', ())] == 3


def test_timers_are_summaries_in_seconds() -> None:
    """A timer is a summary in seconds: quantiles of the configured
    thresholds (negative ones as 1 - P/100) and cumulative sum and count."""
    exposed = Exposed(percent_thresholds=(90, 50, -5, -10))
    values = b'\n'.join(b'lat:%d|ms' % v for v in range(1, 101))
    exposed.flush(values)
    exposed.flush(b'lat:1000|ms')
    family = exposed.families()['lat_seconds']
    assert family.type == 'summary'
    samples = exposed.samples()
    assert samples[('lat_seconds', (('quantile', '0.5'),))] == 1.0
    assert samples[('lat_seconds', (('quantile', '0.9'),))] == 1.0
    assert samples[('lat_seconds', (('quantile', '0.95'),))] == 1.0
    assert samples[('lat_seconds_count', ())] == 101
    assert samples[('lat_seconds_sum', ())] == pytest.approx(5.050 + 1.0)
    exposed.flush(values)
    samples = exposed.samples()
    assert samples[('lat_seconds', (('quantile', '0.5'),))] == 0.05
    assert samples[('lat_seconds', (('quantile', '0.9'),))] == 0.09
    assert samples[('lat_seconds', (('quantile', '0.95'),))] == 0.096
    # -10 is the same quantile as 90 and is given once.
    quantiles = [s for s in family.samples if 'quantile' in s.labels]
    assert len(quantiles) == 3


def test_sampled_timers_scale_sum_like_count() -> None:
    """With a sample rate, sum is scaled as count is, so sum/count is the mean."""
    exposed = Exposed()
    exposed.flush(b'lat:10|ms|@0.1\nlat:30|ms|@0.1')
    samples = exposed.samples()
    assert samples[('lat_seconds_count', ())] == pytest.approx(20)
    assert samples[('lat_seconds_sum', ())] == pytest.approx(0.4)


def test_idle_flush_keeps_the_last_quantiles() -> None:
    """A flush without values leaves the quantiles of the last busy one."""
    exposed = Exposed()
    exposed.flush(b'lat:7|ms')
    exposed.flush()
    samples = exposed.samples()
    assert samples[('lat_seconds', (('quantile', '0.9'),))] == 0.007
    assert samples[('lat_seconds_count', ())] == 1


def test_few_values_leave_out_a_quantile_statsd_leaves_out() -> None:
    """With two values, the 10th percentile rounds to no value at all."""
    exposed = Exposed(percent_thresholds=(10, 90))
    exposed.flush(b'lat:1|ms\nlat:2|ms')
    samples = exposed.samples()
    assert ('lat_seconds', (('quantile', '0.1'),)) not in samples
    assert samples[('lat_seconds', (('quantile', '0.9'),))] == 0.002


def test_gauges_and_sets_are_gauges() -> None:
    """Gauges give their value, sets their distinct members of the flush."""
    exposed = Exposed()
    exposed.flush(b'temp:-4.5|g\nusers:a|s\nusers:b|s\nusers:a|s')
    families = exposed.families()
    assert families['temp'].type == 'gauge'
    assert families['users'].type == 'gauge'
    samples = exposed.samples()
    assert samples[('temp', ())] == -4.5
    assert samples[('users', ())] == 2


def test_tagged_series_share_one_family() -> None:
    """DogStatsD and Graphite tags give labelled series of one family."""
    exposed = Exposed()
    exposed.flush(b'req:1|c|#env:prod,code:200\nreq;env=dev:2|c\nreq:4|c')
    family = exposed.families()['req']
    assert {tuple(sorted(s.labels.items())): s.value for s in family.samples} == {
        (('code', '200'), ('env', 'prod')): 1,
        (('env', 'dev'),): 2,
        (): 4,
    }


def test_colliding_names_keep_the_first_series(caplog: pytest.LogCaptureFixture) -> None:
    """Keys that map to one series: counters win over later kinds, and the
    first key in sorted order wins; the output stays valid."""
    exposed = Exposed()
    exposed.flush(b'a.b:1|c\na_b:2|c\nx:1|c\nx:5|g\ny:1|c\ny_total:3|g\nz:1|ms\nz_seconds_count:1|g'
                  b'\nq_seconds:1|c\nq:1|ms')
    with caplog.at_level(logging.DEBUG, logger='sprockets_statsd.server.prometheus'):
        samples = exposed.samples()
    assert samples[('a_b_total', ())] == 1
    assert samples[('x_total', ())] == 1
    assert ('x', ()) not in samples
    assert samples[('y_total', ())] == 1  # the counter's, not the gauge's
    assert samples[('z_seconds_count', ())] == 1
    assert samples[('q_seconds_total', ())] == 1
    assert exposed.collector.collisions == 5
    assert 'share a Prometheus series' in caplog.text


def test_keys_gone_from_the_flush_are_dropped() -> None:
    """Totals are kept only for keys in the latest flush: memory follows
    the aggregator, and a returning key restarts from zero."""
    exposed = Exposed(delete_idle_stats=True)
    exposed.flush(b'gone:5|c\nlat:1|ms')
    exposed.flush()
    samples = exposed.samples()
    assert ('gone_total', ()) not in samples
    assert ('lat_seconds_count', ()) not in samples
    exposed.flush(b'gone:1|c')
    assert exposed.samples()[('gone_total', ())] == 1


def test_nothing_goes_to_the_global_registry() -> None:
    """A collector in its own registry adds nothing to the default one."""
    exposed = Exposed()
    exposed.flush(b'private_metric:1|c')
    assert 'private_metric' in exposed.text()
    assert 'private_metric' not in generate_latest(prometheus_client.REGISTRY).decode()


def test_describe_is_empty_and_an_empty_collector_exposes_nothing() -> None:
    """Before any flush the collector has no families."""
    collector = StatsdCollector()
    assert list(collector.describe()) == []
    assert list(collector.collect()) == []


def test_values_are_exact() -> None:
    """Large and fractional values survive the text format."""
    exposed = Exposed()
    exposed.flush(b'big:12345678901|c\nfrac:0.125|g')
    samples = exposed.samples()
    assert samples[('big_total', ())] == 12345678901
    assert samples[('frac', ())] == 0.125
    assert not any(math.isnan(v) for v in samples.values())


def test_own_text_is_generate_latest_byte_for_byte() -> None:
    """exposition() gives exactly what prometheus_client renders from
    collect(), for every kind, tags, escapes, collisions and name rules."""
    import random

    rng = random.Random(13)
    names = ['a.b', 'a_b', 'a-b', '5xx', 'k\u00f6ln', 'x', 'x_total', 'z', 'z_seconds',
             'q.r.s', 'dup']
    tags = ['', ';env=prod', ';le=1', ';quantile=x', ';__x=1', ';v=a"b\\c', ';flag',
            ';env=dev;code=200', ';env=prod;env=dev']
    exposed = Exposed(percent_thresholds=(90, -10, 50))
    for _ in range(3):
        lines = []
        for _ in range(200):
            kind = rng.choice(['c', 'ms', 'g', 's'])
            value = rng.choice(['0', '1', '2.5', '1e21', '123456789.125', '-3'])
            if kind == 'ms':
                value = value.lstrip('-')
            name = rng.choice(names) + rng.choice(tags).replace(';', '|#', 1).replace(
                ';', ',').replace('=', ':')
            name, _, tagged = name.partition('|#')
            lines.append(f'{name}:{value}|{kind}' + (f'|#{tagged}' if tagged else ''))
        exposed.flush('\n'.join(lines).encode())
        assert exposed.collector.exposition() == exposed.text().encode()
    assert exposed.collector.collisions > 0


def test_own_text_holds_as_values_and_keys_change() -> None:
    """The text of names and labels kept from one exposition() to the next
    serves while the keys stay, takes in new keys of new families (a new
    internal gauge, a counter, a timer, a timer's new quantile), and is
    made anew when a key takes a series another key has (a set named as a
    gauge)."""
    exposed = Exposed(percent_thresholds=(90, 10), histograms=[('h', [1, 10])])
    base = [b'a.b:1|c', b'a.b:1|c|#env:prod', b'a_b:2|c|#env:dev', b'a-b:3|c',
            b'x:1|g', b'y:2|s', b'h:5|ms', b'z:12345678|g']
    texts = []
    # The first flush has no timestamp_lag gauge yet.
    for step, extra in enumerate([b'', b'', b'', b'new:1|c', b'new:1|c',
                                  b't:1|ms\nt:2|ms', b't:1|ms\n' * 12, b't:3|ms\n' * 12,
                                  b'x:1|s']):
        exposed.flush(b'\n'.join(base) + b'\n' + extra + b'\na.b:%d|c' % step)
        before = exposed.collector._layout
        text = exposed.collector.exposition()
        assert text == exposed.text().encode()
        texts.append(text)
        if step in (0, 8):
            assert exposed.collector._layout is not before
        else:
            assert exposed.collector._layout is before
    assert len(set(texts)) == len(texts)
    assert exposed.collector.collisions == 2  # a-b as a.b, and x
