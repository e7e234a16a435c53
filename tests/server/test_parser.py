"""The server's line grammar: reference rules and our departures."""

from __future__ import annotations

import pytest

from sprockets_statsd.errors import MetricParseError
from sprockets_statsd.server.parser import (
    ParseResult,
    Sample,
    is_blank,
    make_key,
    parse_body,
    parse_line,
    parse_packet,
    parse_value,
    sanitize_key,
)


def test_counter_line() -> None:
    """A plain counter line gives one counter sample with rate 1."""
    assert parse_line(b'gorets:1|c') == [Sample('gorets', 'c', 1.0, 1.0, False)]


def test_each_type_is_recognised() -> None:
    """c, ms, g and s map to their kinds; a set keeps its member text."""
    assert parse_line('t:320|ms') == [Sample('t', 'ms', 320.0)]
    assert parse_line('g:333|g') == [Sample('g', 'g', 333.0)]
    assert parse_line('s:765|s') == [Sample('s', 's', '765')]


@pytest.mark.parametrize('alias', ['h', 'd'])
def test_histogram_and_distribution_are_timers(alias: str) -> None:
    """DogStatsD ``h`` and ``d`` are accepted as aliases of ``ms``."""
    assert parse_line(f'lat:12.5|{alias}') == [Sample('lat', 'ms', 12.5)]


def test_several_values_per_line() -> None:
    """Every ``:``-separated piece after the name is a sample of that key."""
    assert parse_line('k:1|c:20|ms:3|g') == [
        Sample('k', 'c', 1.0),
        Sample('k', 'ms', 20.0),
        Sample('k', 'g', 3.0),
    ]


def test_sample_rate() -> None:
    """``|@rate`` is carried on the sample, unscaled."""
    assert parse_line('k:2|c|@0.1') == [Sample('k', 'c', 2.0, 0.1)]
    assert parse_line('k:2|ms|@.5') == [Sample('k', 'ms', 2.0, 0.5)]
    assert parse_line('k:2|c|@1') == [Sample('k', 'c', 2.0, 1.0)]


def test_fields_after_the_rate_are_ignored() -> None:
    """The reference reads three fields; anything after them is ignored."""
    assert parse_line('k:2|c|@0.5|extra') == [Sample('k', 'c', 2.0, 0.5)]


@pytest.mark.parametrize(
    ('text', 'value'),
    [('1.5', 1.5), ('-3', -3.0), ('+3', 3.0), ('1e3', 1000.0), ('.5', 0.5), ('5.', 5.0)],
)
def test_counter_numbers(text: str, value: float) -> None:
    """Counters take floats, signs and scientific notation."""
    assert parse_line(f'k:{text}|c')[0].value == value


def test_gauge_sign_marks_a_delta() -> None:
    """A gauge written with a leading + or - is a delta, otherwise absolute."""
    assert parse_line('g:+4|g')[0].delta
    assert parse_line('g:-4|g')[0].delta
    assert not parse_line('g:4|g')[0].delta
    assert not parse_line('c:-4|c')[0].delta


def test_empty_set_member_is_zero() -> None:
    """An empty set value inserts ``"0"``, as the reference does."""
    assert parse_line('s:|s') == [Sample('s', 's', '0')]


def test_set_member_is_any_text() -> None:
    """Set values are not validated as numbers."""
    assert parse_line('s:user@example|s')[0].value == 'user@example'


def test_dogstatsd_tags_become_graphite_tags() -> None:
    """``|#k:v,k2:v2`` becomes ``;k=v;k2=v2`` on the key."""
    assert parse_line('req:1|c|#env:prod,region:eu') == [
        Sample('req;env=prod;region=eu', 'c', 1.0)
    ]


def test_separators_inside_a_tag_cannot_start_another() -> None:
    """Every ``;`` in a tag key becomes ``_``; the first ``:`` ends the key.

    The reference replaced only the first ``;``, so that the rest started
    a second, malformed tag; sanitising deletes the remaining ``:``.
    """
    assert parse_line('k:1|c|#a;b;c:x:y')[0].key == 'k;a_b_c=xy'


def test_tags_with_rate_and_several_values() -> None:
    """Tags are cut off first, so rates and multiple values still work."""
    assert parse_line('k:1|c|@0.5:2|ms|#t:v') == [
        Sample('k;t=v', 'c', 1.0, 0.5),
        Sample('k;t=v', 'ms', 2.0),
    ]


def test_empty_tags_are_dropped() -> None:
    """An empty tag list or empty tags add nothing to the key."""
    assert parse_line('k:1|c|#')[0].key == 'k'
    assert parse_line('k:1|c|#,a:b,')[0].key == 'k;a=b'


def test_only_the_first_tag_block_counts() -> None:
    """Text after a second ``|#`` is ignored, like the reference's split."""
    assert parse_line('k:1|c|#a:b|#c:d')[0].key == 'k;a=b'


def test_graphite_style_tags_pass_through() -> None:
    """``name;k=v`` keys keep their ``;`` and ``=``."""
    assert parse_line('k;dc=eu:1|c')[0].key == 'k;dc=eu'


@pytest.mark.parametrize(
    ('raw', 'clean'),
    [
        ('fo/o', 'fo-o'),
        ('b ar', 'b_ar'),
        ('foo+bar', 'foobar'),
        ('a \t\u00a0 b', 'a_b'),
        ('a\x1cb', 'ab'),
        ('ok.name-1_x;t=v', 'ok.name-1_x;t=v'),
        ('caf\u00e9', 'caf'),
    ],
)
def test_sanitize_key(raw: str, clean: str) -> None:
    """Whitespace runs -> ``_``, ``/`` -> ``-``, other oddities deleted.

    Whitespace is JavaScript's ``\\s``: ``\\x1c`` is not whitespace there.
    """
    assert sanitize_key(raw) == clean


def test_sanitising_can_be_switched_off() -> None:
    """With ``sanitize=False`` the received name is kept as is."""
    assert parse_line('a b/c:1|c', sanitize=False)[0].key == 'a b/c'
    assert parse_line('a b/c:1|c')[0].key == 'a_b-c'


def test_key_prefix() -> None:
    """The gstatsd ``-x`` prefix is joined to the key with a dot."""
    assert parse_line('k:1|c', prefix='host1')[0].key == 'host1.k'
    assert make_key('k;a=b', prefix='p') == 'p.k;a=b'


def test_crlf_and_trailing_whitespace_after_the_type() -> None:
    """``\\r\\n`` line ends and padding after the type are tolerated."""
    assert parse_line('k:1|c\r') == [Sample('k', 'c', 1.0)]
    assert parse_line('s:abc|s \t') == [Sample('s', 's', 'abc')]
    assert parse_line('k:1|c|@0.5\r') == [Sample('k', 'c', 1.0, 0.5)]
    assert parse_line('k:1|c|#a:b\r')[0].key == 'k;a=b'


def test_blank_line_gives_nothing() -> None:
    """A line of whitespace is not a metric and not an error."""
    assert parse_line(b'') == []
    assert parse_line(b' \r') == []
    assert is_blank('\t\r')
    assert not is_blank('k')


def test_value_with_surrounding_spaces() -> None:
    """Like JavaScript's Number(), spaces around a number are accepted."""
    assert parse_line('k: 5 |c')[0].value == 5.0


@pytest.mark.parametrize(
    ('line', 'reason'),
    [
        ('k', 'no value at all (the reference reads it as "1" with no type)'),
        ('k:1', 'no type'),
        ('k:1|', 'empty type'),
        (':1|c', 'empty name'),
        ('+++:1|c', 'name empty after sanitising'),
        ('k:1|x', 'unknown type (a counter in the reference)'),
        ('k:1|C', 'types are case-sensitive'),
        ('k:1|MS', 'types are case-sensitive'),
        ('k:abc|c', 'not a number'),
        ('k:|c', 'empty counter value'),
        ('k:|g', 'empty gauge value'),
        ('k: |c', 'whitespace is no number'),
        ('k:NaN|c', 'NaN'),
        ('k:Infinity|g', 'Infinity'),
        ('k:-Infinity|c', '-Infinity'),
        ('k:inf|c', 'Python spelling of infinity'),
        ('k:1e999|c', 'overflows to infinity'),
        ('k:0x10|c', 'hexadecimal'),
        ('k:0b1|c', 'binary'),
        ('k:1_000|c', 'Python digit grouping'),
        ('k:\u0663|c', 'non-ASCII digit'),
        ('k:-1|ms', 'negative timer'),
        ('k:-1|ms\r', 'negative timer behind a trailing CR'),
        ('k:-1|h', 'negative histogram'),
        ('k:1|c|0.5', 'rate without @'),
        ('k:1|c|@', 'empty rate'),
        ('k:1|c|', 'empty third field'),
        ('k:1|c|@0', 'zero rate'),
        ('k:1|c|@1.5', 'rate above 1'),
        ('k:1|c|@-0.5', 'negative rate'),
        ('k:1|c|@NaN', 'NaN rate'),
        ('k:1|c|@0x1', 'hexadecimal rate'),
        ('k:1|s|@2', 'rates are checked for sets too'),
        ('k:1|c:', 'a trailing empty piece'),
    ],
)
def test_bad_lines_raise(line: str, reason: str) -> None:
    """Every departure and every reference rejection is a bad line."""
    with pytest.raises(MetricParseError):
        parse_line(line)


def test_parse_value_reports_the_parts() -> None:
    """parse_value returns kind, number, rate, delta flag and member."""
    assert parse_value('5|g|@0.5') == ('g', 5.0, 0.5, False, '')
    assert parse_value('-5|g') == ('g', -5.0, 1.0, True, '')
    assert parse_value('x|s') == ('s', 0.0, 1.0, False, 'x')


def test_parse_body_parts() -> None:
    """parse_body returns the samples, the tag text and the counts."""
    assert parse_body('1|c:2|c|#x:y') == (
        (('c', 1.0, 1.0, False, ''), ('c', 2.0, 1.0, False, '')), 'x:y', 0, 0
    )
    with pytest.raises(MetricParseError):
        parse_line('no-colon')


def test_make_key_rejects_empty_names() -> None:
    """An empty name, or one that sanitises to nothing, is refused."""
    with pytest.raises(MetricParseError):
        make_key('')
    with pytest.raises(MetricParseError):
        make_key('!!;a=b')
    with pytest.raises(MetricParseError):
        make_key('', sanitize=False)


def test_parse_packet_counts_lines_and_bad_pieces() -> None:
    """Good samples survive next to bad lines; empty lines are not counted."""
    result = parse_packet(b'a:1|c\n\nbad\nb:2|ms:x|y:3|g\r\n\r\nc:zz|c\n')
    assert isinstance(result, ParseResult)
    assert result.samples == (
        Sample('a', 'c', 1.0),
        Sample('b', 'ms', 2.0),
        Sample('b', 'g', 3.0),
    )
    assert result.metrics_seen == 4
    assert result.bad_lines == 3


def test_parse_packet_applies_sanitize_and_prefix() -> None:
    """parse_packet passes the key options on."""
    result = parse_packet(b'a b:1|c', sanitize=False, prefix='p')
    assert result.samples == (Sample('p.a b', 'c', 1.0),)


def test_parse_packet_bad_name_counts_once() -> None:
    """A line whose name is empty is one bad line, however many pieces."""
    assert parse_packet(b':1|c:2|c').bad_lines == 1


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    """Undecodable bytes become U+FFFD: a set member keeps it, names drop it."""
    result = parse_packet(b's:\xff|s\nk\xff:1|c')
    assert result.samples == (Sample('s', 's', '\ufffd'), Sample('k', 'c', 1.0))


@pytest.mark.parametrize('piece', [
    '0|c|@5e-324',   # 1/rate is Infinity: 0 * Infinity is NaN
    '1|c|@5e-324',
    '1e308|c|@0.1',  # finite, but 1e309 once scaled
    '1|ms|@5e-324',  # the timer's count would grow by Infinity
])
def test_samples_not_finite_once_scaled_are_bad(piece: str) -> None:
    """A sample whose value scaled by its sample rate (or the rate's
    reciprocal) is not finite is a bad piece, never an aggregate."""
    with pytest.raises(MetricParseError):
        parse_value(piece)


def test_the_largest_finite_samples_are_good() -> None:
    """Samples that are finite once scaled are accepted unchanged."""
    assert parse_value('1e308|c|@1')[1] == 1e308
    assert parse_value('1e308|ms')[1] == 1e308
    assert parse_value('1|c|@1e-300')[2] == 1e-300
