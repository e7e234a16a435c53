"""Tests of the recording connector and client offered to users' own tests."""

from __future__ import annotations

import asyncio
import datetime
import inspect
import socket
import typing

import pytest

from sprockets_statsd import testing
from sprockets_statsd.client import Pipeline, StatsClient, StatsClientBase
from sprockets_statsd.connector import AbstractConnector, Connector
from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.testing import (
    RecordedMetric,
    RecordingConnector,
    RecordingPipeline,
    RecordingStatsClient,
)
from tests.helpers import UDPReceiver

TIMEOUT = 10.0


def test_public_names() -> None:
    """The module exports the recorders and the record type."""
    assert set(testing.__all__) == {
        'RecordedMetric', 'Recorder', 'RecordingConnector', 'RecordingPipeline',
        'RecordingStatsClient',
    }


# -- the recording connector ------------------------------------------------------

def test_connector_records_every_method() -> None:
    """Each method records type, path, full name, value, rate, tags and the wire line."""
    recorder = RecordingConnector(prefix='app', tag_dialect='dogstatsd', tags={'env': 'test'})
    assert isinstance(recorder, AbstractConnector)
    recorder.incr('hits', rate=0.5, tags={'code': 200})
    recorder.decr('hits', 2)
    recorder.gauge('load', -1.5)
    recorder.gauge('load', 2, delta=True)
    recorder.timing('rt', 0.25)
    recorder.timing('rt', datetime.timedelta(milliseconds=30))
    recorder.set('users', 'bob')
    recorder.inject_metric('raw', '7', 'h')
    env = {'env': 'test'}
    assert recorder.metrics == [
        RecordedMetric('c', 'hits', 'app.counters.hits', 1, 0.5, {'env': 'test', 'code': 200},
                       'app.counters.hits:1|c|@0.5|#env:test,code:200'),
        RecordedMetric('c', 'hits', 'app.counters.hits', -2, 1.0, env,
                       'app.counters.hits:-2|c|#env:test'),
        RecordedMetric('g', 'load', 'app.gauges.load', -1.5, 1.0, env,
                       'app.gauges.load:0|g|#env:test\napp.gauges.load:-1.5|g|#env:test'),
        RecordedMetric('g', 'load', 'app.gauges.load', 2, 1.0, env,
                       'app.gauges.load:+2|g|#env:test', delta=True),
        RecordedMetric('ms', 'rt', 'app.timers.rt', 0.25, 1.0, env,
                       'app.timers.rt:250.0|ms|#env:test'),
        RecordedMetric('ms', 'rt', 'app.timers.rt', 0.03, 1.0, env,
                       'app.timers.rt:30.0|ms|#env:test'),
        RecordedMetric('s', 'users', 'app.sets.users', 'bob', 1.0, env,
                       'app.sets.users:bob|s|#env:test'),
        RecordedMetric('h', 'raw', 'app.raw', '7', 1.0, env, 'app.raw:7|h|#env:test'),
    ]
    assert recorder.lines[2:4] == ['app.gauges.load:0|g|#env:test',
                                   'app.gauges.load:-1.5|g|#env:test']


async def test_connector_lines_match_the_real_connector() -> None:
    """The recorded lines are the ones a Connector would queue for the same calls."""

    def calls(c: AbstractConnector) -> None:
        c.incr('a', 3)
        c.decr('a')
        c.gauge('b', -2, tags={'k': 'v'})
        c.timing('c', datetime.timedelta(seconds=2))
        c.set('d', 9)
        c.inject_metric('e', '1', 'h')

    options: dict[str, typing.Any] = {'prefix': 'svc', 'tag_dialect': 'influxdb'}
    connector = Connector('127.0.0.1', 8125, **options)
    calls(connector)
    queued = []
    while not connector.processor.queue.empty():
        queued.append(connector.processor.queue.get_nowait().decode())
    await asyncio.wait_for(connector.stop(), TIMEOUT)
    recorder = RecordingConnector('127.0.0.1', 8125, **options)
    calls(recorder)
    assert '\n'.join(queued).split('\n') == recorder.lines


def test_connector_takes_the_connector_arguments() -> None:
    """RecordingConnector accepts whatever Connector accepts, positionally too."""
    real = inspect.signature(Connector).parameters
    ours = inspect.signature(RecordingConnector).parameters
    for name in ('host', 'port', 'prefix', 'tag_dialect', 'tags'):
        assert ours[name].kind == real[name].kind, name
    assert list(ours)[:2] == list(real)[:2] == ['host', 'port']
    RecordingConnector('statsd', 8125, prefix='p', random_source=lambda: 0.5,
                       max_queue_size=10)


async def test_connector_timer_and_lifecycle() -> None:
    """start/stop flip running; timer() records seconds, also around coroutines."""
    recorder = RecordingConnector('statsd', 8125, ip_protocol=socket.IPPROTO_UDP)
    assert not recorder.running
    await recorder.start()
    assert recorder.running

    @recorder.timer('coro')
    async def work() -> str:
        await asyncio.sleep(0)
        return 'done'

    assert await asyncio.wait_for(work(), TIMEOUT) == 'done'
    with recorder.timer('block', tags=None):
        pass
    await recorder.stop()
    assert not recorder.running
    (coro,) = recorder.assert_timing('coro')
    assert isinstance(coro.value, float)
    assert coro.value < TIMEOUT  # seconds, not milliseconds
    recorder.assert_timing('block', times=1)


def test_connector_drops_invalid_values() -> None:
    """Invalid values are dropped and counted as the Connector does; bad tags raise."""
    recorder = RecordingConnector()
    recorder.incr('a', float('nan'))
    recorder.decr('a', True)
    recorder.decr('a', 'x')  # type: ignore[arg-type]
    recorder.timing('a', -1)
    recorder.timing('a', 'slow')  # type: ignore[arg-type]
    recorder.gauge('a', 1, rate=2)
    recorder.set('a', 1, rate=0)
    assert recorder.metrics == []
    assert recorder.dropped_invalid == recorder.dropped == 7
    with pytest.raises(ConfigurationError, match='tag_dialect'):
        recorder.incr('a', tags={'k': 'v'})
    recorder.reset()
    assert recorder.dropped_invalid == 0


def test_connector_prefix_can_change() -> None:
    """Setting prefix changes the names, as on the Connector."""
    recorder = RecordingConnector()
    recorder.incr('a')
    recorder.prefix = 'new'
    assert recorder.prefix == 'new'
    recorder.incr('a')
    recorder.prefix = None  # type: ignore[assignment]
    assert recorder.prefix == ''
    assert [m.name for m in recorder.metrics] == ['counters.a', 'new.counters.a']


def test_sampling_is_not_applied() -> None:
    """Every call is recorded whatever its rate; the rate is kept."""
    recorder = RecordingStatsClient()
    for _ in range(20):
        recorder.incr('rare', rate=0.01)
    assert len(recorder.assert_incr('rare', rate=0.01)) == 20


# -- the recording client ---------------------------------------------------------

def sync_calls(c: StatsClientBase) -> None:
    """A bit of everything a synchronous client does."""
    c.incr('a')
    c.decr('a', 4, 0.5)
    c.gauge('b', -3, tags={'k': 'v'})
    c.gauge('b', 1, delta=True)
    c.timing('c', datetime.timedelta(milliseconds=12))
    c.timing('c', 7.5)
    c.set('d', 'x')
    with c.pipeline() as pipe:
        pipe.incr('e')
        with pipe.pipeline() as inner:
            inner.set('f', 1)


def test_client_lines_match_a_real_client() -> None:
    """The recorded lines are exactly what a StatsClient sends for the same calls."""
    receiver = UDPReceiver()
    client = StatsClient('127.0.0.1', receiver.port, prefix='p', tag_dialect='graphite',
                         tags={'env': 'ci'}, random_source=lambda: 0.0)
    try:
        sync_calls(client)
        expected = receiver.datagrams(10)
    finally:
        client.close()
        receiver.close()
    recorder = RecordingStatsClient('p', tag_dialect='graphite', tags={'env': 'ci'})
    sync_calls(recorder)
    assert b'\n'.join(expected).decode().split('\n') == recorder.lines
    assert [m.value for m in recorder.metrics] == [1, -4, -3, 1, 12.0, 7.5, 'x', 1, 1]


def test_client_pipeline_records_when_sent() -> None:
    """A recording pipeline is a Pipeline; its metrics reach the client only when sent."""
    recorder = RecordingStatsClient()
    pipe = recorder.pipeline()
    assert isinstance(pipe, Pipeline)
    assert isinstance(pipe, RecordingPipeline)
    pipe.incr('a')
    pipe.gauge('b', float('nan'))
    assert recorder.metrics == []
    assert [m.path for m in pipe.metrics] == ['a']
    assert recorder.dropped_invalid == 1  # counted on the client at once
    pipe.send()
    assert pipe.metrics == []
    recorder.assert_incr('a', 1, times=1)
    with recorder.pipeline() as outer:
        with outer.pipeline() as inner:
            inner.set('c', 1)
        assert outer.find(path='c')
        assert not recorder.find(path='c')
    recorder.assert_set('c', 1)


def test_client_timer_records_milliseconds() -> None:
    """The client's timer records milliseconds, as StatsClient.timing takes them."""
    recorder = RecordingStatsClient()
    with recorder.timer('block', rate=0.5, tags=None) as timer:
        pass
    (metric,) = recorder.assert_timing('block', rate=None)
    assert metric.value == timer.ms
    assert metric.rate == 0.5
    recorder.close()  # nothing to release


def test_client_counts_invalid_values() -> None:
    """Invalid values are dropped and counted, as by the real client."""
    recorder = RecordingStatsClient()
    recorder.incr('a', True)
    recorder.decr('a', 'x')  # type: ignore[arg-type]
    recorder.timing('a', float('inf'))
    recorder.set('a', 1, rate=7)
    assert recorder.metrics == []
    assert recorder.dropped == 4


# -- assertions -----------------------------------------------------------------------

@pytest.fixture
def recorder() -> RecordingStatsClient:
    recorder = RecordingStatsClient('app', tag_dialect='dogstatsd', tags={'env': 'ci'})
    recorder.incr('hits')
    recorder.incr('hits', 2, tags={'code': 200})
    recorder.decr('hits', 3, 0.5)
    recorder.gauge('load', 5)
    recorder.gauge('load', -1, delta=True)
    recorder.timing('rt', 12.345)
    recorder.set('users', 'bob')
    return recorder


def test_assert_incr(recorder: RecordingStatsClient) -> None:
    """assert_incr matches on value, tags (a subset), rate and count, and returns matches."""
    assert len(recorder.assert_incr('hits')) == 3
    (two,) = recorder.assert_incr('hits', 2)
    assert two.line == 'app.hits:2|c|#env:ci,code:200'
    recorder.assert_incr('hits', tags={'code': 200}, times=1)
    recorder.assert_incr('hits', tags={'env': 'ci'}, times=3)
    recorder.assert_incr('hits', rate=0.5, times=1)
    with pytest.raises(AssertionError, match=r"expected counter 'hits' with value=5"):
        recorder.assert_incr('hits', 5)
    with pytest.raises(AssertionError, match=r'2 time\(s\), found 3'):
        recorder.assert_incr('hits', times=2)
    with pytest.raises(AssertionError, match=r"with tags=\{'code': 404\}"):
        recorder.assert_incr('hits', tags={'code': 404})
    with pytest.raises(AssertionError, match='with tags'):
        recorder.assert_incr('hits', tags={'missing': 1})


def test_assertion_messages_list_what_was_recorded(recorder: RecordingStatsClient) -> None:
    """A failed assertion shows the metrics of that path, or all, or says none."""
    with pytest.raises(AssertionError, match='recorded for this path:\n  RecordedMetric') as info:
        recorder.assert_gauge('load', 7)
    assert "path='hits'" not in str(info.value)
    with pytest.raises(AssertionError, match=r"recorded:\n  RecordedMetric.*path='hits'"):
        recorder.assert_incr('other')
    recorder.reset()
    with pytest.raises(AssertionError, match='nothing was recorded'):
        recorder.assert_incr('hits')


def test_assert_decr(recorder: RecordingStatsClient) -> None:
    """assert_decr finds negative counters; without a value, any decrement."""
    (metric,) = recorder.assert_decr('hits', 3)
    assert metric.value == -3
    recorder.assert_decr('hits', rate=0.5)
    with pytest.raises(AssertionError):
        recorder.assert_decr('hits', 1)
    recorder.incr('up')
    with pytest.raises(AssertionError, match='never decremented'):
        recorder.assert_decr('up')
    connector = RecordingConnector()
    connector.inject_metric('text', '-1', 'c')
    with pytest.raises(AssertionError, match='never decremented'):
        connector.assert_decr('text')  # a value given as text is not a number


def test_assert_gauge_timing_set(recorder: RecordingStatsClient) -> None:
    """The other assertions match on their fields; timings compare with approx."""
    recorder.assert_gauge('load', 5, delta=False)
    recorder.assert_gauge('load', -1, delta=True)
    recorder.assert_gauge('load', times=2)
    recorder.assert_timing('rt', pytest.approx(12.3, abs=0.1))
    with pytest.raises(AssertionError, match="expected timer 'rt'"):
        recorder.assert_timing('rt', pytest.approx(99))
    recorder.assert_set('users', 'bob', tags={'env': 'ci'})
    with pytest.raises(AssertionError, match="expected set 'users'"):
        recorder.assert_set('users', 'alice')


def test_assert_not_recorded(recorder: RecordingStatsClient) -> None:
    """assert_not_recorded fails when the path (of that type) was recorded."""
    recorder.assert_not_recorded('nothing')
    recorder.assert_not_recorded('hits', 'g')
    with pytest.raises(AssertionError, match="expected no metric 'hits'"):
        recorder.assert_not_recorded('hits')


def test_find(recorder: RecordingStatsClient) -> None:
    """find filters on every field given and returns matches in order."""
    assert len(recorder.find()) == 7
    assert [m.value for m in recorder.find('c')] == [1, 2, -3]
    assert [m.type for m in recorder.find(path='load')] == ['g', 'g']
    assert recorder.find('g', 'load', value=-1, delta=True)[0].line == 'app.load:-1|g|#env:ci'
    assert recorder.find(tags={'code': 200})[0].value == 2
    assert [m.value for m in recorder.find(delta=True)] == [-1]
    assert recorder.find(rate=0.5)[0].value == -3
    assert recorder.find('ms', value=pytest.approx(12.345))[0].name == 'app.rt'
    assert recorder.find('s', 'hits') == []

