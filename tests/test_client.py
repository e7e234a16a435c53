"""Tests of the synchronous clients against real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import decimal
import inspect
import itertools
import logging
import os
import pathlib
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from sprockets_statsd import client as client_module
from sprockets_statsd import metrics
from sprockets_statsd.client import (
    MAX_UDP_PAYLOAD,
    Pipeline,
    StatsClient,
    StatsClientBase,
    TCPStatsClient,
    UnixDatagramStatsClient,
    UnixSocketStatsClient,
    from_env,
)
from sprockets_statsd.errors import ConfigurationError
from tests.helpers import ThreadedStatsdServer, UDPReceiver

TIMEOUT = 10.0


def ipv6_available() -> bool:
    """Whether ::1 can be bound here."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(('::1', 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not ipv6_available(), reason='no IPv6 loopback')


def sequence(*values: float) -> Callable[[], float]:
    """A random source that returns `values` in turn."""
    return iter(values).__next__


# -- the wire format of every method ---------------------------------------------

WIRE = [
    ('incr', lambda c: c.incr('foo'), b'foo:1|c'),
    ('incr count', lambda c: c.incr('foo', 10), b'foo:10|c'),
    ('incr float', lambda c: c.incr('foo', 1.5), b'foo:1.5|c'),
    ('incr negative', lambda c: c.incr('foo', -2), b'foo:-2|c'),
    ('incr decimal', lambda c: c.incr('foo', decimal.Decimal('2.5')), b'foo:2.5|c'),
    ('decr', lambda c: c.decr('foo'), b'foo:-1|c'),
    ('decr count', lambda c: c.decr('foo', 5), b'foo:-5|c'),
    ('decr float', lambda c: c.decr('foo', 2.5), b'foo:-2.5|c'),
    ('decr negative', lambda c: c.decr('foo', -3), b'foo:3|c'),
    ('gauge', lambda c: c.gauge('foo', 70), b'foo:70|g'),
    ('gauge float', lambda c: c.gauge('foo', 0.25), b'foo:0.25|g'),
    ('gauge zero', lambda c: c.gauge('foo', 0), b'foo:0|g'),
    ('gauge delta up', lambda c: c.gauge('foo', 1, delta=True), b'foo:+1|g'),
    ('gauge delta down', lambda c: c.gauge('foo', -3, delta=True), b'foo:-3|g'),
    ('gauge delta positional', lambda c: c.gauge('foo', 4, 1, True), b'foo:+4|g'),
    ('gauge negative', lambda c: c.gauge('foo', -5), b'foo:0|g\nfoo:-5|g'),
    ('set', lambda c: c.set('users', 42), b'users:42|s'),
    ('set text', lambda c: c.set('users', 'alice'), b'users:alice|s'),
    ('timing', lambda c: c.timing('foo', 10), b'foo:10|ms'),
    ('timing float', lambda c: c.timing('foo', 1.5), b'foo:1.5|ms'),
    ('timing timedelta', lambda c: c.timing('foo', datetime.timedelta(seconds=1.5)),
     b'foo:1500.0|ms'),
    ('timing small timedelta', lambda c: c.timing('foo', datetime.timedelta(milliseconds=2)),
     b'foo:2.0|ms'),
    ('non-ascii name', lambda c: c.incr('caf\u00e9.\u00fcber'), 'caf\u00e9.\u00fcber:1|c'.encode()),
    ('protocol characters', lambda c: c.incr('a:b|c@d#e\nf'), b'a_b_c_d_e_f:1|c'),
    ('lone surrogate', lambda c: c.incr('bad\ud800name'), b'bad?name:1|c'),
    ('lone surrogate value', lambda c: c.set('x', 'bad\udc80'), b'x:bad?|s'),
    ('number as name', lambda c: c.incr(404), b'404:1|c'),
]


@pytest.mark.parametrize(('call', 'expected'), [case[1:] for case in WIRE],
                         ids=[case[0] for case in WIRE])
def test_wire_format(make_client: Callable[..., StatsClient], receiver: UDPReceiver,
                     call: Callable[[StatsClient], None], expected: bytes) -> None:
    """Each method sends the pystatsd line, in one datagram and nothing else."""
    client = make_client()
    call(client)
    assert receiver.datagram() == expected
    receiver.assert_quiet(client)


@pytest.mark.parametrize(('prefix', 'expected'), [
    ('app', b'app.foo:1|c'),
    ('app.web', b'app.web.foo:1|c'),
    (None, b'foo:1|c'),
    ('', b'foo:1|c'),
    ('a:b', b'a_b.foo:1|c'),
])
def test_prefix(make_client: Callable[..., StatsClient], receiver: UDPReceiver,
                prefix: str | None, expected: bytes) -> None:
    """The prefix is joined with a dot; none or empty means no prefix."""
    make_client(prefix=prefix).incr('foo')
    assert receiver.datagram() == expected


def test_prefix_on_every_type(make_client: Callable[..., StatsClient],
                              receiver: UDPReceiver) -> None:
    """There is no per-type segment: every type shares {prefix}.{stat}."""
    client = make_client(prefix='p')
    client.incr('a')
    client.gauge('a', 1)
    client.timing('a', 2)
    client.set('a', 3)
    assert receiver.datagrams(4) == [b'p.a:1|c', b'p.a:1|g', b'p.a:2|ms', b'p.a:3|s']


# -- sampling --------------------------------------------------------------------

SAMPLED = [
    ('incr', lambda c, r: c.incr('foo', 1, r), b'foo:1|c|@0.5'),
    ('decr', lambda c, r: c.decr('foo', 2, r), b'foo:-2|c|@0.5'),
    ('gauge', lambda c, r: c.gauge('foo', 3, r), b'foo:3|g|@0.5'),
    ('gauge delta', lambda c, r: c.gauge('foo', 3, r, delta=True), b'foo:+3|g|@0.5'),
    ('gauge negative', lambda c, r: c.gauge('foo', -3, r), b'foo:0|g|@0.5\nfoo:-3|g|@0.5'),
    ('set', lambda c, r: c.set('foo', 'x', r), b'foo:x|s|@0.5'),
    ('timing', lambda c, r: c.timing('foo', 7, r), b'foo:7|ms|@0.5'),
]


@pytest.mark.parametrize(('call', 'expected'), [case[1:] for case in SAMPLED],
                         ids=[case[0] for case in SAMPLED])
def test_sampling(make_client: Callable[..., StatsClient], receiver: UDPReceiver,
                  call: Callable[[StatsClient, float], None], expected: bytes) -> None:
    """A sampled metric goes out when random() < rate, with |@rate; else not at all."""
    client = make_client(random_source=sequence(0.49, 0.5, 0.99, 0.0))
    for _ in range(4):
        call(client, 0.5)
    assert receiver.datagrams(2 * expected.count(b'\n') + 2) == [expected, expected]
    receiver.assert_quiet(client)
    assert client.dropped == 0


def test_sampling_uses_the_random_source_only_when_sampled(
        make_client: Callable[..., StatsClient], receiver: UDPReceiver) -> None:
    """rate=1 never calls the random source, and sends no |@ suffix."""
    client = make_client(random_source=sequence())  # raises if called
    client.incr('foo', rate=1)
    client.incr('foo', rate=1.0)
    assert receiver.datagrams(2) == [b'foo:1|c', b'foo:1|c']


def test_sampling_distribution(make_client: Callable[..., StatsClient],
                               receiver: UDPReceiver) -> None:
    """With the default random source about `rate` of the calls are sent."""
    client = make_client()
    for _ in range(2000):
        client.incr('foo', rate=0.25)
    client.set('quiet.marker', 'end')
    sent = 0
    while (datagram := receiver.datagram()) != b'quiet.marker:end|s':
        assert datagram == b'foo:1|c|@0.25'
        sent += 1
    assert 300 < sent < 700  # 500 expected; this band is > 8 standard deviations wide


# -- invalid values are dropped, counted and logged ----------------------------

INVALID = [
    ('nan count', lambda c: c.incr('foo', float('nan'))),
    ('inf gauge', lambda c: c.gauge('foo', float('inf'))),
    ('bool count', lambda c: c.incr('foo', True)),
    ('bool decr', lambda c: c.decr('foo', True)),
    ('text decr', lambda c: c.decr('foo', 'x')),
    ('text incr', lambda c: c.incr('foo', '1')),
    ('bool gauge', lambda c: c.gauge('foo', False)),
    ('nan timing', lambda c: c.timing('foo', float('nan'))),
    ('negative timing', lambda c: c.timing('foo', -1)),
    ('text timing', lambda c: c.timing('foo', 'slow')),
    ('rate zero', lambda c: c.incr('foo', rate=0)),
    ('rate negative', lambda c: c.gauge('foo', 1, rate=-0.5)),
    ('rate above one', lambda c: c.incr('foo', rate=1.5)),
    ('rate nan', lambda c: c.set('foo', 1, rate=float('nan'))),
    ('rate false', lambda c: c.timing('foo', 1, rate=False)),
    ('rate text', lambda c: c.incr('foo', rate='0.5')),
    ('kept rate above one', lambda c: c.set('foo', 1, rate=1.5)),
]


@pytest.mark.parametrize('call', [case[1] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_values_are_dropped(make_client: Callable[..., StatsClient],
                                    receiver: UDPReceiver,
                                    call: Callable[[StatsClient], None]) -> None:
    """An unsendable value or rate is not sent, does not raise, and is counted."""
    client = make_client(random_source=sequence(0.1, 0.9, 0.9))
    call(client)
    assert (client.dropped_invalid, client.dropped_send_failed, client.dropped) == (1, 0, 1)
    receiver.assert_quiet(client)


def test_invalid_values_are_logged_once_per_interval(
        make_client: Callable[..., StatsClient], caplog: pytest.LogCaptureFixture) -> None:
    """A burst of invalid metrics logs one warning, not one per metric."""
    client = make_client()
    with caplog.at_level(logging.WARNING, logger='sprockets_statsd.client'):
        for _ in range(50):
            client.incr('foo', float('nan'))
    assert client.dropped_invalid == 50
    assert [r.getMessage() for r in caplog.records] == [
        "dropping metric 'foo': nan is not a finite number"
    ]


def test_tags_without_a_dialect_raise(make_client: Callable[..., StatsClient],
                                      receiver: UDPReceiver) -> None:
    """Tags given to a client without a dialect are a programming error."""
    client = make_client()
    for call in (lambda: client.incr('foo', tags={'a': 'b'}),
                 lambda: client.gauge('foo', 1, tags={'a': 'b'}),
                 lambda: client.timing('foo', 1, tags={'a': 'b'}),
                 lambda: client.set('foo', 1, tags={'a': 'b'})):
        with pytest.raises(ConfigurationError, match='tag_dialect'):
            call()
    with pytest.raises(ConfigurationError, match='tag dialect'):
        make_client(tags={'a': 'b'})
    receiver.assert_quiet(client)


# -- UDP transport ---------------------------------------------------------------

def test_send_errors_are_swallowed_and_counted(
        make_client: Callable[..., StatsClient], caplog: pytest.LogCaptureFixture) -> None:
    """After close() metrics are dropped and counted, never raised."""
    client = make_client()
    client.close()
    client.close()  # idempotent
    with caplog.at_level(logging.WARNING, logger='sprockets_statsd.client'):
        client.incr('foo')
        client.gauge('foo', -1)
        with client.pipeline() as pipe:
            pipe.incr('bar')
    assert (client.dropped_send_failed, client.dropped_invalid, client.dropped) == (3, 0, 3)
    assert len(caplog.records) == 1
    assert 'statsd send to' in caplog.records[0].getMessage()


def test_localhost_is_ipv4_unless_ipv6_is_asked_for() -> None:
    """ipv6=False resolves localhost in AF_INET: an IPv4-only server gets the metric."""
    with ThreadedStatsdServer('udp') as server:
        client = StatsClient('localhost', server.port)
        try:
            client.incr('family')
            assert server.wait_for_lines(1) == [b'family:1|c']
            assert client._addr[0] == '127.0.0.1'
            assert client._sock.family == socket.AF_INET
        finally:
            client.close()


@needs_ipv6
def test_ipv6() -> None:
    """ipv6=True resolves in AF_INET6 and sends over IPv6."""
    with ThreadedStatsdServer('udp', host='::1') as server:
        client = StatsClient('::1', server.port, ipv6=True)
        try:
            client.incr('six')
            assert server.wait_for_lines(1) == [b'six:1|c']
            assert client._sock.family == socket.AF_INET6
        finally:
            client.close()


def test_address_family_mismatch_raises() -> None:
    """An address of the other family cannot be used: the resolver error is raised."""
    with pytest.raises(socket.gaierror):
        StatsClient('::1', 8125)
    with pytest.raises(socket.gaierror):
        StatsClient('127.0.0.1', 8125, ipv6=True)


@pytest.mark.parametrize('size', [0, -1, MAX_UDP_PAYLOAD + 1, True, '512', 512.0])
def test_bad_maxudpsize(size: object) -> None:
    """maxudpsize must be an int from 1 to 65507."""
    with pytest.raises(ConfigurationError, match='maxudpsize'):
        StatsClient('127.0.0.1', 8125, maxudpsize=size)  # type: ignore[arg-type]


@pytest.mark.parametrize('port', [0, -1, 65536, True, 'http', 1.5, None])
def test_bad_port(port: object) -> None:
    """The port must be from 1 to 65535, for every client."""
    with pytest.raises(ConfigurationError, match='port'):
        StatsClient('127.0.0.1', port)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match='port'):
        TCPStatsClient('127.0.0.1', port)  # type: ignore[arg-type]


def test_port_as_text(receiver: UDPReceiver) -> None:
    """A decimal string port is accepted, as pystatsd accepts it."""
    client = StatsClient('127.0.0.1', str(receiver.port))  # type: ignore[arg-type]
    try:
        client.incr('text.port')
        assert receiver.datagram() == b'text.port:1|c'
    finally:
        client.close()


def test_increment_caches_are_bounded(make_client: Callable[..., StatsClient],
                                      receiver: UDPReceiver,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Names beyond the cache bound are formatted per call and still sent."""
    monkeypatch.setattr(metrics, 'DEFAULT_CACHE_SIZE', 2)
    client = make_client()
    names = [f'name.{i}' for i in range(5)]
    for _ in range(2):
        for name in names:
            client.incr(name)
        with client.pipeline() as pipe:
            for name in names:
                pipe.incr(name)
    expected = [f'{name}:1|c'.encode() for name in names]
    assert receiver.datagrams(20) == [*expected, b'\n'.join(expected)] * 2
    assert len(client._payloads) == len(client._increments) == 2


def test_many_threads_share_one_client(make_client: Callable[..., StatsClient],
                                       receiver: UDPReceiver) -> None:
    """StatsClient is safe to use from many threads: every metric arrives whole."""
    client = make_client()

    def work(number: int) -> None:
        for i in range(50):
            client.incr(f'thread.{number}', i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    received = receiver.datagrams(400)
    expected = {f'thread.{n}:{i}|c'.encode() for n in range(8) for i in range(50)}
    assert sorted(received) == sorted(expected)


# -- pipelines -------------------------------------------------------------------

def test_pipeline_sends_on_exit_in_one_datagram(make_client: Callable[..., StatsClient],
                                                receiver: UDPReceiver) -> None:
    """A pipeline sends nothing until the block ends, then everything at once, in order."""
    client = make_client(prefix='p')
    with client.pipeline() as pipe:
        assert isinstance(pipe, Pipeline)
        pipe.incr('a')
        pipe.decr('b', 2)
        pipe.gauge('c', -1)
        pipe.gauge('d', 3, delta=True)
        pipe.set('e', 'x')
        pipe.timing('f', 2.5)
        with pipe.timer('g'):
            pass
        receiver.assert_quiet(client)
    datagram = receiver.datagram()
    lines = datagram.split(b'\n')
    assert lines[:7] == [b'p.a:1|c', b'p.b:-2|c', b'p.c:0|g', b'p.c:-1|g', b'p.d:+3|g',
                         b'p.e:x|s', b'p.f:2.5|ms']
    assert ms_of(lines[7], b'p.g') >= 0
    assert len(lines) == 8
    receiver.assert_quiet(client)


def test_pipeline_send_and_reuse(make_client: Callable[..., StatsClient],
                                 receiver: UDPReceiver) -> None:
    """send() empties the pipeline, which can be filled again; an empty send sends nothing."""
    client = make_client()
    pipe = client.pipeline()
    pipe.send()
    pipe.incr('a')
    pipe.send()
    pipe.send()
    pipe.incr('b')
    pipe.send()
    assert receiver.datagrams(2) == [b'a:1|c', b'b:1|c']
    receiver.assert_quiet(client)
    pipe.close()  # a pipeline owns no socket: nothing happens


def test_pipeline_sends_when_the_block_raises(make_client: Callable[..., StatsClient],
                                              receiver: UDPReceiver) -> None:
    """Leaving the block with an exception still sends, and the exception propagates."""
    client = make_client()
    def fill_and_fail() -> None:
        with client.pipeline() as pipe:
            pipe.incr('a')
            raise KeyError('boom')

    with pytest.raises(KeyError):
        fill_and_fail()
    assert receiver.datagram() == b'a:1|c'


def test_nested_pipeline_hands_its_stats_to_the_outer_one(
        make_client: Callable[..., StatsClient], receiver: UDPReceiver) -> None:
    """An inner pipeline adds its stats to the outer one, which sends them all."""
    client = make_client()
    with client.pipeline() as outer:
        outer.incr('a')
        with outer.pipeline() as inner:
            assert isinstance(inner, Pipeline)
            inner.incr('b')
            with inner.pipeline() as innermost:
                innermost.incr('c')
            inner.incr('d')
        receiver.assert_quiet(client)
        outer.incr('e')
    assert receiver.datagram() == b'a:1|c\nb:1|c\nc:1|c\nd:1|c\ne:1|c'


def test_pipeline_skips_sampled_out_and_invalid_stats(
        make_client: Callable[..., StatsClient], receiver: UDPReceiver) -> None:
    """Sampled-out stats are not collected; invalid ones are counted on the client."""
    client = make_client(random_source=sequence(0.9, 0.1))
    with client.pipeline() as pipe:
        pipe.incr('out', rate=0.5)
        pipe.incr('in', rate=0.5)
        pipe.incr('nan', float('nan'))
        pipe.timing('negative', -5)
        assert pipe.dropped_invalid == 2
    assert receiver.datagram() == b'in:1|c|@0.5'
    assert client.dropped_invalid == 2


def test_pipeline_packs_datagrams_by_bytes(make_client: Callable[..., StatsClient],
                                           receiver: UDPReceiver) -> None:
    """No datagram exceeds maxudpsize bytes (UTF-8), and every stat arrives once, in order."""
    client = make_client(maxudpsize=200)
    names = [f'\u00e9t\u00e9.\u65e5\u672c.{i}' for i in range(300)]
    with client.pipeline() as pipe:
        for i, name in enumerate(names):
            if i % 50 == 7:
                pipe.gauge(name, -i)  # two lines that must stay together
            else:
                pipe.incr(name, i)
    expected = []
    for i, name in enumerate(names):
        if i % 50 == 7:
            expected.append(f'{name}:0|g\n{name}:-{i}|g'.encode())
        else:
            expected.append(f'{name}:{i}|c'.encode())
    datagrams = receiver.datagrams(sum(e.count(b'\n') + 1 for e in expected))
    assert all(len(d) <= 200 for d in datagrams)
    assert b'\n'.join(datagrams) == b'\n'.join(expected)
    # Packed, not one per stat: the lines are about 25 bytes each.
    assert len(datagrams) < len(expected) / 4
    # Each datagram is as full as whole stats allow.
    for datagram, following in itertools.pairwise(datagrams):
        first = following.split(b'\n')[0]
        if first.endswith(b':0|g'):
            first = b'\n'.join(following.split(b'\n')[:2])
        assert len(datagram) + 1 + len(first) > 200
    receiver.assert_quiet(client)


def test_pipeline_fills_a_datagram_exactly(make_client: Callable[..., StatsClient],
                                          receiver: UDPReceiver) -> None:
    """Stats that add up to exactly maxudpsize bytes share one datagram."""
    client = make_client(maxudpsize=21)
    with client.pipeline() as pipe:
        pipe.incr('abcd')   # 'abcd:1|c' is 8 bytes
        pipe.incr('abcdefg')  # + newline + 11 bytes = 20
        pipe.incr('x')  # would make 28: next datagram
    assert receiver.datagrams(3) == [b'abcd:1|c\nabcdefg:1|c', b'x:1|c']
    with client.pipeline() as pipe:
        pipe.incr('abcd')
        pipe.incr('abcdefgh')  # 8 + 1 + 12 = 21 bytes exactly
    assert receiver.datagram() == b'abcd:1|c\nabcdefgh:1|c'


def test_pipeline_sends_an_oversized_stat_alone(make_client: Callable[..., StatsClient],
                                               receiver: UDPReceiver) -> None:
    """A stat longer than maxudpsize is sent in a datagram of its own."""
    client = make_client(maxudpsize=64)
    long_name = 'x' * 100
    with client.pipeline() as pipe:
        pipe.incr('a')
        pipe.incr(long_name)
        pipe.incr('b')
    assert receiver.datagrams(3) == [b'a:1|c', f'{long_name}:1|c'.encode(), b'b:1|c']


def test_pipeline_packs_lone_surrogates_safely(make_client: Callable[..., StatsClient],
                                              receiver: UDPReceiver) -> None:
    """A name that cannot be encoded is renamed, also when a pipeline is split."""
    client = make_client(maxudpsize=30)
    with client.pipeline() as pipe:
        pipe.incr('ok.one')
        pipe.incr('bad\udc80one')
        pipe.incr('ok.two.longer.name')
    assert receiver.datagrams(3) == [b'ok.one:1|c\nbad?one:1|c', b'ok.two.longer.name:1|c']


# -- timers ----------------------------------------------------------------------

def ms_of(line: bytes, name: bytes) -> float:
    """The milliseconds of a timing line for `name`."""
    assert line.startswith(name + b':'), line
    assert line.endswith(b'|ms'), line
    return float(line[len(name) + 1:-3])


def test_timer_context_manager(make_client: Callable[..., StatsClient],
                               receiver: UDPReceiver) -> None:
    """A timer block sends its duration in milliseconds; timer.ms holds the same value."""
    client = make_client(prefix='p')
    with client.timer('block') as timer:
        time.sleep(0.01)  # something to measure, not synchronisation
    line = receiver.datagram()
    assert ms_of(line, b'p.block') == timer.ms
    assert timer.ms is not None
    assert timer.ms >= 10.0


def test_timer_sends_when_the_block_raises(make_client: Callable[..., StatsClient],
                                           receiver: UDPReceiver) -> None:
    """A block left by an exception is still timed."""
    client = make_client()
    with pytest.raises(ValueError, match='x'), client.timer('fails'):
        raise ValueError('x')
    assert ms_of(receiver.datagram(), b'fails') >= 0


def test_timer_decorator(make_client: Callable[..., StatsClient],
                         receiver: UDPReceiver) -> None:
    """A decorated function is timed on every call, keeps its name and its result."""
    client = make_client(random_source=sequence(0.1, 0.1))

    @client.timer('decorated', rate=0.5)
    def double(value: int) -> int:
        """Double it."""
        if value < 0:
            raise ValueError(value)
        return value * 2

    assert double(21) == 42
    with pytest.raises(ValueError, match='-1'):
        double(-1)
    assert double.__name__ == 'double'
    assert double.__doc__ == 'Double it.'
    for line in receiver.datagrams(2):
        assert line.startswith(b'decorated:')
        assert line.endswith(b'|ms|@0.5')


async def test_timer_decorates_coroutine_functions(make_client: Callable[..., StatsClient],
                                                   receiver: UDPReceiver) -> None:
    """An async function stays a coroutine function and is timed to its end."""
    client = make_client()

    @client.timer('coro')
    async def slow(value: str) -> str:
        await asyncio.sleep(0.01)
        return value

    assert inspect.iscoroutinefunction(slow)
    assert await asyncio.wait_for(slow('done'), TIMEOUT) == 'done'
    assert ms_of(receiver.datagram(), b'coro') >= 10.0


def test_timer_decorator_from_many_threads(make_client: Callable[..., StatsClient],
                                           receiver: UDPReceiver) -> None:
    """8 threads x 50 calls through one decorated function send 400 timings."""
    client = make_client()
    calls = []

    @client.timer('threaded', tags=None)
    def work(number: int) -> None:
        calls.append(number)

    def run() -> None:
        for i in range(50):
            work(i)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    lines = receiver.datagrams(400)
    assert len(lines) == 400 == len(calls)
    assert all(ms_of(line, b'threaded') >= 0 for line in lines)
    receiver.assert_quiet(client)


def test_timer_object_api(make_client: Callable[..., StatsClient],
                          receiver: UDPReceiver) -> None:
    """start/stop/send follow pystatsd, with its RuntimeErrors."""
    client = make_client()
    timer = client.timer('manual')
    assert timer.ms is None
    with pytest.raises(RuntimeError):
        timer.stop()
    with pytest.raises(RuntimeError):
        timer.send()
    assert timer.start() is timer
    assert timer.stop(send=False) is timer
    receiver.assert_quiet(client)
    assert timer.ms is not None
    timer.send()
    assert ms_of(receiver.datagram(), b'manual') == timer.ms
    with pytest.raises(RuntimeError):
        timer.send()
    timer.start().stop()  # reusable
    assert ms_of(receiver.datagram(), b'manual') == timer.ms


def test_timer_in_a_pipeline(make_client: Callable[..., StatsClient],
                             receiver: UDPReceiver) -> None:
    """A pipeline's timer records into the pipeline, sent with the rest."""
    client = make_client()
    with client.pipeline() as pipe:
        with pipe.timer('inner'):
            pass
        pipe.incr('after')
        receiver.assert_quiet(client)
    first, second = receiver.datagram().split(b'\n')
    assert ms_of(first, b'inner') >= 0
    assert second == b'after:1|c'


# -- TCP -------------------------------------------------------------------------

@pytest.fixture
def tcp_server() -> Iterator[ThreadedStatsdServer]:
    with ThreadedStatsdServer('tcp') as server:
        yield server


@pytest.fixture
def tcp_client(tcp_server: ThreadedStatsdServer) -> Iterator[TCPStatsClient]:
    client = TCPStatsClient('127.0.0.1', tcp_server.port, prefix='tcp')
    yield client
    client.close()


def test_tcp_lines(tcp_client: TCPStatsClient, tcp_server: ThreadedStatsdServer) -> None:
    """Over TCP every metric is one newline-terminated line, negative gauges included."""
    tcp_client.incr('a')
    tcp_client.gauge('g', -2)
    tcp_client.timing('t', datetime.timedelta(milliseconds=3))
    tcp_client.set('s', '\u00e9')
    with tcp_client.pipeline() as pipe:
        pipe.incr('p1')
        pipe.decr('p2')
    assert tcp_server.wait_for_lines(7) == [
        b'tcp.a:1|c', b'tcp.g:0|g', b'tcp.g:-2|g', b'tcp.t:3.0|ms', 'tcp.s:\u00e9|s'.encode(),
        b'tcp.p1:1|c', b'tcp.p2:-1|c',
    ]
    assert tcp_server.connections == 1


def test_tcp_connects_lazily(tcp_client: TCPStatsClient,
                             tcp_server: ThreadedStatsdServer) -> None:
    """Nothing connects until the first metric (or connect())."""
    assert tcp_client._sock is None
    with tcp_client.pipeline():
        pass  # an empty pipeline sends nothing
    assert tcp_client._sock is None
    tcp_client.incr('first')
    assert tcp_server.wait_for_lines(1) == [b'tcp.first:1|c']
    assert tcp_server.connections == 1


def test_tcp_connect_close_reconnect(tcp_client: TCPStatsClient,
                                     tcp_server: ThreadedStatsdServer) -> None:
    """connect, reconnect and close behave as pystatsd documents."""
    tcp_client.connect()
    tcp_client.incr('one')
    tcp_server.wait_for_lines(1)
    assert tcp_server.connections == 1
    tcp_client.reconnect()
    tcp_client.incr('two')
    tcp_server.wait_for_lines(2)
    assert tcp_server.connections == 2
    tcp_client.close()
    tcp_client.close()
    assert tcp_client._sock is None
    tcp_client.incr('three')  # connects again by itself
    # Each connection is read by its own server thread: wait before the next
    # one so that the order of the lines is defined.
    tcp_server.wait_for_lines(3)
    tcp_client.connect()  # replaces the open connection
    tcp_client.incr('four')
    assert tcp_server.wait_for_lines(4) == [b'tcp.one:1|c', b'tcp.two:1|c', b'tcp.three:1|c',
                                            b'tcp.four:1|c']
    assert tcp_server.connections == 4


def test_tcp_timeout_is_applied(tcp_server: ThreadedStatsdServer) -> None:
    """The timeout argument becomes the socket's timeout."""
    client = TCPStatsClient('localhost', tcp_server.port, timeout=2.5)
    try:
        client.connect()
        assert client._sock is not None
        assert client._sock.gettimeout() == 2.5
        assert client._sock.family == socket.AF_INET
    finally:
        client.close()


@contextlib.contextmanager
def unlistened_port() -> Iterator[socket.socket]:
    """A bound TCP socket that is not listening (yet): connections are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(('127.0.0.1', 0))
        yield sock
    finally:
        sock.close()


def test_tcp_connection_refused_then_server_appears() -> None:
    """With no listener connect() and metrics raise; once it listens, metrics flow."""
    with unlistened_port() as listener:
        client = TCPStatsClient('127.0.0.1', listener.getsockname()[1])
        try:
            with pytest.raises(ConnectionRefusedError):
                client.connect()
            with pytest.raises(ConnectionRefusedError):
                client.incr('refused')
            with pytest.raises(ConnectionRefusedError), client.pipeline() as pipe:
                pipe.incr('refused')
            assert client._sock is None
            listener.listen(1)
            listener.settimeout(TIMEOUT)
            client.incr('accepted')
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                assert conn.recv(100) == b'accepted:1|c\n'
        finally:
            client.close()


def test_tcp_broken_connection_raises_then_reconnects() -> None:
    """A reset connection raises from the metric call; the next call reconnects."""
    with unlistened_port() as listener:
        listener.listen(2)
        listener.settimeout(TIMEOUT)
        client = TCPStatsClient('127.0.0.1', listener.getsockname()[1])
        try:
            client.connect()
            first, _ = listener.accept()
            # Close with a reset (linger 0) so the client's next send fails.
            first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            first.close()
            deadline = time.monotonic() + TIMEOUT
            error: OSError | None = None
            while error is None and time.monotonic() < deadline:
                try:
                    client.incr('lost')
                except OSError as raised:  # the reset shows within a few sends
                    error = raised
            assert isinstance(error, (ConnectionResetError, BrokenPipeError)), error
            assert client._sock is None
            client.incr('again')
            second, _ = listener.accept()
            with second:
                second.settimeout(TIMEOUT)
                assert second.recv(100) == b'again:1|c\n'
        finally:
            client.close()


@needs_ipv6
def test_tcp_ipv6() -> None:
    """TCPStatsClient(ipv6=True) connects over IPv6."""
    with ThreadedStatsdServer('tcp', host='::1') as server:
        client = TCPStatsClient('::1', server.port, ipv6=True)
        try:
            client.incr('six')
            assert server.wait_for_lines(1) == [b'six:1|c']
        finally:
            client.close()


# -- Unix sockets ----------------------------------------------------------------

@pytest.fixture
def socket_dir() -> Iterator[pathlib.Path]:
    # tmp_path can exceed the ~107 byte limit of a Unix socket path.
    path = tempfile.mkdtemp(prefix='ss-', dir='/tmp')
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


def test_unix_socket_client(socket_dir: pathlib.Path) -> None:
    """UnixSocketStatsClient writes newline-terminated lines to a stream socket."""
    path = socket_dir / 'statsd.sock'
    with ThreadedStatsdServer('unix', path=os.fspath(path)) as server:
        client = UnixSocketStatsClient(path, prefix='unix', timeout=5)  # type: ignore[arg-type]
        try:
            client.incr('a')
            with client.pipeline() as pipe:
                pipe.gauge('b', 1)
                pipe.set('c', 2)
            server.wait_for_lines(3)  # before a second connection races the first
            client.reconnect()
            client.timing('d', 4)
            assert server.wait_for_lines(4) == [b'unix.a:1|c', b'unix.b:1|g', b'unix.c:2|s',
                                                b'unix.d:4|ms']
            assert client._sock is not None
            assert client._sock.gettimeout() == 5
        finally:
            client.close()


def test_unix_socket_missing(socket_dir: pathlib.Path) -> None:
    """A missing socket path raises from connect() and from a metric."""
    client = UnixSocketStatsClient(os.fspath(socket_dir / 'missing.sock'))
    with pytest.raises(FileNotFoundError):
        client.connect()
    with pytest.raises(FileNotFoundError):
        client.incr('x')
    client.close()


# -- configuration from the environment -----------------------------------------

def test_from_env(receiver: UDPReceiver) -> None:
    """STATSD_* variables configure the client; tags and the random source pass through."""
    client = from_env({
        'STATSD_HOST': '127.0.0.1', 'STATSD_PORT': str(receiver.port),
        'STATSD_PREFIX': 'env', 'STATSD_MAXUDPSIZE': '1432', 'STATSD_IPV6': 'false',
    }, tag_dialect='influxdb', tags={'svc': 'x'}, random_source=sequence(0.1))
    try:
        client.incr('hit', rate=0.5)
        assert receiver.datagram() == b'env.hit,svc=x:1|c|@0.5'
        assert client._maxudpsize == 1432
    finally:
        client.close()


def test_from_env_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset or empty variables take pystatsd's defaults; os.environ is the default source."""
    for name in ('STATSD_HOST', 'STATSD_PORT', 'STATSD_MAXUDPSIZE', 'STATSD_IPV6'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('STATSD_PREFIX', '')
    client = from_env()
    try:
        assert client._addr == ('127.0.0.1', 8125)
        assert client._maxudpsize == 512
        assert client._prefix is None
    finally:
        client.close()


@pytest.mark.parametrize(('environ', 'variable'), [
    ({'STATSD_PORT': 'http'}, 'STATSD_PORT'),
    ({'STATSD_PORT': '0'}, 'STATSD_PORT'),
    ({'STATSD_PORT': '65536'}, 'STATSD_PORT'),
    ({'STATSD_MAXUDPSIZE': 'big'}, 'STATSD_MAXUDPSIZE'),
    ({'STATSD_MAXUDPSIZE': '0'}, 'STATSD_MAXUDPSIZE'),
    ({'STATSD_MAXUDPSIZE': '65508'}, 'STATSD_MAXUDPSIZE'),
    ({'STATSD_IPV6': 'maybe'}, 'STATSD_IPV6'),
    ({'STATSD_HOST': '127.0.0.1', 'STATSD_IPV6': '1'}, 'STATSD_HOST'),
    ({'STATSD_HOST': '::1', 'STATSD_IPV6': 'no'}, 'STATSD_HOST'),
])
def test_from_env_rejects_bad_values(environ: dict[str, str], variable: str) -> None:
    """A bad value raises ConfigurationError naming the variable."""
    with pytest.raises(ConfigurationError, match=variable):
        from_env(environ)


def test_from_env_unix_stream_socket(socket_dir: pathlib.Path) -> None:
    """STATSD_HOST unix:/path (or an absolute path) builds the Unix stream
    client, as the Connector reads that host; the port is not needed."""
    path = os.fspath(socket_dir / 'statsd.sock')
    with ThreadedStatsdServer('unix', path=path) as server:
        for host in (f'unix:{path}', path):
            client = from_env({'STATSD_HOST': host, 'STATSD_PREFIX': 'env',
                               'STATSD_PORT': ''}, tag_dialect='dogstatsd', tags={'a': 1})
            try:
                assert isinstance(client, UnixSocketStatsClient)
                client.incr('hit')
            finally:
                client.close()
        assert server.wait_for_lines(2) == [b'env.hit:1|c|#a:1'] * 2


@pytest.mark.parametrize(('size', 'expected'), [(None, 8192), ('1000', 1000)])
def test_from_env_unix_datagram_socket(
    socket_dir: pathlib.Path, size: str | None, expected: int
) -> None:
    """STATSD_HOST unixgram:/path builds the Unix datagram client, its
    datagrams as large as STATSD_MAXUDPSIZE says (8192 by default)."""
    path = os.fspath(socket_dir / 'dsd.sock')
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(5)
        environ = {'STATSD_HOST': f'unixgram:{path}', 'STATSD_PREFIX': 'env'}
        if size is not None:
            environ['STATSD_MAXUDPSIZE'] = size
        client = from_env(environ, random_source=sequence(0.1))
        try:
            assert isinstance(client, UnixDatagramStatsClient)
            client.timing('t', 5, rate=0.5)
            assert server.recv(65536) == b'env.t:5|ms|@0.5'
            with client.pipeline() as pipe:
                for _ in range(200):
                    pipe.incr('n')
            received: list[bytes] = []
            while sum(len(d.split(b'\n')) for d in received) < 200:
                received.append(server.recv(65536))
            assert all(d.split(b'\n') == [b'env.n:1|c'] * len(d.split(b'\n')) for d in received)
            # 200 lines of 9 bytes and newlines: 1999 bytes, in one datagram
            # of 8192 or two of 1000 (a Unix socket queues few datagrams).
            assert max(map(len, received)) <= expected
            assert len(received) == (2 if expected == 1000 else 1)
        finally:
            client.close()


@pytest.mark.parametrize('host', ['unix:', 'unixgram:'])
def test_from_env_unix_host_without_a_path(host: str) -> None:
    """A Unix prefix without a path names STATSD_HOST and the form to use."""
    with pytest.raises(ConfigurationError, match=f'STATSD_HOST: host {host} needs a path'):
        from_env({'STATSD_HOST': host})


def test_from_env_unix_datagram_size_is_checked() -> None:
    """STATSD_MAXUDPSIZE is checked for a Unix datagram socket too."""
    with pytest.raises(ConfigurationError, match='STATSD_MAXUDPSIZE'):
        from_env({'STATSD_HOST': 'unixgram:/tmp/x.sock', 'STATSD_MAXUDPSIZE': '0'})


@pytest.mark.parametrize(('text', 'ipv6'), [
    ('0', False), ('1', True), ('true', True), ('FALSE', False), (' yes ', True), ('off', False),
])
def test_from_env_ipv6_spellings(text: str, ipv6: bool) -> None:
    """STATSD_IPV6 takes 0/1 and the usual boolean words."""
    client = from_env({'STATSD_HOST': '::1' if ipv6 else '127.0.0.1', 'STATSD_IPV6': text})
    try:
        assert client._sock.family == (socket.AF_INET6 if ipv6 else socket.AF_INET)
    finally:
        client.close()


def test_public_names() -> None:
    """The module exports the pystatsd names and nothing private."""
    assert set(client_module.__all__) == {
        'MAX_UDP_PAYLOAD', 'Pipeline', 'StatsClient', 'StatsClientBase', 'TCPStatsClient',
        'UnixDatagramStatsClient', 'UnixSocketStatsClient', 'from_env',
    }
    for name in ('StatsClient', 'TCPStatsClient', 'UnixDatagramStatsClient',
                 'UnixSocketStatsClient'):
        assert issubclass(getattr(client_module, name), StatsClientBase)
    assert issubclass(Pipeline, StatsClientBase)
