"""Tier 2: the Connector's metric methods, checked on the wire of a loopback server."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import logging
import socket
import typing

import pytest

import sprockets_statsd
import sprockets_statsd.statsd
from sprockets_statsd import AbstractConnector, ConfigurationError, Connector
from tests.helpers import StatsdServer

UDP = socket.IPPROTO_UDP


async def lines_for(
    calls: typing.Callable[[Connector], None], expected: int, **options: typing.Any
) -> list[bytes]:
    """Run `calls` on a UDP connector and return the lines the server saw."""
    async with StatsdServer('udp') as server:
        connector = Connector(server.host, server.port, ip_protocol=UDP, **options)
        await connector.start()
        calls(connector)
        await asyncio.wait_for(connector.stop(), 10)
        return await server.wait_for_lines(expected)


def test_public_names_are_importable_from_both_modules() -> None:
    """Code written against sprockets-statsd 1.0 imports from .statsd."""
    for name in ('Connector', 'AbstractConnector', 'Processor', 'StatsdProtocol',
                 'TCPProtocol', 'UDPProtocol', 'UnixStreamProtocol', 'Timer'):
        assert getattr(sprockets_statsd.statsd, name) is getattr(sprockets_statsd, name)


async def test_every_method_on_the_wire() -> None:
    """Each method produces exactly the documented line."""

    def calls(c: Connector) -> None:
        c.incr('hits')
        c.incr('hits', 5)
        c.decr('hits')
        c.decr('hits', 2.5)
        c.gauge('load', 3)
        c.gauge('load', 1.5, delta=True)
        c.gauge('load', -2, delta=True)
        c.gauge('temp', -4)
        c.timing('query', 0.25)
        c.timing('query', datetime.timedelta(milliseconds=7))
        c.set('users', 'alice')
        c.set('users', 42)
        c.inject_metric('raw.hist', '3', 'h')
        c.inject_metric('raw.count', '2', 'c')

    lines = await lines_for(calls, 15, prefix='app')
    assert lines == [
        b'app.counters.hits:1|c',
        b'app.counters.hits:5|c',
        b'app.counters.hits:-1|c',
        b'app.counters.hits:-2.5|c',
        b'app.gauges.load:3|g',
        b'app.gauges.load:+1.5|g',
        b'app.gauges.load:-2|g',
        b'app.gauges.temp:0|g',
        b'app.gauges.temp:-4|g',
        b'app.timers.query:250.0|ms',
        b'app.timers.query:7.0|ms',
        b'app.sets.users:alice|s',
        b'app.sets.users:42|s',
        b'app.raw.hist:3|h',
        b'app.raw.count:2|c',
    ]


async def test_negative_gauge_pair_travels_in_one_datagram() -> None:
    """The 0-then-value pair is never split across datagrams."""
    async with StatsdServer('udp') as server:
        c = Connector(server.host, server.port, ip_protocol=UDP, max_udp_size=40)
        await c.start()
        for _ in range(5):
            c.gauge('a.rather.long.gauge', -1)
        await c.stop()
        await server.wait_for_lines(10)
    for datagram in server.datagrams:
        assert datagram.count(b'gauges.a.rather.long.gauge:0|g') == datagram.count(b':-1|g')


async def test_no_prefix_means_no_leading_dot() -> None:
    """With an empty prefix the name starts with the type segment."""
    lines = await lines_for(lambda c: c.incr('x'), 1)
    assert lines == [b'counters.x:1|c']


async def test_prefix_can_be_changed() -> None:
    """Assigning Connector.prefix applies to later metrics, as in 1.0."""

    def calls(c: Connector) -> None:
        c.incr('x')
        c.prefix = 'other'
        assert c.prefix == 'other'
        c.incr('x')

    assert await lines_for(calls, 2, prefix='first') == [
        b'first.counters.x:1|c', b'other.counters.x:1|c']


async def test_a_new_prefix_reaches_every_cached_path() -> None:
    """After a prefix change no cached name of the old prefix is sent again."""

    def calls(c: Connector) -> None:
        for _ in range(2):  # the second round comes from the caches
            c.incr('x')
            c.timing('t', 0.5)
            c.gauge('g', 1)
        c.prefix = 'new'
        c.incr('x')
        c.timing('t', 0.5)
        c.gauge('g', 1)

    lines = await lines_for(calls, 9, prefix='old')
    assert lines[6:] == [b'new.counters.x:1|c', b'new.timers.t:500.0|ms', b'new.gauges.g:1|g']


async def test_names_with_protocol_characters_are_replaced() -> None:
    """':', '|', '@', '#', newline and NUL never reach the wire raw."""
    lines = await lines_for(lambda c: c.incr('a:b|c@d#e\nf\x00g'), 1)
    assert lines == [b'counters.a_b_c_d_e_f_g:1|c']


async def test_non_ascii_names_are_utf8() -> None:
    """Names are encoded as UTF-8."""
    lines = await lines_for(lambda c: c.timing('café', 1), 1)
    assert lines == ['timers.café:1000.0|ms'.encode()]


async def test_sampling_uses_the_injected_random_source() -> None:
    """Only calls whose random draw is below the rate are sent, with |@rate."""
    draws = itertools.cycle([0.1, 0.9, 0.4, 0.6])

    def calls(c: Connector) -> None:
        for _ in range(4):
            c.incr('s', rate=0.5)
        c.gauge('g', 1, rate=0.5)  # draws 0.1
        c.timing('t', 1, rate=0.5)  # draws 0.9: skipped
        c.set('u', 'x', rate=0.5)  # draws 0.4
        c.inject_metric('i', '1', 'c', rate=0.5)  # 0.6: skipped

    lines = await lines_for(calls, 4, random_source=lambda: next(draws))
    assert lines == [b'counters.s:1|c|@0.5', b'counters.s:1|c|@0.5',
                     b'gauges.g:1|g|@0.5', b'sets.u:x|s|@0.5']


async def test_invalid_metrics_are_dropped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    """Bad values and rates are counted, logged once, and never raise."""
    caplog.set_level(logging.WARNING)
    connector: Connector | None = None

    def calls(c: Connector) -> None:
        nonlocal connector
        connector = c
        c.incr('nan', float('nan'))
        c.decr('text', 'x')  # type: ignore[arg-type]
        c.gauge('inf', float('inf'))
        c.timing('neg', -1)
        c.timing('wrong', 'slow')  # type: ignore[arg-type]
        c.set('rate', 1, rate=0)
        c.incr('rate', rate=2)
        c.inject_metric('r', '1', 'c', rate=-1)
        c.incr('bool', True)  # a boolean is not a count
        c.incr('good')
        c.incr('surrogate\ud800')

    lines = await lines_for(calls, 2)
    assert lines == [b'counters.good:1|c', b'counters.surrogate?:1|c']
    assert connector is not None
    assert connector.dropped_invalid == 9
    assert connector.enqueued == 2
    assert len([r for r in caplog.records if 'dropping metric' in r.getMessage()]) == 1


def test_a_sample_rate_that_is_not_a_number_is_counted_not_raised() -> None:
    """rate='0.5' (text) on any method is an invalid metric, never a TypeError."""
    c = Connector('127.0.0.1', 9, random_source=lambda: 0.9)
    c.incr('a', rate='0.5')  # type: ignore[arg-type]
    c.timing('b', 0.5, rate='0.5')  # type: ignore[arg-type]
    c.inject_metric('c', '1', 'c', rate='0.5')  # type: ignore[arg-type]
    assert c.dropped_invalid == 3
    assert c.enqueued == 0
    c.processor.abandon_queue()


async def test_tags_need_a_dialect() -> None:
    """Tags on a connector without a dialect raise instead of vanishing."""
    c = Connector('127.0.0.1')
    with pytest.raises(ConfigurationError):
        c.incr('x', tags={'k': 'v'})


async def test_tags_on_the_wire() -> None:
    """Constant and per-call tags are rendered in the chosen dialect."""
    lines = await lines_for(lambda c: c.incr('x', tags={'k': 'v'}), 1,
                            tag_dialect='dogstatsd', tags={'env': 'test'})
    assert lines == [b'counters.x:1|c|#env:test,k:v']


async def test_timer_context_manager_and_decorators() -> None:
    """timer() times a block, a function and a coroutine function."""

    def calls(c: Connector) -> None:
        with c.timer('block'):
            pass

        @c.timer('function')
        def function(x: int) -> int:
            return x + 1

        assert function(1) == 2
        assert function.__name__ == 'function'

    async with StatsdServer('udp') as server:
        c = Connector(server.host, server.port, ip_protocol=UDP)
        await c.start()
        calls(c)

        @c.timer('coroutine')
        async def coroutine(x: int) -> int:
            await asyncio.sleep(0.01)
            return x * 2

        assert await coroutine(4) == 8
        with pytest.raises(ZeroDivisionError), c.timer('failing'):
            _ = 1 / 0
        await c.stop()
        lines = await server.wait_for_lines(4)
    names = [line.split(b':')[0] for line in lines]
    assert names == [b'timers.block', b'timers.function', b'timers.coroutine', b'timers.failing']
    coroutine_ms = float(lines[2].split(b':')[1].split(b'|')[0])
    assert coroutine_ms >= 10.0


async def test_abstract_connector_does_nothing() -> None:
    """The null object accepts every call and sends nothing."""
    c = AbstractConnector()
    await c.start()
    c.incr('a')
    c.decr('a')
    c.gauge('g', 1, delta=True)
    c.timing('t', 1)
    c.set('s', 1)
    c.inject_metric('x', '1', 'c')
    with c.timer('t'):
        pass
    await c.stop()


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'host': ''}, 'host'),
        ({'host': '   '}, 'host'),
        ({'host': 'unix:'}, 'unix'),
        ({'host': 'h', 'port': 0}, 'port'),
        ({'host': 'h', 'port': 70000}, 'port'),
        ({'host': 'h', 'port': 'http'}, 'port'),
        ({'host': 'h', 'ip_protocol': 99}, 'ip_protocol'),
        ({'host': 'h', 'max_queue_size': 0}, 'max_queue_size'),
        ({'host': 'h', 'max_udp_size': -1}, 'max_udp_size'),
        ({'host': 'h', 'max_batch_size': 0}, 'max_batch_size'),
        ({'host': 'h', 'reconnect_sleep': 0}, 'reconnect_sleep'),
        ({'host': 'h', 'shutdown_timeout': 'soon'}, 'shutdown_timeout'),
        ({'host': 'h', 'connect_timeout': True}, 'connect_timeout'),
        ({'host': 'h', 'tag_dialect': 'statsite'}, 'tag_dialect'),
        ({'host': 'h', 'tags': {'a': 'b'}}, 'dialect'),
    ],
)
def test_misconfiguration_raises_naming_the_argument(
    kwargs: dict[str, typing.Any], match: str
) -> None:
    """ConfigurationError (a ValueError) at construction names what to fix."""
    with pytest.raises(ConfigurationError, match=match) as info:
        Connector(**kwargs)
    assert isinstance(info.value, ValueError)


def test_port_given_as_text_is_accepted() -> None:
    """A port read from the environment as text is converted."""
    assert Connector('h', '8126').processor.port == 8126  # type: ignore[arg-type]


async def test_start_twice_runs_one_task() -> None:
    """A second start() while running does not start another processor."""
    async with StatsdServer('tcp') as server:
        c = Connector(server.host, server.port)
        await c.start()
        task = c._task
        await c.start()
        assert c._task is task
        c.incr('once')
        await c.stop()
        await c.stop()  # a second stop is harmless
        assert await server.wait_for_lines(1) == [b'counters.once:1|c']


async def test_fast_paths_count_overflow_and_keep_caches_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """timing()'s fast path counts a full queue and caches at most the bound."""
    monkeypatch.setattr(sprockets_statsd.metrics, 'DEFAULT_CACHE_SIZE', 1)
    c = Connector('127.0.0.1', 1, max_queue_size=2)
    for name in ('a', 'b', 'a'):
        c.timing(name, 0.5)
    assert c.enqueued == 3
    assert c.dropped_queue_full == 1
    assert list(c._timer_heads) == ['a']
    assert c.processor.queue.take(5) == [b'timers.a:500.0|ms', b'timers.b:500.0|ms']
    await c.stop()


async def test_text_that_utf8_cannot_carry_in_tags_is_replaced() -> None:
    """A lone surrogate in a tag value becomes '?' instead of raising."""
    lines = await lines_for(lambda c: c.incr('x', tags={'k': '\ud800'}), 1,
                            tag_dialect='graphite')
    assert lines == [b'counters.x;k=?:1|c']


async def test_sampled_out_calls_of_every_method_send_nothing() -> None:
    """A draw at or above the rate skips each method, and none is counted."""

    def calls(c: Connector) -> None:
        c.gauge('g', 1, rate=0.5)
        c.timing('t', 1.0, rate=0.5)
        c.set('s', 1, rate=0.5)
        c.inject_metric('i', '1', 'c', rate=0.5)
        c.incr('sent')

    async with StatsdServer('udp') as server:
        c = Connector(server.host, server.port, ip_protocol=UDP, random_source=lambda: 0.75)
        await c.start()
        calls(c)
        await c.stop()
        assert await server.wait_for_lines(1) == [b'counters.sent:1|c']
    assert c.enqueued == 1
