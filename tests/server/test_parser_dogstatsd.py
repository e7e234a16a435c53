"""DogStatsD 1.0 to 1.3 fields, packed values, events and service checks."""

from __future__ import annotations

import pytest

from sprockets_statsd.errors import MetricParseError
from sprockets_statsd.server.parser import (
    LINE_EVENT,
    LINE_SERVICE_CHECK,
    Sample,
    other_line,
    parse_body,
    parse_line,
    parse_packet,
)


def test_container_id_is_dropped_by_default() -> None:
    """``|c:<id>`` after the tags neither corrupts them nor makes a series."""
    assert parse_line('a:1|c|#env:prod|c:abc') == [Sample('a;env=prod', 'c', 1.0)]
    assert parse_line('a:1|c|c:abc') == [Sample('a', 'c', 1.0)]


def test_container_id_can_be_kept_as_a_tag() -> None:
    """With keep_container_id the id becomes a sorted ``container_id`` tag."""
    assert parse_line('a:1|c|#env:prod|c:abc', keep_container_id=True) == [
        Sample('a;container_id=abc;env=prod', 'c', 1.0)
    ]
    assert parse_line('a:1|c|c:abc', keep_container_id=True) == [
        Sample('a;container_id=abc', 'c', 1.0)
    ]


def test_fields_are_recognised_in_any_order() -> None:
    """Rate, tags, container, timestamp, cardinality and external data."""
    line = 'a:2|c|T1700000000|card:low|e:it-false,cn-app|c:abc|#env:prod|@0.5'
    assert parse_line(line) == [Sample('a;env=prod', 'c', 2.0, 0.5)]


def test_timestamped_sample_counts_in_the_current_interval() -> None:
    """``|T<seconds>`` (protocol 1.3) is accepted; the sample is kept."""
    assert parse_line('a:1|g|T1700000000') == [Sample('a', 'g', 1.0)]


@pytest.mark.parametrize('field', ['x', 'zz:1', 'future:a:b,c', 'Xyz'])
def test_unknown_fields_are_skipped_and_counted(field: str) -> None:
    """A letter-led field the server does not know is skipped and counted."""
    result = parse_packet(f'a:1|c|{field}|#t:v'.encode())
    assert result.samples == (Sample('a;t=v', 'c', 1.0),)
    assert result.unknown_fields == 1
    assert result.bad_lines == 0


def test_a_repeated_field_counts_once() -> None:
    """Only the first of each field applies; the repeat is an unknown field."""
    result = parse_packet(b'a:1|c|@0.5|@0.1|#x:1|#y:2')
    assert result.samples == (Sample('a;x=1', 'c', 1.0, 0.5),)
    assert result.unknown_fields == 2


@pytest.mark.parametrize(
    ('line', 'reason'),
    [
        ('a:1|g|T', 'timestamp without digits'),
        ('a:1|g|T-5', 'negative timestamp'),
        ('a:1|g|T12x', 'timestamp with letters'),
        ('a:1|c|c:', 'empty container id'),
        ('a:1|c|card:', 'empty cardinality'),
        ('a:1|c|e:', 'empty external data'),
        ('a:1|c|9', 'a field led by a digit'),
        ('a:1|c|!x', 'a field led by punctuation'),
        ('a:1|c||#t:v', 'an empty field'),
        ('a:1|c|@2|#t:v', 'a rate above 1 among other fields'),
    ],
)
def test_malformed_fields_make_a_bad_line(line: str, reason: str) -> None:
    """A known field written wrong, or a field no extension can be, is bad."""
    with pytest.raises(MetricParseError):
        parse_line(line)
    result = parse_packet(f'{line}\nok:1|c'.encode())
    assert result.bad_lines == 1
    assert result.samples == (Sample('ok', 'c', 1.0),)


def test_packed_values_are_one_sample_each() -> None:
    """``name:v1:v2:v3|type`` (protocol 1.1) shares the type, rate and tags."""
    assert parse_line('lat:1:2:3|d|@0.5|#env:prod') == [
        Sample('lat;env=prod', 'ms', 1.0, 0.5),
        Sample('lat;env=prod', 'ms', 2.0, 0.5),
        Sample('lat;env=prod', 'ms', 3.0, 0.5),
    ]
    assert parse_line('hits:1:2|c') == [Sample('hits', 'c', 1.0), Sample('hits', 'c', 2.0)]
    assert parse_line('g:5:+1:-2|g') == [
        Sample('g', 'g', 5.0),
        Sample('g', 'g', 1.0, 1.0, True),
        Sample('g', 'g', -2.0, 1.0, True),
    ]


def test_a_set_member_is_never_unpacked() -> None:
    """Sets are not packed: the whole text, ``:`` included, is one member."""
    assert parse_line('users:a:b|s') == [Sample('users', 's', 'a:b')]


def test_a_bad_packed_value_is_counted_alone() -> None:
    """A packed value that is no number is one bad piece; the others count."""
    result = parse_packet(b'lat:1:x:3|ms')
    assert result.samples == (Sample('lat', 'ms', 1.0), Sample('lat', 'ms', 3.0))
    assert result.bad_lines == 1
    with pytest.raises(MetricParseError):
        parse_line('lat:1:x:3|ms')


def test_etsy_several_samples_keep_their_meaning() -> None:
    """A ``:`` in the type or rate field marks etsy's form: a type per piece."""
    assert parse_line('k:1|c:20|ms') == [Sample('k', 'c', 1.0), Sample('k', 'ms', 20.0)]
    assert parse_line('k:1|c|@0.5:2|ms|#t:v') == [
        Sample('k;t=v', 'c', 1.0, 0.5),
        Sample('k;t=v', 'ms', 2.0),
    ]
    # In etsy's form an untyped piece is bad, as in the reference.
    result = parse_packet(b'k:1|c:2:3|ms')
    assert result.samples == (Sample('k', 'c', 1.0), Sample('k', 'ms', 3.0))
    assert result.bad_lines == 1


def test_etsy_form_reads_fields_after_its_tags() -> None:
    """The container id after the tags of an etsy line is not a tag either."""
    assert parse_line('k:1|c:2|c|#t:v|c:abc') == [
        Sample('k;t=v', 'c', 1.0),
        Sample('k;t=v', 'c', 2.0),
    ]


def test_parse_body_counts() -> None:
    """parse_body reports bad pieces and unknown fields of one body."""
    assert parse_body('1:x|c|zz|#a:b') == ((('c', 1.0, 1.0, False, ''),), 'a:b', 1, 1)
    assert parse_body('1')[2] == 1
    assert parse_body('1|c|0.5')[2] == 1


@pytest.mark.parametrize(
    'line',
    [
        '_e{5,4}:title|text',
        '_e{5,4}:title|text|d:1700000000|h:web1|p:low|t:error|#env:prod',
        '_e{1,0}:t|',
    ],
)
def test_events_are_recognised(line: str) -> None:
    """DogStatsD events are counted in their own counter, not as bad lines."""
    assert other_line(line) == LINE_EVENT
    result = parse_packet(f'{line}\na:1|c'.encode())
    assert (result.events, result.bad_lines, result.metrics_seen) == (1, 0, 2)
    assert result.samples == (Sample('a', 'c', 1.0),)


@pytest.mark.parametrize('line', ['_sc|redis|2', '_sc|db.up|0|d:1|h:x|#env:prod|m:slow\\nok'])
def test_service_checks_are_recognised(line: str) -> None:
    """DogStatsD service checks are counted in their own counter."""
    assert other_line(line) == LINE_SERVICE_CHECK
    result = parse_packet(line.encode())
    assert (result.service_checks, result.bad_lines) == (1, 0)
    with pytest.raises(MetricParseError):
        parse_line(line)


@pytest.mark.parametrize(
    'line', ['_e{x,4}:title|text', '_e{5}:title', '_e{0,1}:|x', '_sc|redis', '_sc||0', '_sc|r|7']
)
def test_malformed_events_and_checks_are_bad_lines(line: str) -> None:
    """An event or service check that does not follow its grammar is bad."""
    assert other_line(line) is None
    result = parse_packet(line.encode())
    assert (result.events, result.service_checks, result.bad_lines) == (0, 0, 1)


def test_an_event_that_reads_like_a_metric_is_an_event() -> None:
    """``_e{1,1}:1|c`` (title ``1``, text ``c``) is an event, never a counter."""
    result = parse_packet(b'_e{1,1}:1|c\n_sc|x:1|0')
    assert (result.events, result.service_checks, result.samples) == (1, 1, ())
    with pytest.raises(MetricParseError):
        parse_line('_e{1,1}:1|c')


def test_a_name_like_an_event_is_a_bad_line() -> None:
    """A line starting ``_e{`` that is no event is bad, not the metric ``_e``."""
    result = parse_packet(b'_e{x}:1|c')
    assert (result.events, result.bad_lines, result.samples) == (0, 1, ())
