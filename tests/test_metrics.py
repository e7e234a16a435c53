"""Tier 1: the pure formatting core in sprockets_statsd.metrics."""

from __future__ import annotations

import datetime
import decimal
import fractions

import pytest

from sprockets_statsd import metrics
from sprockets_statsd.errors import ConfigurationError


@pytest.mark.parametrize(
    ('name', 'expected'),
    [
        ('plain.name', 'plain.name'),
        ('a:b|c@d#e', 'a_b_c_d_e'),
        ('line\nbreak\r\x00', 'line_break__'),
        ('ünïcode.naïve', 'ünïcode.naïve'),
    ],
)
def test_clean_name_replaces_only_protocol_characters(name: str, expected: str) -> None:
    """Characters that would break a line become '_'; everything else stays."""
    assert metrics.clean_name(name) == expected


@pytest.mark.parametrize(
    ('value', 'expected'),
    [
        (5, '5'),
        (-5, '-5'),
        (0.375, '0.375'),
        (1e-05, '1e-05'),
        (2.0, '2.0'),
        (decimal.Decimal('2.5'), '2.5'),
        (fractions.Fraction(1, 4), '0.25'),
    ],
)
def test_format_number_accepts_finite_numbers(value: object, expected: str) -> None:
    """Integers keep their digits; other reals go through float's repr."""
    assert metrics.format_number(value) == expected


def test_format_number_accepts_int_subclasses() -> None:
    """An IntEnum-like int subclass is sent as its integer value."""

    class Count(int):
        pass

    assert metrics.format_number(Count(7)) == '7'


@pytest.mark.parametrize('value', [float('nan'), float('inf'), -float('inf'), True, 'five',
                                   b'5', None, object()])
def test_format_number_rejects_non_numbers(value: object) -> None:
    """NaN, infinities, booleans, text and other objects are invalid metrics."""
    with pytest.raises(metrics.InvalidMetricError):
        metrics.format_number(value)


@pytest.mark.parametrize(('rate', 'suffix'), [(1, ''), (1.0, ''), (True, ''), (0.5, '|@0.5'),
                                               (0.125, '|@0.125'), (decimal.Decimal('0.25'),
                                                                    '|@0.25')])
def test_format_rate(rate: float, suffix: str) -> None:
    """A rate of 1 (True counts as 1, as in Python) adds nothing; others add |@rate."""
    assert metrics.format_rate(rate) == suffix


@pytest.mark.parametrize('rate', [0, -0.5, 1.5, 2, False, float('nan')])
def test_format_rate_rejects_rates_outside_the_unit_interval(rate: float) -> None:
    """Only rates in (0, 1] can be sent."""
    with pytest.raises(metrics.InvalidMetricError):
        metrics.format_rate(rate)


def test_milliseconds_from_seconds_and_timedelta() -> None:
    """Seconds and timedeltas both become milliseconds."""
    assert metrics.milliseconds(1.5) == 1500.0
    assert metrics.milliseconds(datetime.timedelta(milliseconds=250)) == 250.0


class TestFormatter:
    """Lines for each metric type, with and without prefixes and segments."""

    def test_connector_layout_has_type_segments(self) -> None:
        """The Connector layout is prefix.type.path."""
        f = metrics.Formatter('app', type_segments=True)
        assert f.counter('hits') == 'app.counters.hits:1|c'
        assert f.gauge('load', 3) == 'app.gauges.load:3|g'
        assert f.timer('query', 12.5) == 'app.timers.query:12.5|ms'
        assert f.set('users', 'alice') == 'app.sets.users:alice|s'

    def test_no_prefix_has_no_leading_dot(self) -> None:
        """An empty or None prefix adds nothing at all."""
        assert metrics.Formatter('', type_segments=True).counter('x') == 'counters.x:1|c'
        assert metrics.Formatter(None).counter('x') == 'x:1|c'

    def test_pystatsd_layout_has_no_segments(self) -> None:
        """The synchronous layout is prefix.path."""
        assert metrics.Formatter('svc').timer('t', 3) == 'svc.t:3|ms'

    def test_sample_rate_suffix(self) -> None:
        """Every type carries |@rate when sampled."""
        f = metrics.Formatter()
        assert f.counter('c', 2, 0.5) == 'c:2|c|@0.5'
        assert f.gauge('g', 2, rate=0.5) == 'g:2|g|@0.5'
        assert f.timer('t', 2, 0.5) == 't:2|ms|@0.5'
        assert f.set('s', 2, 0.5) == 's:2|s|@0.5'

    def test_gauge_deltas_are_signed(self) -> None:
        """Deltas always carry a sign, integers and floats alike."""
        f = metrics.Formatter()
        assert f.gauge('g', 3, delta=True) == 'g:+3|g'
        assert f.gauge('g', -2.5, delta=True) == 'g:-2.5|g'
        assert f.gauge('g', 0, delta=True) == 'g:+0|g'

    def test_negative_absolute_gauge_is_zeroed_first(self) -> None:
        """A negative absolute value is sent as 0 then the value, in one payload."""
        f = metrics.Formatter('p', type_segments=True)
        assert f.gauge('g', -4) == 'p.gauges.g:0|g\np.gauges.g:-4|g'
        assert f.gauge('g', -0.5, rate=0.5) == 'p.gauges.g:0|g|@0.5\np.gauges.g:-0.5|g|@0.5'

    def test_negative_timer_is_invalid(self) -> None:
        """Servers reject negative durations, so the client does not send them."""
        with pytest.raises(metrics.InvalidMetricError):
            metrics.Formatter().timer('t', -1)

    def test_names_and_set_values_are_cleaned(self) -> None:
        """Protocol characters in paths, prefixes and set members become '_'."""
        f = metrics.Formatter('a:b', type_segments=True)
        assert f.counter('x|y\nz') == 'a_b.counters.x_y_z:1|c'
        assert f.set('s', 'v:1|c') == 'a_b.sets.s:v_1_c|s'

    def test_non_string_path_is_converted(self) -> None:
        """A path that is not text is str()-ed instead of breaking the call."""
        assert metrics.Formatter().counter(404) == '404:1|c'  # type: ignore[arg-type]

    def test_unicode_names_are_kept(self) -> None:
        """Non-ASCII names stay as they are (encoded as UTF-8 on the wire)."""
        assert metrics.Formatter().counter('café') == 'café:1|c'

    def test_line_is_the_general_form(self) -> None:
        """line() sends any type code with a pre-formatted value, with no type segment."""
        f = metrics.Formatter('p', type_segments=True)
        assert f.line('h', 'hist', '3.5') == 'p.hist:3.5|h'
        assert f.line('c', 'n', '1', 0.25) == 'p.n:1|c|@0.25'
        assert f.counter('n') == 'p.counters.n:1|c'

    def test_lone_surrogates_become_question_marks(self) -> None:
        """Text that UTF-8 cannot encode is replaced instead of raising later."""
        f = metrics.Formatter()
        line = f.counter('bad\ud800name')
        assert line == 'bad?name:1|c'
        assert line.encode() == b'bad?name:1|c'
        assert f.set('s', 'x\udfff') == 's:x?|s'

    @pytest.mark.parametrize(('dialect', 'expected'), [
        ('influxdb', 'p_q.a_b;c,k=v:1|c'),
        ('graphite', 'p,q.a,b_c;k=v:1|c'),
        ('dogstatsd', 'p,q.a,b;c:1|c|#k:v'),
    ])
    def test_tag_separators_in_names_are_replaced(self, dialect: str, expected: str) -> None:
        """A name (or prefix) never contains the character that starts its dialect's tags."""
        f = metrics.Formatter('p,q', tags=metrics.TagSet(dialect))
        assert f.counter('a,b;c', tags={'k': 'v'}) == expected

    def test_head_cache_is_bounded(self) -> None:
        """Past cache_size names are formatted each time instead of cached."""
        f = metrics.Formatter(cache_size=2)
        lines = [f.counter(f'n{i}') for i in range(5)]
        assert lines == [f'n{i}:1|c' for i in range(5)]
        assert f.counter('n4') == 'n4:1|c'
        assert sum(len(cache) for cache in f._heads.values()) == 2

    def test_counter_values(self) -> None:
        """Counters accept negative and float values."""
        f = metrics.Formatter()
        assert f.counter('c', -3) == 'c:-3|c'
        assert f.counter('c', 0.5) == 'c:0.5|c'
        with pytest.raises(metrics.InvalidMetricError):
            f.counter('c', float('nan'))


class TestTags:
    """Tag dialects, constant tags and escaping."""

    def test_unknown_dialect_is_a_configuration_error(self) -> None:
        """The error names the argument and the choices."""
        with pytest.raises(ConfigurationError, match='tag_dialect'):
            metrics.TagSet('prometheus')

    def test_constant_tags_need_a_dialect(self) -> None:
        """Constant tags without a dialect cannot be sent, so they are refused."""
        with pytest.raises(ConfigurationError, match='dialect'):
            metrics.TagSet(None, {'env': 'prod'})

    def test_empty_constant_key_is_refused(self) -> None:
        """A constant tag needs a key."""
        with pytest.raises(ConfigurationError, match='empty'):
            metrics.TagSet('graphite', {'': 'x'})

    def test_per_call_tags_without_dialect_raise(self) -> None:
        """Tags given to a client with no dialect are never dropped silently."""
        with pytest.raises(ConfigurationError, match='no tag dialect'):
            metrics.Formatter().counter('c', tags={'k': 'v'})

    @pytest.mark.parametrize(
        ('dialect', 'expected'),
        [
            ('dogstatsd', 'n:1|c|@0.5|#env:prod,k:v'),
            ('influxdb', 'n,env=prod,k=v:1|c|@0.5'),
            ('graphite', 'n;env=prod;k=v:1|c|@0.5'),
        ],
    )
    def test_dialects(self, dialect: str, expected: str) -> None:
        """Each dialect places constant then per-call tags where it expects them."""
        f = metrics.Formatter(tags=metrics.TagSet(dialect, {'env': 'prod'}))
        assert f.counter('n', 1, 0.5, {'k': 'v'}) == expected

    @pytest.mark.parametrize(
        ('dialect', 'expected'),
        [
            ('dogstatsd', 'n:1|c|#env:prod'),
            ('influxdb', 'n,env=prod:1|c'),
            ('graphite', 'n;env=prod:1|c'),
        ],
    )
    def test_constant_tags_alone(self, dialect: str, expected: str) -> None:
        """Constant tags are rendered without per-call tags."""
        f = metrics.Formatter(tags=metrics.TagSet(dialect, {'env': 'prod'}))
        assert f.counter('n') == expected

    def test_per_call_tags_alone(self) -> None:
        """Per-call tags work without constant ones."""
        f = metrics.Formatter(tags=metrics.TagSet('influxdb'))
        assert f.timer('t', 1, tags={'a': 1}) == 't,a=1:1|ms'

    @pytest.mark.parametrize(
        ('dialect', 'expected'),
        [
            ('dogstatsd', 'n:1|c|#k_x:v_y_z'),
            ('influxdb', 'n,k_x=v_y_z:1|c'),
            ('graphite', 'n;k_x=v_y_z:1|c'),
        ],
    )
    def test_forbidden_characters_are_replaced(self, dialect: str, expected: str) -> None:
        """Separators of the dialect inside keys or values become '_'."""
        bad = {'dogstatsd': ('k,x', 'v|y#z'), 'influxdb': ('k=x', 'v,y z'),
               'graphite': ('k;x', 'v~y=z')}[dialect]
        f = metrics.Formatter(tags=metrics.TagSet(dialect))
        assert f.counter('n', tags={bad[0]: bad[1]}) == expected

    def test_dogstatsd_key_only_tag(self) -> None:
        """A None value gives a DogStatsD key-only tag."""
        f = metrics.Formatter(tags=metrics.TagSet('dogstatsd'))
        assert f.counter('n', tags={'canary': None}) == 'n:1|c|#canary'

    @pytest.mark.parametrize('dialect', ['dogstatsd', 'influxdb', 'graphite'])
    def test_no_dangling_separator_when_every_tag_is_dropped(self, dialect: str) -> None:
        """With no constant tags and only empty keys, no separator is written."""
        f = metrics.Formatter(tags=metrics.TagSet(dialect))
        assert f.counter('x', tags={'': 'lost'}) == 'x:1|c'

    def test_empty_per_call_key_is_skipped(self) -> None:
        """An empty per-call key is dropped but the metric is kept."""
        f = metrics.Formatter(tags=metrics.TagSet('graphite', {'a': 'b'}))
        assert f.counter('n', tags={'': 'x'}) == 'n;a=b:1|c'

    def test_constant_property(self) -> None:
        """The joined constant tags are exposed without a leading separator."""
        assert metrics.TagSet('graphite', {'a': 1, 'b': 2}).constant == 'a=1;b=2'
