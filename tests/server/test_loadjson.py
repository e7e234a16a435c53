"""The load report's JSON: the same bytes as json.dumps, with names laid out once."""

from __future__ import annotations

import json
import math
import sys

from hypothesis import given
from hypothesis import strategies as st

from sprockets_statsd.server._finite import LARGEST, saturated
from sprockets_statsd.server._loadjson import MAX_LAYOUTS, Layout, Layouts, render
from sprockets_statsd.server.frames import Frame, Window
from sprockets_statsd.server.http import _report
from tests.server.test_countersums import key_by_key


def frame(index: int, counters: dict[str, float], **kinds: dict[str, float]) -> Frame:
    """A frame holding exactly these aggregates."""
    made = Frame(index)
    made.counters = counters
    made.gauges = kinds.get('gauges', {})
    return made


def reference(window: Window, last_frame_time: int = 60) -> bytes:
    """The report as json.dumps writes it."""
    return json.dumps(_report(window, last_frame_time), separators=(',', ':')).encode()


def test_report_matches_json_dumps_for_every_kind_and_collision() -> None:
    """Counters, timers, gauges and sets, sorted; a gauge named like a
    counter shows the gauge's value, as in Window.stat."""
    first = frame(1, {'b': 2.0, 'stats.gauges.g': 5.0, 'a': 0.5})
    first.timers = {'t': [12.0, 8.0, 4.0, 2.0, 2]}
    first.sets = {'s': {'x', 'y'}}
    first.set_peaks = {'s': 2}
    second = frame(2, {'b': 1.0, 'stats.gauges.g': 1.0, 'a': 0.25, 'c': 1e-7},
                   gauges={'g': 7.0})
    window = Window((first, second))
    body = render(window, 60, Layouts())
    assert body == reference(window)
    assert json.loads(body)['Stat']['stats.gauges.g'] == 7
    assert body.startswith(b'{"last_frame_time":60,"Stat":{"a":0.75,"b":3,"c":1e-07,')


def test_values_whose_json_is_not_their_repr_are_written_as_json_dumps_does() -> None:
    """-0.0 is 0, whole numbers from 2**53 keep their .0, huge values their
    exponent, and non-finite values are null."""
    values = [-0.0, 2.0**53, -(2.0**53), 2.0**53 - 1, 1e16, LARGEST, -LARGEST, 0.1, 3.0,
              -3.0, sys.float_info.min]
    gauges = {'inf': math.inf, 'nan': math.nan, 'zero': -0.0}
    window = Window((frame(1, {f'k{i:02d}': v for i, v in enumerate(values)}, gauges=gauges),))
    body = render(window, 0, Layouts())
    assert body == reference(window, 0)
    assert b'"k00":0,' in body
    assert b'"k01":9007199254740992.0,' in body
    assert b'"k03":9007199254740991,' in body
    assert b'"stats.gauges.inf":null' in body
    assert b'"stats.gauges.zero":0}' in body


def test_an_empty_window_reports_an_empty_stat() -> None:
    """No frames: no names, the same JSON as json.dumps."""
    assert render(Window(()), 5, Layouts()) == b'{"last_frame_time":5,"Stat":{}}'


def test_reports_of_the_same_names_share_one_layout() -> None:
    """The sorted names' text is made once for a list of names and kept
    while later reports show the same names with other values."""
    layouts = Layouts()
    window = Window((frame(1, {'z': 1.0, 'a': 2.0}),))
    render(window, 0, layouts)
    kept = layouts.get(['z', 'a'], [])
    later = Window((frame(1, {'z': 5.0, 'a': 0.5}),))
    assert render(later, 0, layouts) == reference(later, 0)
    assert layouts.get(['z', 'a'], []) is kept


def test_new_names_get_a_new_layout_and_only_the_latest_are_kept() -> None:
    """A name added or removed is laid out anew; at most MAX_LAYOUTS are
    kept, the oldest dropped first."""
    layouts = Layouts()
    windows = [Window((frame(1, {f'n{j}': 1.0 for j in range(i + 1)}),))
               for i in range(MAX_LAYOUTS + 1)]
    made = []
    for window in windows:
        assert render(window, 0, layouts) == reference(window, 0)
        made.append(layouts.get(list(window.frames[0].counters), []))
    assert layouts.get(list(windows[-1].frames[0].counters), []) is made[-1]
    assert layouts.get(list(windows[0].frames[0].counters), []) is not made[0]
    # Fewer names than a kept layout: laid out anew, not a prefix of it.
    fewer = Window((frame(1, {'n0': 1.0}),))
    assert render(fewer, 0, layouts) == reference(fewer, 0)


def test_totals_follow_the_oldest_frame_first_when_keys_share_an_order() -> None:
    """Frames listing their keys as the first keys of the newest (a name
    first seen later is appended) are summed column by column, giving
    exactly the key-by-key sums, also where float addition rounds."""
    frames = [
        frame(1, {'a': 0.1, 'b': 0.7}),
        frame(2, {'a': 0.2, 'b': 0.1, 'c': 0.3}),
        frame(3, {'a': 0.3}),
        frame(4, {'a': 1e16, 'b': 0.2, 'c': 0.6, 'd': -0.0}),
    ]
    keys, totals = Window(tuple(frames)).counter_totals()
    expected = key_by_key(frames)
    assert keys == list(expected)
    assert totals == list(expected.values())
    assert totals[0] == 0.1 + 0.2 + 0.3 + 1e16
    assert math.copysign(1, totals[3]) == 1  # 0.0 + -0.0, as the loop does


def test_frames_in_another_order_are_key_by_key() -> None:
    """Keys in different orders (a counter deleted and seen again) fall back
    to the merge key by key, with the same sums and overflow saturated."""
    frames = [
        frame(1, {'a': 0.1, 'b': LARGEST}),
        frame(2, {'b': LARGEST, 'a': 0.2, 'c': 1.0}),
        frame(3, {'c': 2.0, 'a': 0.3}),
    ]
    keys, totals = Window(tuple(frames)).counter_totals()
    expected = key_by_key(frames)
    assert keys == list(expected)
    assert totals == [0.1 + 0.2 + 0.3, LARGEST, 3.0]


_VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**60), 2**60).map(float),
    st.sampled_from([0.0, -0.0, 1.0, 0.1, 2.0**53]),
)


@given(st.lists(st.dictionaries(st.sampled_from('abcdefgh'), _VALUES, max_size=8),
                min_size=1, max_size=5),
       st.dictionaries(st.sampled_from(['a', 'x', 'stats.gauges.b']), _VALUES, max_size=3),
       st.booleans())
def test_any_frames_give_the_bytes_of_json_dumps(
    counters: list[dict[str, float]], gauges: dict[str, float], ordered: bool,
) -> None:
    """Whatever the keys, their order and the values, the report is the one
    json.dumps writes of Window.stat, and the sums the key-by-key ones."""
    if ordered:  # each frame's keys the first keys of one list
        order = sorted(set().union(*counters))
        counters = [{k: c.get(k, 1.0) for k in order[:len(c)]} for c in counters]
    frames = [frame(i, c) for i, c in enumerate(counters)]
    frames[-1].gauges = gauges
    window = Window(tuple(frames))
    assert window.counters() == dict(saturated(key_by_key(frames)))
    layouts = Layouts()
    assert render(window, 1, layouts) == reference(window, 1)
    assert render(window, 1, layouts) == reference(window, 1)


def same_layout(made: Layout, keys: list[str], others: list[str]) -> bool:
    """Names, places and texts as laying every name out anew gives them."""
    fresh = Layout(keys, others)
    return (made.names, made.places, made.texts, made.shadowed) == (
        fresh.names, fresh.places, fresh.texts, fresh.shadowed)


def test_keys_appended_are_inserted_into_the_kept_layout() -> None:
    """New counters (appended to the keys) are inserted where they sort;
    one named like another name already shown keeps that name's value."""
    keys, others = [f'k{i:03d}' for i in range(0, 200, 2)], ['stats.gauges.g', 'k051']
    base = Layout(keys, others)
    grown = [*keys, 'k051', 'a', 'k999', 'k101']
    made = Layout.changed(base, keys, others, grown, others)
    assert same_layout(made, grown, others)
    assert made.names[:2] == ['a', 'k000']
    assert made.texts[0] == '"a":'
    assert made.names.count('k051') == 1


def test_names_that_leave_are_taken_out_of_the_kept_layout() -> None:
    """Keys and other names that leave are taken out; the places of the
    rest follow the keys that remain."""
    keys, others = [f'k{i:03d}' for i in range(100)], ['stats.gauges.g', 'stats.sets.s.count']
    base = Layout(keys, others)
    fewer = [key for key in keys if key not in {'k000', 'k050', 'k099'}]
    assert same_layout(Layout.changed(base, keys, others, fewer, others), fewer, others)
    assert same_layout(Layout.changed(base, keys, others, keys, others[:1]), keys, others[:1])


def test_names_that_come_and_go_at_once_are_laid_out_as_anew() -> None:
    """Keys gone and keys new, other names changed, a key that becomes
    another name's and many new names (laid out anew): the same layout."""
    keys, others = [f'k{i:03d}' for i in range(100)], ['stats.gauges.g']
    base = Layout(keys, others)
    changes = [
        ([*keys[1:], 'new'], others),
        (keys, ['stats.gauges.h', 'stats.gauges.g']),
        ([*keys[:10], *keys[11:], 'a'], ['k005', 'stats.gauges.g']),
        (keys, []),
        ([f'n{i}' for i in range(300)], others),
        ([*keys, *(f'n{i}' for i in range(300))], others),
        (keys[:10], others),
        (keys, [f'stats.gauges.n{i}' for i in range(200)]),
    ]
    for new_keys, new_others in changes:
        made = Layout.changed(base, keys, others, new_keys, new_others)
        assert same_layout(made, new_keys, new_others)


_NAMES = st.sampled_from([f'n{i}' for i in range(12)] + ['stats.gauges.n1', 'a', 'z'])


@given(st.lists(_NAMES, unique=True), st.lists(_NAMES, unique=True), st.data())
def test_a_changed_layout_is_the_layout_of_its_names(
    keys: list[str], others: list[str], data: st.DataObject,
) -> None:
    """Whatever keys leave (in order), come (appended, some of them keys
    that left), move between keys and other names, and whatever other
    names change, the layout made from a kept one is the one laid out
    anew; so too for keys in another order."""
    kept = [key for key in keys if data.draw(st.booleans())]
    appended = data.draw(st.lists(_NAMES.filter(lambda name: name not in kept), unique=True))
    new_keys = kept + appended
    if data.draw(st.booleans()):
        new_keys = data.draw(st.permutations(new_keys))
    new_others = data.draw(st.one_of(st.just(others), st.lists(_NAMES, unique=True)))
    base = Layout(keys, others)
    assert same_layout(Layout.changed(base, keys, others, new_keys, new_others),
                       new_keys, new_others)


def test_many_keys_gone_in_a_large_layout_are_moved_in_place() -> None:
    """Keys gone here and there among thousands, a key become another name
    and back: the places of the keys after them move down, as laying the
    names out anew gives them."""
    keys = [f'k{i:05d}' for i in range(5000)]
    others = ['k00007', 'stats.gauges.g']
    base = Layout(keys, others)
    gone = set(keys[::97]) | {keys[0], keys[-1]}
    new_keys = [key for key in keys if key not in gone] + [keys[0], 'new']
    for new_others in (others, ['stats.gauges.g'], ['k00097', 'k04999', 'x']):
        made = Layout.changed(base, keys, others, new_keys, new_others)
        assert same_layout(made, new_keys, new_others)


def test_reports_of_changing_names_are_the_bytes_of_json_dumps() -> None:
    """Reports one after the other, names appended, gone and changing kind,
    each made from the layout before: the bytes of json.dumps."""
    layouts = Layouts()
    counters = [{f'c{i}': float(i) for i in range(50)}]
    counters.append({**counters[0], 'b': 0.5, 'zz': 2.0})
    counters.append({key: value for key, value in counters[1].items() if key != 'c7'})
    counters.append({**counters[2], 'stats.gauges.c3': 1.0})
    for i, values in enumerate(counters):
        window = Window((frame(i, values, gauges={'c3': 5.0} if i % 2 else {}),))
        assert render(window, 0, layouts) == reference(window, 0)


def dict_layout(
    keys: list[str], others: list[str],
) -> tuple[list[str], list[int], list[str], frozenset[str]]:
    """The plain definition of a layout: a dictionary of every name's place,
    a key's counted from the start and another name's from the end (which
    wins for a name that is both), sorted; each name as json.dumps writes
    a key."""
    places = dict(zip(keys, range(len(keys)), strict=True))
    shadowed = frozenset(name for name in others if name in places)
    places.update(zip(others, range(-len(others), 0), strict=True))
    names = sorted(places)
    return (names, [places[name] for name in names],
            [json.dumps({name: 0}, separators=(',', ':'))[1:-2] for name in names], shadowed)


_PIECES = ['a', 'b', 'é', '€', '\U0001f600', '"', '\\', '\x00', '\x7f', '\n', 'stats.gauges.', ' ']
_ANY_NAMES = st.lists(st.lists(st.sampled_from(_PIECES), max_size=4).map(''.join), unique=True)


@given(_ANY_NAMES, st.data())
def test_a_layout_is_the_dictionary_of_every_place_sorted(
    pool: list[str], data: st.DataObject,
) -> None:
    """Keys and other names from one pool (so that some are both: the
    other name's place shows and the name is shadowed), with empty,
    non-ASCII, quoted, backslashed and control characters: laid out as the
    plain definition with a dictionary gives them."""
    some = st.lists(st.sampled_from(pool), unique=True) if pool else st.just([])
    keys, others = data.draw(some), data.draw(some)
    made = Layout(keys, others)
    assert (made.names, list(made.places), made.texts, made.shadowed) == dict_layout(
        keys, others)


def test_a_large_layout_with_shadowed_names_is_the_dictionary_of_every_place() -> None:
    """Thousands of keys, some of them other names too, in no sorted
    order: the plain definition's layout."""
    keys = [f'k{(i * 7919) % 5000:05d}' for i in range(5000)]
    others = [*keys[::250], *(f'stats.timers.t{i}.sum' for i in range(100))]
    made = Layout(keys, others)
    assert len(made.shadowed) == 20
    assert (made.names, list(made.places), made.texts, made.shadowed) == dict_layout(
        keys, others)


def test_names_sorted_ahead_are_laid_out_by_the_first_answer() -> None:
    """Names sorted ahead (no text) give the first layout of those names,
    its names the very list sorted then, and are then dropped; names that
    changed since are moved in as into a kept layout; once a layout is
    kept, sorting ahead does nothing."""
    keys, others = [f'k{i:03d}' for i in range(99, -1, -1)], ['stats.gauges.g', 'k050']
    layouts = Layouts()
    layouts.sort_ahead(keys, others)
    (_, order), = layouts._ahead.items()
    made = layouts.get(keys, others)
    assert made.names is order[0]
    assert same_layout(made, keys, others)
    assert not layouts._ahead.items()
    layouts.sort_ahead(keys[:50], others)
    assert not layouts._ahead.items()  # a layout is kept: made from it
    for new_keys, new_others in (([*keys[1:], 'new'], others), (keys, []), (keys[:3], others)):
        fresh = Layouts()
        fresh.sort_ahead(keys, others)
        assert same_layout(fresh.get(new_keys, new_others), new_keys, new_others)
