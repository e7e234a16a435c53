"""Counter totals over frames: column sums, and the sums of complete frames kept."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sprockets_statsd.server._countersums import (
    EXACT_BELOW,
    MAX_KEPT_SUMS,
    Counted,
    HeadSum,
    KeptSums,
    exact,
    roll,
    sum_columns,
)
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


def test_sums_of_frames_older_than_an_index_are_forgotten() -> None:
    """forget_before drops each sum that holds a frame older than the
    index (windows no longer take it in) and keeps the others, in order."""
    sums = KeptSums()
    for ids in (((1, 1), (2, 1)), ((2, 1), (3, 1)), ((3, 2),)):
        sums.keep(ids, ([], []))
    sums.forget_before(2)
    assert sums.get(((1, 1), (2, 1))) is None
    assert sums.get(((2, 1), (3, 1))) == ([], [])
    assert sums.get(((3, 2),)) == ([], [])
    sums.forget_before(3)
    assert sums.get(((2, 1), (3, 1))) is None
    assert sums.get(((3, 2),)) == ([], [])


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


def same_floats(column: tuple[list[str], list[float]], expected: dict[str, float]) -> bool:
    """The same keys in the same order with bit-identical values (repr tells
    -0.0 from 0.0 and one NaN from a number)."""
    keys, totals = column
    return keys == list(expected) and list(map(repr, totals)) == list(
        map(repr, expected.values()))


def full_sum(frames: list[Frame]) -> tuple[tuple[tuple[int, int], ...], HeadSum]:
    """The kept sum of `frames` as summing them all makes it."""
    sums = KeptSums()
    sums.sum_of(frames)
    ((ids, kept),) = sums._heads.items()
    return ids, kept


def by_rule(frame_id: tuple[int, int], values: object) -> bool:
    """exact() of the values, nothing remembered."""
    assert isinstance(values, (list, type({}.values())))
    return exact(values)


@pytest.mark.parametrize(('values', 'expected'), [
    ([], True),
    ([0.0, 1.0, 3.0, -7.0, EXACT_BELOW - 1, -(EXACT_BELOW - 1)], True),
    ([1.0, 2.0, 0.5], False),
    ([1.0, 0.1], False),
    ([0.0, -0.0], False),
    ([-0.0], False),
    ([-5.0, -0.0, 3.0], False),
    ([EXACT_BELOW], False),
    ([-EXACT_BELOW], False),
    ([1e300], False),
    ([math.inf], False),
    ([-math.inf, 1.0], False),
    ([math.nan], False),
    ([3.0, math.nan, 4.0], False),
])
def test_exact_values_are_whole_numbers_below_the_bound_and_never_minus_zero(
    values: list[float], expected: bool,
) -> None:
    """Only whole numbers of magnitude below EXACT_BELOW, none -0.0, let a
    frame be taken off or added to a sum in any order."""
    assert exact(values) is expected


def test_whole_counts_roll_on_to_the_oldest_first_sum() -> None:
    """A kept sum less its oldest frame plus a new one is the sum of the new
    frames: a key only the dropped frame had goes, a new key is appended."""
    frames = [frame(1, {'a': 1.0, 'b': 2.0, 'gone': 5.0}), frame(2, {'a': 3.0}),
              frame(4, {'a': -3.0, 'b': 7.0}), frame(5, {'a': 2.0, 'b': 0.0, 'new': 9.0})]
    ids, kept = full_sum(frames[:3])
    rolled = roll(ids, kept, frames[1:], by_rule)
    assert rolled is not None
    assert same_floats(rolled.column, key_by_key(frames[1:]))
    assert rolled.column[0] == ['a', 'b', 'new']
    assert rolled.oldest == [3.0]
    assert rolled.lengths == (1, 2, 3)
    # Nothing dropped, a frame added; but not one whose keys are in
    # another order than the frames kept ('new' where 'gone' is).
    assert roll(ids, kept, frames, by_rule) is None
    more = [*frames[:3], frame(6, {'a': 1.0, 'b': 1.0, 'gone': -5.0, 'x': 2.0})]
    grown = roll(ids, kept, more, by_rule)
    assert grown is not None
    assert same_floats(grown.column, key_by_key(more))
    assert grown.oldest is kept.oldest
    # Only dropped.
    shrunk = roll(ids, kept, frames[1:3], by_rule)
    assert shrunk is not None
    assert same_floats(shrunk.column, key_by_key(frames[1:3]))
    assert shrunk.column[1] == [0.0, 7.0]
    assert math.copysign(1, shrunk.column[1][0]) == 1


@pytest.mark.parametrize(('changed', 'reason'), [
    ({'a': 0.5}, 'a fraction'),
    ({'a': -0.0}, 'minus zero'),
    ({'a': EXACT_BELOW}, 'too large'),
    ({'a': math.nan}, 'not a number'),
    ({'a': math.inf}, 'infinite'),
])
@pytest.mark.parametrize('where', [0, 1, 3])
def test_a_value_not_exact_in_any_frame_involved_stops_the_roll(
    changed: dict[str, float], reason: str, where: int,
) -> None:
    """The dropped frame, a frame that stays or the new one: one value that
    is not exact there and the sums are made again, oldest first."""
    counters = [{'a': 1.0, 'b': 1.0}, {'a': 2.0}, {'a': 3.0, 'b': 4.0}, {'a': 1.0, 'b': 2.0}]
    counters[where] = {**counters[where], **changed}
    frames = [frame(i, c) for i, c in enumerate(counters)]
    ids, kept = full_sum(frames[:3])
    assert roll(ids, kept, frames[1:], by_rule) is None, reason


def test_frames_that_do_not_follow_the_kept_ones_are_not_rolled() -> None:
    """Two frames dropped, another frame in the middle, keys in another
    order, a sum kept by hand or too many frames: summed again."""
    frames = [frame(i, {'a': float(i), 'b': 1.0}) for i in range(40)]
    ids, kept = full_sum(frames[:3])
    assert roll(ids, kept, frames[2:5], by_rule) is None  # two dropped
    assert roll(ids, kept, [frames[0], frames[2], frames[3]], by_rule) is None
    assert roll(ids, kept, [], by_rule) is None
    reordered = [*frames[1:3], frame(3, {'b': 1.0, 'a': 2.0})]
    assert roll(ids, kept, reordered, by_rule) is None
    assert roll(ids, HeadSum(kept.column, None, kept.oldest), frames[1:4], by_rule) is None
    assert roll(ids, kept, frames[1:4], by_rule) is not None
    many_ids, many = full_sum(frames[:20])
    assert roll(many_ids, many, frames[1:21], by_rule) is not None
    assert roll(many_ids, many, frames[:32], by_rule) is None  # 32 values a key


def test_exactness_is_learnt_once_per_frame() -> None:
    """A frame's exact() answer is remembered by its index and flushes, so
    a frame that stays in many windows is looked at once."""
    sums = KeptSums()
    assert sums.is_exact((1, 1), [1.0, 2.0])
    assert sums.is_exact((1, 1), [0.5])  # remembered, not looked at again
    assert not sums.is_exact((1, 2), [0.5])


_ANY_VALUE = st.one_of(
    st.integers(-1000, 1000).map(float),
    st.integers(-(2**50), 2**50).map(float),
    st.floats(),
    st.sampled_from([0.0, -0.0, 0.5, 0.1, 1e16, EXACT_BELOW, EXACT_BELOW - 1, 2.0**53,
                     1e308, -1e308, math.inf, -math.inf, math.nan]),
)
_ORDER = [f'k{i}' for i in range(8)]


@st.composite
def frame_sequences(draw: st.DrawFn) -> list[Frame]:
    """Frames with gaps between them, keys mostly in one order (coming and
    going: each frame a prefix of one list), now and then another order,
    and whole counts or any values at all."""
    values = st.integers(-1000, 1000).map(float) if draw(st.booleans()) else _ANY_VALUE
    frames = []
    index = 0
    for _ in range(draw(st.integers(1, 14))):
        index += draw(st.integers(1, 3))
        order = draw(st.permutations(_ORDER)) if draw(st.integers(0, 9)) == 0 else _ORDER
        keys = order[:draw(st.integers(0, len(order)))]
        frames.append(frame(index, {key: draw(values) for key in keys}))
    return frames


@settings(max_examples=400)
@given(frame_sequences(), st.integers(1, 6))
def test_sums_rolled_on_frame_after_frame_are_the_oldest_first_sums(
    frames: list[Frame], width: int,
) -> None:
    """Whatever the values (fractions, -0.0, huge, NaN, infinities), keys
    and gaps, the kept sums of a window moving one frame at a time, rolled
    on or made again, are the plain oldest-first sums bit for bit."""
    sums = KeptSums()
    for last in range(frames[0].index, frames[-1].index + 1):
        head: list[Counted] = [f for f in frames if last - width < f.index <= last]
        if head:
            assert same_floats(sums.sum_of(head), key_by_key(head))  # type: ignore[arg-type]
