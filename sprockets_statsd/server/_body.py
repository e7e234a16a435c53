"""The grammar of a statsd line's body: what follows the name's first ``:``.

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

Used by :mod:`.parser` (lines and packets) and by the aggregator's memo
of bodies; this is the only copy of these rules.
"""

from __future__ import annotations

from sprockets_statsd.errors import MetricParseError
from sprockets_statsd.metrics import COUNTER as KIND_COUNTER
from sprockets_statsd.metrics import GAUGE as KIND_GAUGE
from sprockets_statsd.metrics import SET as KIND_SET
from sprockets_statsd.metrics import TIMER as KIND_TIMER

__all__ = [
    'CONTAINER_TAG',
    'TRAILING_WS',
    'Body',
    'ParsedValue',
    'parse_body',
    'parse_value',
]

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
TRAILING_WS = ' \t\r\x0b\x0c'

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
    kind = _TYPES.get(text) or _TYPES.get(text.rstrip(TRAILING_WS))
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
    fields = piece.rstrip(TRAILING_WS).split('|')
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
    parts = body.rstrip(TRAILING_WS).split('|')
    count = len(parts)
    if count < 2:
        return _BAD_BODY
    kind = _TYPES.get(parts[1]) or _TYPES.get(parts[1].rstrip(TRAILING_WS))
    if kind is None or (count > 2 and parts[2][:1] == '@' and ':' in parts[2]):
        if ':' in parts[1] or kind is not None:
            try:
                return _parse_etsy(body.rstrip(TRAILING_WS), keep_container_id)
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
