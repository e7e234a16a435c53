"""The load sink's one-minute frames, driven by a hand-moved clock."""

from __future__ import annotations

import pytest

from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.server.aggregator import Aggregator, Snapshot
from sprockets_statsd.server.config import AggregatorConfig
from sprockets_statsd.server.frames import (
    FRAME_COUNT,
    MAX_SET_MEMBERS,
    FrameStore,
    Series,
    TimerSummary,
)


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 6_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Feed:
    """An aggregator and a frame store sharing one hand-moved clock."""

    def __init__(self, frame_length: float = 60.0, **settings: object) -> None:
        self.clock = Clock()
        self.aggregator = Aggregator(AggregatorConfig(**settings))  # type: ignore[arg-type]
        self.store = FrameStore(frame_length, clock=self.clock)

    def flush(self, *packets: bytes) -> Snapshot:
        """Receive `packets`, flush, and merge the flush into the store."""
        for packet in packets:
            self.aggregator.receive(packet)
        snapshot = self.aggregator.flush(self.clock())
        self.store.add(snapshot)
        return snapshot

    def later(self, seconds: float) -> None:
        self.clock.now += seconds


def test_counters_are_summed_over_the_last_n_frames() -> None:
    """/N sums counters over the last N frames, the current one included;
    /N/full over the N complete frames before it."""
    feed = Feed()
    feed.flush(b'hits:1|c')
    feed.flush(b'hits:2|c')  # same frame: 3
    feed.later(60)
    feed.flush(b'hits:10|c')
    feed.later(60)
    feed.flush(b'hits:100|c')
    store = feed.store
    assert store.window(1).counters()['hits'] == 100
    assert store.window(2).counters()['hits'] == 110
    assert store.window(3).counters()['hits'] == 113
    assert store.window(15).counters()['hits'] == 113
    assert store.window(1, full=True).counters()['hits'] == 10
    assert store.window(2, full=True).counters()['hits'] == 13
    assert store.window(3, full=True).counters()['hits'] == 13


def test_a_frame_is_judged_exact_once_when_the_next_begins() -> None:
    """When a flush starts a new frame, whether the frame before holds
    exact counts (see _countersums.exact) is learnt and remembered by its
    index and flushes; the frame still taking flushes is not judged."""
    feed = Feed()
    feed.flush(b'hits:1|c')
    feed.flush(b'rate:1|c|@0.3')
    complete = feed.store.newest()
    assert complete is not None
    feed.later(60)
    feed.flush(b'rate:1|c|@0.3')
    current = feed.store.newest()
    assert current is not None
    sums = feed.store.sums
    # Remembered from the frame's own values, not the ones given here.
    assert not sums.is_exact((complete.index, complete.flushes), [1.0])
    assert sums.is_exact((current.index, current.flushes), [1.0])


def test_sample_rates_scale_counters() -> None:
    """Counters are summed as flushed: already scaled by the sample rate."""
    feed = Feed()
    feed.flush(b'sampled:1|c|@0.1')
    assert feed.store.window(1).counters()['sampled'] == pytest.approx(10)


def test_timers_keep_true_extremes_and_a_count_weighted_mean() -> None:
    """Upper and lower are the true max and min over every flush, and the
    mean weighs each flush by its number of values (gstatsd averaged the
    per-flush means and lost the extremes)."""
    feed = Feed()
    feed.flush(b'db:10|ms')
    feed.flush(b'db:100|ms\ndb:200|ms\ndb:300|ms')
    feed.later(60)
    feed.flush(b'db:5|ms\ndb:50|ms|@0.5')
    one = feed.store.window(1).timers()['db']
    assert one == TimerSummary(sum=55, upper=50, lower=5, count=3, values=2)
    both = feed.store.window(2).timers()['db']
    assert both.upper == 300
    assert both.lower == 5
    assert both.sum == 665
    assert both.values == 6
    assert both.count == 7  # rate-scaled, as Graphite's count
    assert both.mean == pytest.approx(665 / 6)
    # Not the mean of the per-flush means.
    assert both.mean != pytest.approx((10 + 200 + 27.5) / 3)


def test_idle_timers_are_left_out() -> None:
    """A timer kept without values says nothing about extremes."""
    feed = Feed()
    feed.flush(b'quiet:1|ms')
    feed.later(60)
    feed.flush()  # the timer persists, empty
    assert 'quiet' not in feed.store.window(1).timers()
    assert feed.store.window(2).timers()['quiet'].count == 1


def test_gauges_give_their_last_value() -> None:
    """A gauge is the last value flushed in the window."""
    feed = Feed()
    feed.flush(b'temp:20|g')
    feed.flush(b'temp:+1|g')
    feed.later(60)
    feed.flush(b'temp:-30|g')
    store = feed.store
    assert store.window(1).gauges()['temp'] == -9
    assert store.window(1, full=True).gauges()['temp'] == 21
    assert store.window(2).gauges()['temp'] == -9


def test_sets_count_distinct_members_over_the_window() -> None:
    """A set counts each member once over all frames of the window."""
    feed = Feed()
    feed.flush(b'users:ann|s\nusers:bob|s')
    feed.later(60)
    feed.flush(b'users:bob|s\nusers:cy|s')
    feed.flush(b'users:cy|s')
    assert feed.store.window(1).sets()['users'] == 2
    assert feed.store.window(2).sets()['users'] == 3


def test_set_members_are_capped_and_the_count_stays_a_lower_bound() -> None:
    """Beyond MAX_SET_MEMBERS per frame, members are not kept, and the
    count is at least the largest single flush's."""
    feed = Feed()
    big = b'\n'.join(b'many:%d|s' % i for i in range(MAX_SET_MEMBERS + 500))
    feed.flush(big)
    frame = feed.store.frames()[-1]
    assert len(frame.sets['many']) == MAX_SET_MEMBERS
    assert feed.store.window(1).sets()['many'] == MAX_SET_MEMBERS + 500


def test_idle_minutes_count_as_frames() -> None:
    """Frames are minutes of the clock: a quiet stretch leaves empty frames,
    and a query never sees data older than its window."""
    feed = Feed()
    feed.flush(b'old:1|c')
    feed.later(5 * 60)
    assert feed.store.window(1).counters() == {}
    assert feed.store.window(5).counters() == {}
    assert feed.store.window(6).counters()['old'] == 1
    feed.flush(b'new:1|c')
    assert set(feed.store.window(6).counters()) >= {'old', 'new'}


def test_only_fifteen_frames_are_kept() -> None:
    """Memory is bounded: the store holds at most FRAME_COUNT frames."""
    feed = Feed()
    for minute in range(40):
        feed.flush(b'tick:%d|c' % minute)
        feed.later(60)
    assert len(feed.store.frames()) == FRAME_COUNT
    feed.later(-60)  # back into the last frame
    assert feed.store.window(15).counters()['tick'] == sum(range(25, 40))


def test_frames_align_to_multiples_of_the_frame_length() -> None:
    """A frame starts at a multiple of its length since the epoch."""
    feed = Feed(frame_length=0.25)
    feed.clock.now = 1000.3
    feed.flush(b'x:1|c')
    store = feed.store
    assert store.current_index() == 4001
    assert store.frame_start(store.current_index()) == 1000.25


def test_stat_uses_gstatsd_names() -> None:
    """The JSON names: counters bare, stats.timers.K.*, stats.gauges.K,
    stats.sets.K.count."""
    feed = Feed()
    feed.flush(b'c:2|c\nt:4|ms\nt:8|ms\ng:7|g\ns:a|s')
    stat = feed.store.window(1).stat()
    assert stat['c'] == 2
    assert stat['stats.timers.t.sum'] == 12
    assert stat['stats.timers.t.upper'] == 8
    assert stat['stats.timers.t.lower'] == 4
    assert stat['stats.timers.t.count'] == 2
    assert stat['stats.timers.t.mean'] == 6
    assert stat['stats.gauges.g'] == 7
    assert stat['stats.sets.s.count'] == 1
    assert stat['statsd.metrics_received'] == 5


@pytest.mark.parametrize('count', [0, 16, -1])
def test_window_refuses_counts_out_of_range(count: int) -> None:
    """N must be from 1 to the number of frames kept."""
    with pytest.raises(ValueError, match='from 1 to 15'):
        FrameStore().window(count)


@pytest.mark.parametrize('length', [0, -1.0, float('nan'), float('inf')])
def test_bad_frame_length_is_refused(length: float) -> None:
    """The frame length must be a positive number of seconds."""
    with pytest.raises(ConfigurationError, match='frame_length'):
        FrameStore(length)


def test_bad_frame_count_is_refused() -> None:
    """At least one frame must be kept."""
    with pytest.raises(ConfigurationError, match='frame_count'):
        FrameStore(frame_count=0)


def test_series_give_one_point_per_frame_with_gaps() -> None:
    """The overview's series: one point per frame, oldest first, None where
    the metric had no value, ordered by kind then key."""
    feed = Feed(delete_idle_stats=True)
    feed.flush(b'b:1|c\na:2|c\nlat:10|ms\nlat:20|ms\nlevel:3|g\nwho:x|s')
    feed.later(120)
    feed.flush(b'a:5|c\nlat:40|ms')
    listing = feed.store.series()
    series = listing.series
    assert listing.matched == listing.total == len(series)
    kinds = [(s.kind, s.key) for s in series if not s.key.startswith('statsd.')]
    assert kinds == [('counter', 'a'), ('counter', 'b'), ('timer', 'lat'),
                     ('gauge', 'level'), ('set', 'who')]
    by_key = {s.key: s for s in series}
    a = by_key['a']
    assert len(a.points) == FRAME_COUNT
    assert a.points[-3:] == (2, None, 5)
    assert all(p is None for p in a.points[:-3])
    assert a.current == 5
    assert by_key['lat'].points[-3:] == (15, None, 40)
    assert by_key['b'].current == 1
    assert by_key['who'].points[-3] == 1
    feed.later(60 * 20)
    assert feed.store.series().series == []


def test_a_series_without_values_has_no_current_value() -> None:
    """current is the newest value, None when there is none."""
    assert Series('gauge', 'g', (None, None)).current is None
    assert Series('gauge', 'g', (1.0, None)).current == 1.0


def test_series_can_be_filtered_and_cut_without_building_the_rest() -> None:
    """A match function and a limit give the first matching series in
    order, with the counts of matches and of every key."""
    feed = Feed()
    feed.flush(b'\n'.join(b'app.k%02d:1|c' % i for i in range(30)) + b'\napp.t:1|ms\nother:1|g')
    listing = feed.store.series(lambda key: key.startswith('app.'), 5)
    assert [s.key for s in listing.series] == [f'app.k{i:02}' for i in range(5)]
    assert listing.matched == 31
    assert listing.total == 35  # with other and the three statsd.* counters
    everything = feed.store.series(limit=40)
    assert [s.kind for s in everything.series][-2:] == ['timer', 'gauge']
    assert feed.store.series(limit=0).series == []


def test_a_window_is_not_changed_by_later_flushes() -> None:
    """A window taken before a flush keeps the frames as they were, so that
    a query may read it in a thread while flushes go on."""
    aggregator = Aggregator(AggregatorConfig())
    store = FrameStore(60.0, clock=lambda: 600.0)
    aggregator.receive(b'c:1|c\nt:5|ms\ng:1|g\ns:a|s')
    store.add(aggregator.flush(600.0))
    window = store.window(1)
    before = window.stat()
    aggregator.receive(b'c:2|c\nt:7|ms\ng:3|g\ns:b|s\nnew:1|c')
    store.add(aggregator.flush(610.0))
    assert window.stat() == before
    assert store.window(1).stat()['c'] == 3
    assert store.window(1).stat()['stats.timers.t.upper'] == 7
    assert store.window(1).stat()['stats.sets.s.count'] == 2


def test_a_merged_copy_changes_the_store_only_when_committed() -> None:
    """merged() leaves the store as it was (it runs in a thread while the
    store is read); commit() then takes the copy in as the newest frame."""
    aggregator = Aggregator(AggregatorConfig())
    store = FrameStore(60.0, clock=lambda: 600.0)
    aggregator.receive(b'c:1|c')
    store.add(aggregator.flush(600.0))
    aggregator.receive(b'c:2|c')
    copy = store.merged(aggregator.flush(610.0), store.current_index(), store.newest())
    assert store.window(1).counters()['c'] == 1
    assert store.generation == 1
    store.commit(copy)
    assert store.window(1).counters()['c'] == 3
    assert store.generation == 2
    assert len(store.frames()) == 1


def test_a_flush_after_the_clock_went_back_joins_the_newest_frame() -> None:
    """A flush whose frame is older than the newest (the wall clock set
    back) is merged into the newest frame, never into a new older one."""
    clock = Clock(6_000.0)
    aggregator = Aggregator(AggregatorConfig())
    store = FrameStore(60.0, clock=clock)
    aggregator.receive(b'c:1|c')
    store.add(aggregator.flush(clock()))
    clock.now -= 120
    aggregator.receive(b'c:2|c')
    store.add(aggregator.flush(clock()))
    assert [frame.index for frame in store.frames()] == [100]
    assert store.frames()[0].counters['c'] == 3
