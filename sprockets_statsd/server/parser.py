"""Sans-I/O parser of the statsd line protocol as the server accepts it.

Grammar: a packet is split on ``\\n``; empty lines are skipped.  A line
starting with ``_e{`` is a DogStatsD event and one starting with ``_sc|`` a
service check: both are recognised and counted, never aggregated.  Any
other line is ``name:body``.  The name may carry Graphite (``;k=v``) or
InfluxDB (``,k=v``) tags, see :mod:`.tags`.

A body is read in one of two forms, told apart by where its first ``:``
is (a type, a sample rate and a value never contain one):

* **DogStatsD** (``1|c|@0.5|#env:prod|c:abc|T1700000000``): the text before
  the first ``|`` holds one value, or several separated by ``:`` (protocol
  1.1 packing, one sample each, sharing the type, rate and tags; a set's
  member is the whole text, as sets are never packed).  The second field is
  the type.  Every further field is recognised by its prefix: ``@`` sample
  rate, ``#`` tags, ``c:`` container id, ``T`` Unix timestamp, ``card:``
  tag cardinality, ``e:`` external data.  Any other field that starts with
  a letter is a newer extension: it is skipped and counted in
  ``unknown_fields``.  A field that starts with anything else, an empty
  field, or a known field written wrong makes the line bad.
* **etsy's several samples** (``1|c:20|ms``): when the type field, or an
  ``@rate`` field, contains a ``:``, the line is etsy's form where every
  ``:``-separated piece is a ``value|type[|@rate]`` sample of its own; its
  DogStatsD tags are cut off first, as the reference does.  A bad piece is
  counted and skipped; the other pieces still count.

This module holds the *only* copy of these rules.  The aggregator's hot
path calls :func:`parse_body` and :func:`make_key` and caches their
results.
"""

from __future__ import annotations

from typing import NamedTuple

from sprockets_statsd.errors import MetricParseError
from sprockets_statsd.metrics import COUNTER as KIND_COUNTER
from sprockets_statsd.metrics import GAUGE as KIND_GAUGE
from sprockets_statsd.metrics import SET as KIND_SET
from sprockets_statsd.metrics import TIMER as KIND_TIMER
from sprockets_statsd.server.tags import canonical_key, sanitize_key

__all__ = [
    'CONTAINER_TAG',
    'KIND_COUNTER',
    'KIND_GAUGE',
    'KIND_SET',
    'KIND_TIMER',
    'LINE_EVENT',
    'LINE_SERVICE_CHECK',
    'Body',
    'ParseResult',
    'ParsedValue',
    'Sample',
    'is_blank',
    'make_key',
    'other_line',
    'parse_body',
    'parse_line',
    'parse_packet',
    'parse_value',
    'sanitize_key',
]

#: :func:`other_line` results.
LINE_EVENT = 'event'
LINE_SERVICE_CHECK = 'service_check'

#: The tag a kept container id becomes (see ``keep_container_id``).
CONTAINER_TAG = 'container_id'

# Type strings on the wire.  ``h`` and ``d`` (DogStatsD histogram and
# distribution) are timers; every other type is a bad line (the reference
# would silently treat it as a counter).
_TYPES = {
    'c': KIND_COUNTER,
    'ms': KIND_TIMER,
    'h': KIND_TIMER,
    'd': KIND_TIMER,
    'g': KIND_GAUGE,
    's': KIND_SET,
}
# Tolerated after the type, so that ``\r\n`` line ends and padding work.
_TRAILING_WS = ' \t\r\x0b\x0c'
# Service check statuses: OK, WARNING, CRITICAL, UNKNOWN.
_CHECK_STATUSES = frozenset('0123')

#: ``(kind, number, rate, delta, member)`` of one sample: `number` is the
#: value as written (not rate-scaled; 0 for sets), `delta` is true for a
#: gauge written with a leading sign, `member` is the set member (empty for
#: other kinds).
ParsedValue = tuple[str, float, float, bool, str]


#: ``(values, tags, bad, unknown_fields)``: what :func:`parse_body` found
#: after a line's name.  `values` are the good samples in line order;
#: `tags` is the DogStatsD tag text (without ``#``), the container id
#: appended as a tag when it is kept, ``''`` for none; `bad` counts bad
#: pieces (1 for a bad body); `unknown_fields` counts fields skipped because
#: their prefix is unknown.  A plain tuple: one is built per memo miss.
Body = tuple[tuple[ParsedValue, ...], str, int, int]


class Sample(NamedTuple):
    """One metric sample, as :func:`parse_line` and :func:`parse_packet` give it.

    :param key: the final key: name, then the tags as ``;k=v`` pairs sorted
        by key, sanitised and prefixed as configured
    :param kind: ``'c'``, ``'ms'`` (also for ``h`` and ``d``), ``'g'``
        or ``'s'``
    :param value: the number as written, or the member of a set
    :param rate: the sample rate (``1.0`` without ``|@rate``)
    :param delta: a gauge written with a leading ``+`` or ``-``
    """

    key: str
    kind: str
    value: float | str
    rate: float = 1.0
    delta: bool = False


class ParseResult(NamedTuple):
    """What :func:`parse_packet` found in one packet.

    :param samples: the good samples, in packet order
    :param metrics_seen: non-empty lines (the reference's
        ``metrics_received``)
    :param bad_lines: bad pieces (the reference's ``bad_lines_seen``)
    :param events: DogStatsD events seen
    :param service_checks: DogStatsD service checks seen
    :param unknown_fields: fields skipped because their prefix is unknown
    """

    samples: tuple[Sample, ...]
    metrics_seen: int
    bad_lines: int
    events: int = 0
    service_checks: int = 0
    unknown_fields: int = 0


def _number(text: str, what: str) -> float:
    """Parse a finite decimal number the way the server accepts it.

    Python's :class:`float` also takes ``nan``, ``inf``, ``1_000`` and
    non-ASCII digits, none of which is a statsd number; JavaScript's
    ``Number`` takes hexadecimal, which is not either.
    """
    if text.isascii() and '_' not in text:
        try:
            value = float(text)
        except ValueError:
            pass
        else:
            if value - value == 0:  # false for NaN and the infinities
                return value
    raise MetricParseError(f'{what} {text!r} is not a finite decimal number')


def _kind(text: str) -> str:
    kind = _TYPES.get(text) or _TYPES.get(text.rstrip(_TRAILING_WS))
    if kind is None:
        raise MetricParseError(f'unknown metric type {text!r}')
    return kind


def _rate(text: str) -> float:
    rate = _number(text[1:], 'sample rate')
    if not 0 < rate <= 1:
        raise MetricParseError(f'sample rate {text!r} is not in (0, 1]')
    if 1 / rate - 1 / rate != 0:
        # Scaling by 1/rate would give Infinity (or NaN for a zero).
        raise MetricParseError(f'sample rate {text!r} is too small')
    return rate


def _value(kind: str, text: str, rate: float) -> ParsedValue:
    """One sample of `kind` written as `text`."""
    if kind == KIND_SET:
        # The reference stores an empty member as "0".
        return kind, 0.0, rate, False, text or '0'
    value = _number(text, 'value')
    if kind == KIND_TIMER and value < 0:
        raise MetricParseError(f'{text!r}: a timer cannot be negative')
    if kind == KIND_COUNTER and rate != 1.0:
        scaled = value * (1 / rate)
        if scaled - scaled != 0:
            raise MetricParseError(f'{text!r}: the value scaled by the rate is too large')
    delta = kind == KIND_GAUGE and text.startswith(('+', '-'))
    return kind, value, rate, delta, ''


class _Fields:
    """The ``|``-fields after the type, each recognised by its prefix."""

    __slots__ = ('container', 'rate', 'tags', 'unknown')

    def __init__(self, fields: list[str]) -> None:
        self.rate = 1.0
        self.tags = ''
        self.container = ''
        self.unknown = 0
        seen: set[str] = set()
        for field in fields:
            if field.startswith('c:'):
                what = 'c:'
            elif field.startswith('card:'):
                what = 'card:'
            elif field.startswith('e:'):
                what = 'e:'
            else:
                what = field[:1]
                if what not in ('@', '#', 'T'):
                    if what.isascii() and what.isalpha():
                        self.unknown += 1  # a newer extension: skip it
                        continue
                    raise MetricParseError(f'{field!r} is not a known field')
            if what in seen:
                # Only the first of each field counts (the reference reads
                # the first tags only).
                self.unknown += 1
                continue
            seen.add(what)
            rest = field[len(what):]
            if what == '@':
                self.rate = _rate(field)
            elif what == '#':
                self.tags = rest
            elif what == 'T':
                # Aggregated into the current interval: checked, not used.
                if not (rest.isascii() and rest.isdigit()):
                    raise MetricParseError(f'timestamp {field!r} is not T<digits>')
            elif not rest:
                raise MetricParseError(f'field {field!r} is empty')
            elif what == 'c:':
                self.container = rest


def _with_container(fields: _Fields, keep_container_id: bool) -> str:
    if keep_container_id and fields.container:
        tag = f'{CONTAINER_TAG}:{fields.container}'
        return f'{fields.tags},{tag}' if fields.tags else tag
    return fields.tags


def parse_value(piece: str) -> ParsedValue:
    """Parse one ``value|type[|@rate]`` piece of etsy's several-samples form.

    Further fields are read like those of a DogStatsD line; tags and the
    container id have no place in a piece (they would contain a ``:``).

    :param piece: the text between two ``:`` (or after the last one)
    :returns: the parsed piece, see :data:`ParsedValue`
    :raises MetricParseError: for an unknown or missing type, a value that
        is not a finite number (any text is a set member), a negative timer,
        a sample rate that is not ``@`` and a number in (0, 1] or whose
        reciprocal is not finite, a counter whose value scaled by the rate
        is not finite, or a field written wrong
    """
    fields = piece.rstrip(_TRAILING_WS).split('|')
    if len(fields) < 2:
        raise MetricParseError(f'{piece!r} has no "|type"')
    kind = _kind(fields[1])
    rate = _Fields(fields[2:]).rate if len(fields) > 2 else 1.0
    return _value(kind, fields[0], rate)


def _parse_etsy(body: str, keep_container_id: bool) -> Body:
    """A body in etsy's several-samples form (``1|c:20|ms``)."""
    head, hash_, tail = body.partition('|#')
    tags = ''
    unknown = 0
    if hash_:
        fields = _Fields(('#' + tail).split('|'))
        tags = _with_container(fields, keep_container_id)
        unknown = fields.unknown
    values: list[ParsedValue] = []
    bad = 0
    for piece in head.split(':'):
        try:
            values.append(parse_value(piece))
        except MetricParseError:
            bad += 1
    return tuple(values), tags, bad, unknown


_BAD_BODY: Body = ((), '', 1, 0)


def parse_body(body: str, *, keep_container_id: bool = False) -> Body:
    """Parse what follows the name's ``:`` on a line.

    Never raises: bad pieces are counted in the :data:`Body` (1 when the
    whole body is bad).

    :param body: the text after the first ``:`` of the line
    :param keep_container_id: turn a ``|c:`` container id into a
        ``container_id`` tag instead of dropping it
    :returns: the samples, the tag text and the counts
    """
    parts = body.split('|')
    count = len(parts)
    if count == 2:
        # The common ``value|type``: no fields, nothing to strip.
        kind = _TYPES.get(parts[1])
        text = parts[0]
        if kind is not None and kind != KIND_SET and ':' not in text:
            # _value() and _number() inlined: a memo miss is the hot path
            # of timers.  A property test holds it to the general path.
            if text.isascii() and '_' not in text:
                try:
                    number = float(text)
                except ValueError:
                    return _BAD_BODY
                if number - number == 0 and (number >= 0 or kind != KIND_TIMER):
                    delta = kind == KIND_GAUGE and text[0] in '+-'
                    return ((kind, number, 1.0, delta, ''),), '', 0, 0
            return _BAD_BODY
    parts = body.rstrip(_TRAILING_WS).split('|')
    count = len(parts)
    if count < 2:
        return _BAD_BODY
    kind = _TYPES.get(parts[1]) or _TYPES.get(parts[1].rstrip(_TRAILING_WS))
    if kind is None or (count > 2 and parts[2][:1] == '@' and ':' in parts[2]):
        if ':' in parts[1] or kind is not None:
            try:
                return _parse_etsy(body.rstrip(_TRAILING_WS), keep_container_id)
            except MetricParseError:
                pass
        return _BAD_BODY
    rate = 1.0
    tags = ''
    unknown = 0
    if count > 2:
        try:
            fields = _Fields(parts[2:])
        except MetricParseError:
            return _BAD_BODY
        rate = fields.rate
        tags = _with_container(fields, keep_container_id) if fields.container else fields.tags
        unknown = fields.unknown
    text = parts[0]
    if kind == KIND_SET or ':' not in text:
        try:
            return (_value(kind, text, rate),), tags, 0, unknown
        except MetricParseError:
            return _BAD_BODY
    values: list[ParsedValue] = []
    bad = 0
    for piece in text.split(':'):
        try:
            values.append(_value(kind, piece, rate))
        except MetricParseError:
            bad += 1
    return tuple(values), tags, bad, unknown


def other_line(line: str) -> str | None:
    """Whether a line is a DogStatsD event or service check.

    :param line: one line, without its ``\\n``
    :returns: :data:`LINE_EVENT`, :data:`LINE_SERVICE_CHECK`, or ``None``
        for a line that is neither (a metric, or a bad line)
    """
    if line.startswith('_e{'):
        # _e{<title length>,<text length>}:<title>|<text>[|fields]
        lengths, brace, _ = line[3:].partition('}:')
        title, comma, text = lengths.partition(',')
        if (
            brace
            and comma
            and title.isascii()
            and title.isdigit()
            and text.isascii()
            and text.isdigit()
            and int(title) > 0
        ):
            return LINE_EVENT
    elif line.startswith('_sc|'):
        # _sc|<name>|<status>[|fields]
        fields = line.split('|')
        if len(fields) >= 3 and fields[1] and fields[2].rstrip(_TRAILING_WS) in _CHECK_STATUSES:
            return LINE_SERVICE_CHECK
    return None


def make_key(
    raw: str, tags: str = '', *, sanitize: bool = True, prefix: str = ''
) -> str:
    """Build the stored key from a received name and its DogStatsD tags.

    See :func:`.tags.canonical_key` for the rules.

    :param raw: the name as received, Graphite or InfluxDB tags included
    :param tags: the DogStatsD tag text of a :data:`Body`
    :param sanitize: clean the name and the tags
    :param prefix: prepended with a ``.`` unless empty
    :returns: the key under which the sample is aggregated
    :raises MetricParseError: when the name is empty or mixes dialects, and
        for the names of events (``_e{``) and service checks (``_sc|``),
        so that such a line is one or a bad line, never a metric
    """
    if raw.startswith(('_e{', '_sc|')):
        raise MetricParseError(f'{raw!r} is an event or service check')
    return canonical_key(raw, tags, sanitize=sanitize, prefix=prefix)


def is_blank(line: str) -> bool:
    """Whether a line is empty once trailing whitespace is removed.

    Such lines are skipped without being counted.

    :param line: one line, without its ``\\n``
    """
    return not line.rstrip(_TRAILING_WS)


def parse_line(
    line: bytes | str,
    *,
    sanitize: bool = True,
    prefix: str = '',
    keep_container_id: bool = False,
) -> list[Sample]:
    """Parse one metric line strictly.

    :param line: the line, without its ``\\n``; bytes are decoded as UTF-8
        with replacement characters, as the reference does
    :param sanitize: clean the key (``keyNameSanitize``)
    :param prefix: key prefix, see :attr:`.AggregatorConfig.key_prefix`
    :param keep_container_id: see :func:`parse_body`
    :returns: one sample per value; none for a blank line (unknown fields
        are skipped)
    :raises MetricParseError: if any part of the line is bad, and for an
        event or a service check (which carry no sample)
    """
    text = line.decode('utf-8', 'replace') if isinstance(line, bytes) else line
    if is_blank(text):
        return []
    name, colon, rest = text.partition(':')
    if not colon:
        raise MetricParseError(f'{text!r} has no ":value|type"')
    values, tags, bad, _ = parse_body(rest, keep_container_id=keep_container_id)
    if bad:
        raise MetricParseError(f'{text!r} is not a good statsd line')
    key = make_key(name, tags, sanitize=sanitize, prefix=prefix)
    return [_sample(key, value) for value in values]


def _sample(key: str, parsed: ParsedValue) -> Sample:
    kind, number, rate, delta, member = parsed
    return Sample(key, kind, member if kind == KIND_SET else number, rate, delta)


def parse_packet(
    data: bytes,
    *,
    sanitize: bool = True,
    prefix: str = '',
    keep_container_id: bool = False,
) -> ParseResult:
    """Parse a datagram (or a chunk of complete lines) leniently.

    Never raises: a bad line, or a bad piece of a line, is counted in
    :attr:`ParseResult.bad_lines` and the rest of the packet is parsed.

    :param data: the packet
    :param sanitize: clean keys (``keyNameSanitize``)
    :param prefix: key prefix, see :attr:`.AggregatorConfig.key_prefix`
    :param keep_container_id: see :func:`parse_body`
    :returns: the good samples and the counts
    """
    samples: list[Sample] = []
    seen = bad = events = checks = unknown = 0
    for line in data.decode('utf-8', 'replace').split('\n'):
        if is_blank(line):
            continue
        seen += 1
        name, colon, rest = line.partition(':')
        values, tags, bad_pieces, unknown_fields = parse_body(
            rest, keep_container_id=keep_container_id
        )
        try:
            if not colon:
                raise MetricParseError(f'{line!r} has no ":value|type"')
            key = make_key(name, tags, sanitize=sanitize, prefix=prefix)
        except MetricParseError:
            # Only a line that is no metric can be an event or a check.
            other = other_line(line)
            if other == LINE_EVENT:
                events += 1
            elif other == LINE_SERVICE_CHECK:
                checks += 1
            else:
                bad += 1
            continue
        bad += bad_pieces
        unknown += unknown_fields
        samples.extend(_sample(key, value) for value in values)
    return ParseResult(tuple(samples), seen, bad, events, checks, unknown)
