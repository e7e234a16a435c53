"""Every tag dialect in, one canonical key out."""

from __future__ import annotations

import itertools

import pytest

from sprockets_statsd.errors import MetricParseError
from sprockets_statsd.server.parser import Sample, parse_line, parse_packet
from sprockets_statsd.server.tags import canonical_key


@pytest.mark.parametrize(
    'line',
    [
        'page.views:1|c|#env:prod,region:eu',
        'page.views,env=prod,region=eu:1|c',
        'page.views;env=prod;region=eu:1|c',
        'page.views;region=eu:1|c|#env:prod',
        'page.views,region=eu,env=prod:1|c',
    ],
)
def test_every_dialect_gives_the_same_key(line: str) -> None:
    """DogStatsD, InfluxDB and Graphite tags all become sorted ``;k=v``."""
    assert parse_line(line) == [Sample('page.views;env=prod;region=eu', 'c', 1.0)]


def test_every_ordering_is_one_key() -> None:
    """All permutations of one tag set give one key, sorted by tag key."""
    tags = ['b:2', 'a:1', 'c:3']
    keys = {
        parse_line(f'x:1|c|#{",".join(order)}')[0].key
        for order in itertools.permutations(tags)
    }
    assert keys == {'x;a=1;b=2;c=3'}


def test_duplicate_keys_keep_the_last_value() -> None:
    """A key given twice keeps its last value; |# tags come after name tags."""
    assert parse_line('x:1|c|#a:1,a:2')[0].key == 'x;a=2'
    assert parse_line('x;a=1:1|c|#a:2')[0].key == 'x;a=2'
    assert parse_line('x,a=1,b=0,a=3:1|c')[0].key == 'x;a=3;b=0'


def test_empty_tags_and_empty_keys_are_left_out() -> None:
    """``,,``, a lone ``,``, ``;;`` and a tag with an empty key add nothing."""
    assert parse_line('x:1|c|#,')[0].key == 'x'
    assert parse_line('x:1|c|#,,a:1,,')[0].key == 'x;a=1'
    assert parse_line('x:1|c|#:v')[0].key == 'x'
    assert parse_line('x;;a=1;:1|c')[0].key == 'x;a=1'
    assert parse_line('x;=v:1|c')[0].key == 'x'


def test_a_tag_without_a_value_is_true() -> None:
    """``#canary``, ``k:`` and ``;k`` get the value ``true``, which Graphite takes."""
    assert parse_line('x:1|c|#canary')[0].key == 'x;canary=true'
    assert parse_line('x:1|c|#env:')[0].key == 'x;env=true'
    assert parse_line('x;canary:1|c')[0].key == 'x;canary=true'


def test_separators_in_keys_and_values_are_replaced() -> None:
    """``;`` in a key or value and ``=`` in a key would start a new tag."""
    assert parse_line('x:1|c|#a=b:c;d')[0].key == 'x;a_b=c_d'
    assert parse_line('x:1|c|#a:b=c', sanitize=False)[0].key == 'x;a=b=c'


def test_sanitising_cleans_each_part() -> None:
    """Name, keys and values are each cleaned like keyNameSanitize."""
    assert parse_line('my name:1|c|#the env:pro d/x')[0].key == 'my_name;the_env=pro_d-x'


def test_graphite_values_may_hold_commas() -> None:
    """A name with ``;`` is Graphite: a ``,`` there is part of a value."""
    assert parse_line('x;path=/a_b,c:1|c', sanitize=False)[0].key == 'x;path=/a_b,c'


def test_mixed_name_dialects_are_a_bad_line() -> None:
    """``name,a=b;c=d`` mixes InfluxDB into Graphite: the name holds ``=``."""
    with pytest.raises(MetricParseError):
        parse_line('x,a=b;c=d:1|c')
    result = parse_packet(b'x,a=b;c=d:1|c\nok:1|c')
    assert result.bad_lines == 1
    assert result.samples == (Sample('ok', 'c', 1.0),)


def test_prefix_goes_before_the_name() -> None:
    """The key prefix is joined to the name, never to a tag."""
    assert canonical_key('x,b=1,a=2', prefix='p') == 'p.x;a=2;b=1'
    assert canonical_key('x', 'a:1', prefix='p') == 'p.x;a=1'


def test_an_empty_name_is_refused() -> None:
    """A name that is empty before or after sanitising is refused."""
    for name in ('', ';a=b', ',a=b', '!!'):
        with pytest.raises(MetricParseError):
            canonical_key(name, 'a:b')
