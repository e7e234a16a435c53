"""/metrics text kept across flushes: keys that come and go, collisions, merging."""

from __future__ import annotations

import logging
import random

import pytest

from sprockets_statsd.server import (
    _promchunk,
    _promlayout,
    _promlone,
    _promnames,
    _promplan,
    prometheus,
)
from sprockets_statsd.server.aggregator import Aggregator
from sprockets_statsd.server.config import AggregatorConfig
from sprockets_statsd.server.prometheus import StatsdCollector
from tests.server.helpers import send_udp, wait_until
from tests.server.test_http import load_server
from tests.server.test_prometheus import Exposed


class Kept(Exposed):
    """An exposed collector whose every flush is checked against
    prometheus_client, and whose layout is watched."""

    def __init__(self, **settings: object) -> None:
        super().__init__(delete_idle_stats=True, **settings)
        self.kept = self.made = 0

    def step(self, *lines: str) -> bool:
        """Flush `lines`; whether the kept layout served (no new plan)."""
        self.flush('\n'.join(lines).encode())
        before = self.collector._layout
        assert self.collector.exposition() == self.text().encode()
        kept = before is not None and self.collector._layout is before
        self.kept += kept
        self.made += not kept
        return kept


def test_new_and_gone_families_keep_the_layout() -> None:
    """A key of a new family, of every kind, joins the kept text; a key
    that was a family alone leaves it; a timer whose quantiles change is
    made anew in place."""
    kept = Kept(percent_thresholds=(90, 10), histograms=[('h', [1, 10])])
    kept.step('a:1|c', 'm:1|c')
    assert kept.step('a:1|c', 'b:1|c', 'm:1|c')
    assert kept.step('a:1|c', 'm:1|c', 't:1|ms', 'h:3|ms', 'g:1|g', 's:x|s', 'tag:1|c|#env:x')
    assert kept.step('a:1|c', 't:1|ms\n' * 12, 'h:4|ms', 's:y|s', 'g:2|g')
    assert kept.step('t:1|ms', 'zz:1|c')
    assert 'a_total' not in kept.text()
    assert kept.step('0:1|c', 'zz:1|c')  # 0 is _0, the first family


def test_changes_to_a_family_of_several_keys_make_a_new_plan() -> None:
    """A tagged key joining or leaving a family, or its first key going,
    is planned anew, and the text stays generate_latest's."""
    kept = Kept()
    kept.step('r:1|c', 'r:1|c|#env:a', 'q:1|c')
    assert not kept.step('r:1|c', 'r:1|c|#env:a', 'r:1|c|#env:b', 'q:1|c')
    assert not kept.step('r:1|c', 'r:1|c|#env:b', 'q:1|c')
    assert not kept.step('r:1|c|#env:b', 'q:1|c')


def test_collisions_are_tracked_as_keys_come_and_go() -> None:
    """A key left out that goes keeps the layout; a key taking a series
    that another key has, by name or by suffix, and a key freeing a series
    that a key left out wants, make a new plan."""
    kept = Kept()
    kept.step('a.b:1|c', 'a_b:1|c', 'x:1|c')
    assert kept.collector.collisions == 1
    assert kept.step('a.b:1|c', 'x:1|c')
    assert kept.collector.collisions == 0
    assert not kept.step('a.b:1|c', 'x:1|c', 'x_total:1|g')  # a counter's series
    assert kept.collector.collisions == 1
    assert not kept.step('a.b:1|c', 'x_total:1|g')  # frees what the gauge wants
    assert kept.collector.collisions == 0
    assert 'x_total 1.0' in kept.text()
    assert kept.step('a.b:1|c', 'x_total:1|g', 'x:1|ms')  # x_seconds: free
    assert not kept.step('a.b:1|c', 'x:1|ms', 'x_seconds_count:2|g')  # a summary's
    assert kept.collector.collisions == 1
    assert not kept.step('a.b:1|c', 'x:1|g', 'x:1|s')  # a gauge and a set of one name


def test_many_keys_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys inserted into and dropped from small pieces of kept text keep
    the order of a full plan, pieces split, emptied and started."""
    monkeypatch.setattr(_promchunk, 'CHUNK_FAMILIES', 4)
    kept = Kept()
    rng = random.Random(7)
    pool = [f'{kind}{i:02d}:{i}|{kind}' for i in range(40) for kind in 'cgs']
    held = rng.sample(pool, 30)
    kept.step(*held)
    for _ in range(30):
        held = [line for line in held if rng.random() > 0.1]
        held += rng.sample(pool, 6)
        kept.step(*held)
    assert kept.kept > 20


@pytest.mark.parametrize('seed', range(6))
def test_random_churn_matches_prometheus_client(seed: int) -> None:
    """Flushes of random keys (colliding names, tags, every kind) give
    generate_latest's bytes every time, whichever way the text is made."""
    rng = random.Random(seed)
    names = ['a.b', 'a_b', 'a-b', 'x', 'x_total', 'x_seconds', 'y.sum', 'y', 'z',
             'z_seconds_count', '5x', 'p%q', 'w']
    tags = ['', '|#env:prod', '|#env:dev', '|#le:1', '|#v:a%b"c']
    kinds = ['c', 'c', 'c', 'ms', 'g', 's']
    kept = Kept(percent_thresholds=(90, 50), histograms=[('w', [5, 50])])
    held: list[str] = []
    for _ in range(40):
        held = [line for line in held if rng.random() > 0.2]
        for _ in range(rng.randrange(4)):
            kind = rng.choice(kinds)
            value = rng.choice(['1', '2.5', '1234567', '3e20'])
            held.append(f'{rng.choice(names)}:{value}|{kind}{rng.choice(tags)}')
        kept.step(*held)
    assert kept.kept
    assert kept.made


def test_add_leaves_the_merge_to_a_thread_but_bounds_what_waits() -> None:
    """add() only queues a flush; merge() (or a scrape) adds them up in
    order; beyond the bound, add() merges itself."""
    aggregator = Aggregator(AggregatorConfig())
    collector = StatsdCollector()
    flushes = []
    for step in range(prometheus._MAX_PENDING + 1):
        aggregator.receive(b'n:2|c')
        flushes.append(aggregator.flush(1_700_000_000 + step))
    for flush in flushes[:-1]:
        collector.add(flush)
    assert collector._state.counters == {}
    assert collector.generation == prometheus._MAX_PENDING
    collector.add(flushes[-1])
    assert collector._state.counters['n'] == 2 * len(flushes)
    aggregator.receive(b'n:1|c')
    collector.add(aggregator.flush(1_700_000_100))
    assert b'n_total 11.0\n' in collector.exposition()


def test_a_flush_that_cannot_be_merged_is_logged_and_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broken flush costs its own values only; the next merge as usual."""
    aggregator = Aggregator(AggregatorConfig())
    collector = StatsdCollector()
    aggregator.receive(b'lat:1|ms')
    broken = aggregator.flush(1_700_000_000)
    object.__setattr__(broken, 'timer_counters', {})
    collector.add(broken)
    aggregator.receive(b'lat:1|ms')
    collector.add(aggregator.flush(1_700_000_010))
    with caplog.at_level(logging.ERROR):
        text = collector.exposition()
    assert 'could not be merged' in caplog.text
    assert b'lat_seconds_count 1.0\n' in text


def test_an_empty_flush_exposes_nothing_and_keys_come_after() -> None:
    """A layout of no families serves, and takes in the first keys."""
    kept = Kept()
    assert kept.collector.exposition() == b''
    kept.step('a:1|c')
    assert b'a_total 1.0\n' in kept.collector.exposition()


async def test_the_load_sink_merges_flushes_in_a_thread_and_scrapes_see_all() -> None:
    """Each flush is merged in a worker thread; one that comes while the
    previous merge is under way waits for the next, or for a scrape."""
    async with load_server(flush_interval=3600) as server:
        assert server.query is not None
        collector = server.query.collector
        send_udp(server.udp_addresses[0], b'merged:2|c')
        await wait_until(lambda: server.aggregator.current_counters().get('merged'))
        generation = collector.generation
        server.flush()
        server.flush()  # before the loop can see the first merge done
        assert collector.generation == generation + 2
        assert b'merged_total 2.0\n' in await server.query.exposition()
        assert not collector._pending


def test_names_in_bulk_are_each_keys_name() -> None:
    """prometheus_names cleans sorted keys at once as prometheus_name does
    one by one: digits first, empty keys, ASCII and other text."""
    rng = random.Random(3)
    alphabet = 'ab9_.-%:/ \u00f6'
    for _ in range(200):
        keys = sorted({''.join(rng.choice(alphabet) for _ in range(rng.randrange(4)))
                       for _ in range(rng.randrange(1, 12))})
        if rng.random() < 0.1:
            keys.append('line\nfeed')  # none arrives so, but the rule holds
        assert _promnames.prometheus_names(keys) == [
            _promnames.prometheus_name(key) for key in keys]
    assert _promnames.prometheus_names([]) == []


@pytest.mark.parametrize('group', [_promplan.COUNTERS, _promplan.GAUGES, _promplan.SETS])
def test_lone_texts_are_the_family_text(group: int) -> None:
    """A lone family's text made in bulk is its header and sample line;
    the text of several with their values is those formatted."""
    names = ['a', 'b_c', '_5x']
    _, kind, doc, _ = _promplan.family_of(group, 'x', None)
    expected = [
        _promplan.family_header(n, kind, doc) + _promplan.sample_line(sample, {})
        for n in names
        for sample, _ in _promplan.sample_names(group, None, n, {})
    ]
    assert _promplan.lone_texts(group, names) == expected
    values = (1.5, '1e+06', 0.0)
    assert _promplan.lone_text(group, names, values) == ''.join(expected) % values
    assert _promplan.lone_text(group, [], ()) == ''


def test_split_lone_leaves_every_shared_series_to_the_plan() -> None:
    """Keys whose series another key wants, by name, by _total or through
    a tagged family, are planned; the others are lone."""
    state = _promplan.State(
        counters={'a': 1.0, 'b': 1.0, 'c': 1.0, 'd.x': 1.0, 'd_x': 1.0, 'r;env=1': 1.0,
                  'r': 1.0, 'q': 1.0},
        timers={'t': _promplan.Timer(1.0, 1.0)},
        gauges={'b_total': 1.0, 't_seconds_sum': 1.0, 'g': 1.0, 'q': 1.0},
        sets={'g': 1, 's': 1},
    )
    lone = _promlone.split_lone(state)
    assert lone.keys == {_promplan.COUNTERS: ['a', 'c'], _promplan.GAUGES: [],
                         _promplan.SETS: ['s'], _promplan.TIMERS: []}
    assert lone.others == {
        _promplan.COUNTERS: ['b', 'd.x', 'd_x', 'q', 'r', 'r;env=1'],
        _promplan.TIMERS: ['t'],
        _promplan.GAUGES: ['b_total', 'g', 'q', 't_seconds_sum'],
        _promplan.SETS: ['g'],
    }
    families = _promlayout.Layout(state).families
    assert {name: families[name] for name in ('a', 'c', 's')} == {
        'a': 'counter', 'c': 'counter', 's': 'gauge'}
    assert families['t_seconds'] == 'summary'


@pytest.mark.parametrize('seed', range(4))
def test_lone_and_planned_families_interleave_across_chunks(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many lone keys and a few planned ones (tagged, colliding), in small
    pieces of text: every new layout gives generate_latest's bytes."""
    monkeypatch.setattr(_promchunk, 'CHUNK_FAMILIES', 3)
    rng = random.Random(seed)
    kept = Kept()
    for _ in range(8):
        lines = [f'k{rng.randrange(60)}:{rng.randrange(9)}|{rng.choice("cgs")}'
                 for _ in range(40)]
        lines += [rng.choice(['k1:1|c|#env:a', 'k1.x:1|c', 'k1_x:2|c', 'k2_total:1|g',
                              'k3:1|ms', 'k3_seconds:1|g', 'k4:1|c|#le:2'])
                  for _ in range(rng.randrange(4))]
        kept.collector._layout = None  # a layout made anew
        kept.step(*lines)


def test_merge_keeps_a_laid_out_text_current(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each merge lays the keys out, thin (no text of chunks of lone keys):
    before any scrape made anew when keys change; once a scrape has asked
    for the text, brought to the new keys (or planned anew)."""
    monkeypatch.setattr(_promchunk, 'CHUNK_FAMILIES', 2)
    kept = Kept()
    collector = kept.collector
    kept.flush(b'a:1|c\nb:1|c\nz:1|g')
    state = collector.merge()
    first = collector._layout
    assert first is not None
    assert first.state is state
    assert [chunk.template for chunk in first.chunks[:1]] == [None]
    assert first._families is None
    state = collector.merge()  # the same keys: the same layout
    assert collector._layout is first
    kept.flush(b'a:1|c\nb:1|c\nc:1|s')  # keys changed, never scraped: made anew
    state = collector.merge()
    unscraped = collector._layout
    assert unscraped is not first
    assert unscraped is not None
    assert unscraped.state is state
    assert unscraped._families is None
    assert unscraped.chunks[0].template is None
    collector.exposition()
    assert collector._layout is unscraped  # the scrape laid nothing out
    assert unscraped.chunks[0].template is None
    assert collector.exposition() == kept.text().encode()
    collector.merge()
    assert collector._layout is unscraped
    kept.flush(b'a:1|c\nb:1|c\nd:1|s')  # a new family: the same layout, edited
    state = collector.merge()
    assert collector._layout is unscraped
    assert collector._layout.state is state
    assert all(chunk.template is None for chunk in unscraped.chunks)
    assert ['d'] in [chunk.keys for chunk in unscraped.chunks]
    assert collector.exposition() == kept.text().encode()
    kept.flush(b'a:1|c\na_total:1|g')  # a collision: planned anew
    state = collector.merge()
    assert collector._layout is not unscraped
    assert collector._layout.state is state
    assert collector.collisions == 1
    assert collector.exposition() == kept.text().encode()


def test_chunks_of_lone_keys_keep_no_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of lone families keep their keys, not their text, scraped
    or not, edited or made anew; a chunk that gains a family of another
    shape keeps its text; every scrape gives generate_latest's bytes."""
    monkeypatch.setattr(_promchunk, 'CHUNK_FAMILIES', 4)
    kept = Kept()
    lines = [f'c{i}:{i}|c' for i in range(10)] + ['g.1:1|g', 'g_1:2|g', 't:1|ms']
    collector = kept.collector

    def thin() -> list[list[str]]:
        """The keys of the chunks without text, the server's own left out."""
        assert collector._layout is not None
        keys = ([key for key in chunk.keys if not key.startswith('statsd.')]
                for chunk in collector._layout.chunks if chunk.template is None)
        return [chunk for chunk in keys if chunk]

    kept.flush('\n'.join(lines).encode())
    assert collector.exposition() == kept.text().encode()
    lone = [['c0', 'c1', 'c2', 'c3'], ['c4', 'c5', 'c6', 'c7'], ['c8', 'c9']]
    assert thin() == lone
    layout = collector._layout
    kept.flush('\n'.join([*lines[1:], 'c30:1|c']).encode())  # edits in thin chunks
    collector.merge()
    assert collector._layout is layout
    assert thin() == [['c1', 'c2', 'c3', 'c30'], *lone[1:]]
    assert collector.exposition() == kept.text().encode()
    kept.flush('\n'.join([*lines[1:], 'c30:1|c', 'c35:1|c|#env:a']).encode())
    collector.merge()  # a family with labels: its chunk keeps its text
    assert collector._layout is layout
    assert thin() == lone[1:]
    assert collector.exposition() == kept.text().encode()
