"""Counter totals over frames: column sums, and the sums of complete frames kept."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sprockets_statsd.server._countersums import MAX_KEPT_SUMS, KeptSums, sum_columns
from sprockets_statsd.server._finite import saturated
from sprockets_statsd.server.frames import Frame, Window


def frame(index: int, counters: dict[str, float], flushes: int = 1) -> Frame:
    """A frame holding exactly these counters."""
    made = Frame(index)
    made.counters = counters
    made.flushes = flushes
    return made


def key_by_key(frames: list[Frame]) -> dict[str, float]:
    """Counters summed oldest frame first, key by key, as a plain loop does."""
    totals = dict(frames[0].counters)
    for later in frames[1:]:
        for key, value in later.counters.items():
            totals[key] = totals.get(key, 0.0) + value
    return totals


def test_a_window_keeps_the_sum_of_its_complete_frames_for_the_next() -> None:
    """The frames before the newest are summed once: a window with the same
    complete frames and a newer state of the newest adds only that."""
    complete = [frame(1, {'a': 0.1, 'b': 1.0}), frame(2, {'a': 0.2, 'b': 2.0, 'c': 0.5})]
    sums = KeptSums()
    first = Window((*complete, frame(3, {'a': 0.3}, flushes=1)), sums)
    assert first.counters() == key_by_key(list(first.frames))
    assert sums.get(((1, 1), (2, 1))) is not None
    later = Window((*complete, frame(3, {'a': 0.3, 'b': 0.7, 'c': 1.0, 'd': 4.0}, 2)), sums)
    assert later.counters() == key_by_key(list(later.frames))


def test_a_kept_sum_is_used_instead_of_summing_the_frames_again() -> None:
    """The kept sum stands for the frames it was kept for (index and
    flushes): the frames' own values are not read again."""
    sums = KeptSums()
    sums.keep(((1, 1), (2, 1)), (['a'], [100.0]))
    window = Window((frame(1, {'a': 1.0}), frame(2, {'a': 2.0}), frame(3, {'a': 3.0})), sums)
    assert window.counters() == {'a': 103.0}
    # Another flush of frame 2 makes it another frame: summed anew.
    window = Window((frame(1, {'a': 1.0}), frame(2, {'a': 2.0}, 2), frame(3, {'a': 3.0})), sums)
    assert window.counters() == {'a': 6.0}


def test_only_the_latest_sums_are_kept() -> None:
    """At most MAX_KEPT_SUMS sums are kept; the oldest goes first."""
    sums = KeptSums()
    for index in range(MAX_KEPT_SUMS + 1):
        sums.keep(((index, 1),), ([], []))
    assert sums.get(((0, 1),)) is None
    assert sums.get(((MAX_KEPT_SUMS, 1),)) == ([], [])
    assert sums.get(((1, 1),)) == ([], [])


def test_columns_in_another_order_are_merged_key_by_key() -> None:
    """A newest frame listing its keys in another order than the kept sum
    (a counter deleted and seen again) is merged key by key."""
    sums = KeptSums()
    frames = (frame(1, {'a': 0.1, 'b': 1.0}), frame(2, {'a': 0.2}),
              frame(3, {'c': 1.0, 'b': 0.3, 'a': 0.7}))
    window = Window(frames, sums)
    keys, totals = window.counter_totals()
    expected = key_by_key(list(frames))
    assert keys == list(expected)
    assert totals == list(expected.values())


def test_one_column_is_its_own_sum() -> None:
    """A single frame's counters are returned as they are."""
    column = (['a', 'b'], [-0.0, 1.0])
    assert sum_columns([column]) is column


_COUNTERS = st.dictionaries(
    st.sampled_from('abcdef'),
    st.one_of(st.floats(allow_nan=False, allow_infinity=False),
              st.sampled_from([0.0, -0.0, 0.1, 0.2, 1e16])),
    max_size=6,
)


@given(st.lists(_COUNTERS, min_size=1, max_size=6), _COUNTERS, st.booleans())
def test_kept_sums_give_the_totals_of_summing_every_frame(
    counters: list[dict[str, float]], newest: dict[str, float], ordered: bool,
) -> None:
    """With or without kept sums, in any key order, the totals are those of
    the key-by-key sums oldest frame first, saturated."""
    if ordered:  # every frame's keys the first keys of one list
        order = sorted(set().union(newest, *counters))
        counters = [{k: c.get(k, 0.5) for k in order[:len(c)]} for c in counters]
        newest = {k: newest.get(k, 0.5) for k in order[:len(newest)]}
    frames = [frame(i, c) for i, c in enumerate(counters)]
    sums = KeptSums()
    once = Window(tuple(frames), sums).counter_totals()
    frames.append(frame(len(frames), newest))
    again = Window(tuple(frames), sums).counter_totals()
    assert once == Window(tuple(frames[:-1])).counter_totals()
    assert again == Window(tuple(frames)).counter_totals()
    expected = saturated(key_by_key(frames))
    assert {k: repr(v) for k, v in zip(*again, strict=True)} == {
        k: repr(v) for k, v in expected.items()}
