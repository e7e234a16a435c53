"""Wire tests of the tag dialects, for the synchronous clients and the asyncio Connector."""

from __future__ import annotations

import asyncio
import datetime
import socket
import typing
from collections.abc import Callable

import pytest

from sprockets_statsd.client import StatsClient, StatsClientBase, TCPStatsClient
from sprockets_statsd.connector import Connector
from sprockets_statsd.errors import ConfigurationError
from tests.helpers import StatsdServer, ThreadedStatsdServer, UDPReceiver

UDP = socket.IPPROTO_UDP
TIMEOUT = 10.0
CONSTANT = {'env': 'prod'}


def sync_calls(c: StatsClientBase) -> None:
    """One call of every kind; rates are kept by a random source of 0.1."""
    c.incr('hits')
    c.incr('hits', 2, 0.5, tags={'code': 200})
    c.decr('hits', tags={'code': 500})
    c.gauge('load', 1.5, tags={'host': 'a'})
    c.gauge('load', -2, tags={'host': 'a'})
    c.gauge('load', 3, 0.25, delta=True)
    c.set('users', 'bob', tags={'team': 'x'})
    c.timing('rt', 12.5, 0.5, tags={'route': '/a'})
    c.timing('rt', datetime.timedelta(seconds=1))


def connector_calls(c: Connector) -> None:
    """The same calls through the Connector's API (seconds, keyword rates)."""
    c.incr('hits')
    c.incr('hits', 2, rate=0.5, tags={'code': 200})
    c.decr('hits', tags={'code': 500})
    c.gauge('load', 1.5, tags={'host': 'a'})
    c.gauge('load', -2, tags={'host': 'a'})
    c.gauge('load', 3, delta=True, rate=0.25)
    c.set('users', 'bob', tags={'team': 'x'})
    c.timing('rt', 0.0125, rate=0.5, tags={'route': '/a'})
    c.timing('rt', datetime.timedelta(seconds=1))
    c.inject_metric('raw', '7', 'h', tags={'k': 'v'})


SYNC_LINES = {
    'dogstatsd': [
        'app.hits:1|c|#env:prod',
        'app.hits:2|c|@0.5|#env:prod,code:200',
        'app.hits:-1|c|#env:prod,code:500',
        'app.load:1.5|g|#env:prod,host:a',
        'app.load:0|g|#env:prod,host:a\napp.load:-2|g|#env:prod,host:a',
        'app.load:+3|g|@0.25|#env:prod',
        'app.users:bob|s|#env:prod,team:x',
        'app.rt:12.5|ms|@0.5|#env:prod,route:/a',
        'app.rt:1000.0|ms|#env:prod',
    ],
    'influxdb': [
        'app.hits,env=prod:1|c',
        'app.hits,env=prod,code=200:2|c|@0.5',
        'app.hits,env=prod,code=500:-1|c',
        'app.load,env=prod,host=a:1.5|g',
        'app.load,env=prod,host=a:0|g\napp.load,env=prod,host=a:-2|g',
        'app.load,env=prod:+3|g|@0.25',
        'app.users,env=prod,team=x:bob|s',
        'app.rt,env=prod,route=/a:12.5|ms|@0.5',
        'app.rt,env=prod:1000.0|ms',
    ],
    'graphite': [
        'app.hits;env=prod:1|c',
        'app.hits;env=prod;code=200:2|c|@0.5',
        'app.hits;env=prod;code=500:-1|c',
        'app.load;env=prod;host=a:1.5|g',
        'app.load;env=prod;host=a:0|g\napp.load;env=prod;host=a:-2|g',
        'app.load;env=prod:+3|g|@0.25',
        'app.users;env=prod;team=x:bob|s',
        'app.rt;env=prod;route=/a:12.5|ms|@0.5',
        'app.rt;env=prod:1000.0|ms',
    ],
}

CONNECTOR_LINES = {
    'dogstatsd': [
        'app.counters.hits:1|c|#env:prod',
        'app.counters.hits:2|c|@0.5|#env:prod,code:200',
        'app.counters.hits:-1|c|#env:prod,code:500',
        'app.gauges.load:1.5|g|#env:prod,host:a',
        'app.gauges.load:0|g|#env:prod,host:a',
        'app.gauges.load:-2|g|#env:prod,host:a',
        'app.gauges.load:+3|g|@0.25|#env:prod',
        'app.sets.users:bob|s|#env:prod,team:x',
        'app.timers.rt:12.5|ms|@0.5|#env:prod,route:/a',
        'app.timers.rt:1000.0|ms|#env:prod',
        'app.raw:7|h|#env:prod,k:v',
    ],
    'influxdb': [
        'app.counters.hits,env=prod:1|c',
        'app.counters.hits,env=prod,code=200:2|c|@0.5',
        'app.counters.hits,env=prod,code=500:-1|c',
        'app.gauges.load,env=prod,host=a:1.5|g',
        'app.gauges.load,env=prod,host=a:0|g',
        'app.gauges.load,env=prod,host=a:-2|g',
        'app.gauges.load,env=prod:+3|g|@0.25',
        'app.sets.users,env=prod,team=x:bob|s',
        'app.timers.rt,env=prod,route=/a:12.5|ms|@0.5',
        'app.timers.rt,env=prod:1000.0|ms',
        'app.raw,env=prod,k=v:7|h',
    ],
    'graphite': [
        'app.counters.hits;env=prod:1|c',
        'app.counters.hits;env=prod;code=200:2|c|@0.5',
        'app.counters.hits;env=prod;code=500:-1|c',
        'app.gauges.load;env=prod;host=a:1.5|g',
        'app.gauges.load;env=prod;host=a:0|g',
        'app.gauges.load;env=prod;host=a:-2|g',
        'app.gauges.load;env=prod:+3|g|@0.25',
        'app.sets.users;env=prod;team=x:bob|s',
        'app.timers.rt;env=prod;route=/a:12.5|ms|@0.5',
        'app.timers.rt;env=prod:1000.0|ms',
        'app.raw;env=prod;k=v:7|h',
    ],
}


def always_kept() -> float:
    """A random source under every rate used here."""
    return 0.1


async def connector_lines(calls: Callable[[Connector], None], expected: int,
                          **options: typing.Any) -> list[str]:
    """Run `calls` on a UDP connector and return the lines its server received."""
    async with StatsdServer('udp') as server:
        connector = Connector(server.host, server.port, ip_protocol=UDP,
                              random_source=always_kept, **options)
        await asyncio.wait_for(connector.start(), TIMEOUT)
        calls(connector)
        await asyncio.wait_for(connector.stop(), TIMEOUT)
        lines = await server.wait_for_lines(expected)
        return [line.decode() for line in lines]


@pytest.mark.parametrize('dialect', sorted(SYNC_LINES))
def test_sync_client_dialect(make_client: Callable[..., StatsClient],
                             receiver: UDPReceiver, dialect: str) -> None:
    """Each dialect puts constant and call tags, and the sample rate, where it belongs."""
    client = make_client(prefix='app', tag_dialect=dialect, tags=CONSTANT,
                         random_source=always_kept)
    sync_calls(client)
    received = [receiver.datagram().decode() for _ in SYNC_LINES[dialect]]
    assert received == SYNC_LINES[dialect]
    receiver.assert_quiet(client)


@pytest.mark.parametrize('dialect', sorted(SYNC_LINES))
def test_sync_pipeline_and_tcp_dialect(dialect: str) -> None:
    """Tags are the same through a pipeline over TCP."""
    with ThreadedStatsdServer('tcp') as server:
        client = TCPStatsClient('127.0.0.1', server.port, prefix='app', tag_dialect=dialect,
                                tags=CONSTANT, random_source=always_kept)
        try:
            with client.pipeline() as pipe:
                sync_calls(pipe)
            expected = '\n'.join(SYNC_LINES[dialect]).split('\n')
            lines = server.wait_for_lines(len(expected))
        finally:
            client.close()
    assert [line.decode() for line in lines] == expected


@pytest.mark.parametrize('dialect', sorted(CONNECTOR_LINES))
async def test_connector_dialect(dialect: str) -> None:
    """The Connector renders tags exactly as the synchronous clients do, plus its segments."""
    lines = await connector_lines(connector_calls, len(CONNECTOR_LINES[dialect]),
                                  prefix='app', tag_dialect=dialect, tags=CONSTANT)
    assert lines == CONNECTOR_LINES[dialect]


async def test_connector_without_tags() -> None:
    """With no dialect nothing is appended, and call tags are refused."""

    def calls(c: Connector) -> None:
        c.incr('plain', rate=0.5)
        with pytest.raises(ConfigurationError, match='tag_dialect'):
            c.incr('tagged', tags={'a': 'b'})

    assert await connector_lines(calls, 1, prefix='app') == ['app.counters.plain:1|c|@0.5']


# -- escaping -------------------------------------------------------------------

ESCAPED = {
    # Only ',' and the protocol characters are replaced for DogStatsD.
    'dogstatsd': 'x:1|c|#a b:c_d,k_e_y_=:v a;l~!^___,1:2.5',
    # Line-protocol separators ',', '=' and ' ' go too.
    'influxdb': 'x,a_b=c_d,k_e_y__=v_a;l~!^___,1=2.5:1|c',
    # Graphite also reserves ';', '=', ' ' and the query operators '~!^'.
    'graphite': 'x;a_b=c,d;k_e_y,_=v_a_l______;1=2.5:1|c',
}


@pytest.mark.parametrize('dialect', sorted(ESCAPED))
def test_forbidden_characters_are_replaced(make_client: Callable[..., StatsClient],
                                           receiver: UDPReceiver, dialect: str) -> None:
    """Each dialect replaces the characters it cannot carry with '_', keys and values."""
    client = make_client(tag_dialect=dialect, tags={'a b': 'c,d'})
    client.incr('x', tags={'k:e|y,=': 'v a;l~!^#@\n', 1: 2.5})
    assert receiver.datagram().decode() == ESCAPED[dialect]


@pytest.mark.parametrize('dialect', sorted(ESCAPED))
async def test_connector_escapes_alike(dialect: str) -> None:
    """The Connector escapes tags with the same rules (inject_metric adds no type segment)."""
    lines = await connector_lines(
        lambda c: c.inject_metric('x', '1', 'c', tags={'k:e|y,=': 'v a;l~!^#@\n', 1: 2.5}),
        1, tag_dialect=dialect, tags={'a b': 'c,d'},
    )
    assert lines == [ESCAPED[dialect]]


@pytest.mark.parametrize(('dialect', 'expected'), [
    ('dogstatsd', b'x:1|c|#path:/a b_c'),
    ('influxdb', b'x,path=/a_b_c:1|c'),
    ('graphite', b'x;path=/a_b,c:1|c'),
])
def test_documented_escaping_example(make_client: Callable[..., StatsClient],
                                     receiver: UDPReceiver, dialect: str,
                                     expected: bytes) -> None:
    """The example in docs/tags.rst holds."""
    make_client(tag_dialect=dialect).incr('x', tags={'path': '/a b,c'})
    assert receiver.datagram() == expected


def test_dogstatsd_tag_without_value(make_client: Callable[..., StatsClient],
                                     receiver: UDPReceiver) -> None:
    """A DogStatsD tag whose value is None is sent as a bare key."""
    client = make_client(tag_dialect='dogstatsd', tags={'canary': None})
    client.incr('x', tags={'beta': None, 'k': 'v'})
    assert receiver.datagram() == b'x:1|c|#canary,beta,k:v'


@pytest.mark.parametrize('dialect', sorted(ESCAPED))
def test_call_tags_do_not_stick(make_client: Callable[..., StatsClient],
                                receiver: UDPReceiver, dialect: str) -> None:
    """A tagged call does not leak its tags into the next untagged one."""
    client = make_client(tag_dialect=dialect)
    client.incr('x', tags={'k': 'v'})
    client.incr('x')
    client.incr('x', tags={})
    lines = [receiver.datagram() for _ in range(3)]
    assert lines[1] == lines[2] == b'x:1|c'
    assert lines[0] != lines[1]


@pytest.mark.parametrize('dialect', sorted(ESCAPED))
def test_empty_call_tag_key_is_dropped(make_client: Callable[..., StatsClient],
                                       receiver: UDPReceiver, dialect: str) -> None:
    """A call tag with an empty key is left out; the metric and other tags stay."""
    client = make_client(tag_dialect=dialect, tags=CONSTANT)
    client.incr('x', tags={'': 'lost', 'k': 'v'})
    client.incr('x', tags={'': 'lost'})
    sep, pair = {'dogstatsd': (',', ':'), 'influxdb': (',', '='), 'graphite': (';', '=')}[dialect]
    first, second = receiver.datagram().decode(), receiver.datagram().decode()
    assert f'env{pair}prod{sep}k{pair}v' in first
    assert 'lost' not in first + second
    assert f'env{pair}prod' in second
    assert not second.endswith((',', ';', '#'))


@pytest.mark.parametrize(('dialect', 'expected'), [
    ('dogstatsd', b'x:1|c'),
    ('influxdb', b'x:1|c'),
    ('graphite', b'x:1|c'),
])
def test_only_empty_call_tag_keys(make_client: Callable[..., StatsClient],
                                  receiver: UDPReceiver, dialect: str, expected: bytes) -> None:
    """When every call tag is dropped and there are no constant tags, no separator is left."""
    make_client(tag_dialect=dialect).incr('x', tags={'': 'lost'})
    assert receiver.datagram() == expected


@pytest.mark.parametrize(('dialect', 'name', 'expected'), [
    ('influxdb', 'a,b', b'a_b,k=v:1|c'),
    ('graphite', 'a;b', b'a_b;k=v:1|c'),
])
def test_dialect_separators_in_names(make_client: Callable[..., StatsClient],
                                     receiver: UDPReceiver, dialect: str, name: str,
                                     expected: bytes) -> None:
    """A name must not contain the separator that starts the tags of its dialect."""
    make_client(tag_dialect=dialect).incr(name, tags={'k': 'v'})
    assert receiver.datagram() == expected


# -- configuration errors ---------------------------------------------------------

@pytest.mark.parametrize(('options', 'message'), [
    ({'tag_dialect': 'statsite'}, 'tag_dialect must be one of'),
    ({'tags': {'a': 'b'}}, 'constant tags need a tag dialect'),
    ({'tag_dialect': 'influxdb', 'tags': {'': 'b'}}, 'must not be empty'),
])
def test_bad_tag_configuration(options: dict[str, typing.Any], message: str) -> None:
    """Bad dialects and constant tags are refused when a client is built."""
    with pytest.raises(ConfigurationError, match=message):
        TCPStatsClient('127.0.0.1', 8125, **options)
    with pytest.raises(ConfigurationError, match=message):
        Connector('127.0.0.1', 8125, **options)


def test_tags_without_dialect_raise_before_sampling_decides(
        make_client: Callable[..., StatsClient], receiver: UDPReceiver) -> None:
    """A kept sampled call with tags and no dialect raises like an unsampled one."""
    client = make_client(random_source=always_kept)
    with pytest.raises(ConfigurationError, match='tag_dialect'):
        client.timing('x', 1, 0.5, tags={'a': 'b'})
    receiver.assert_quiet(client)
