"""Sans-I/O parser of the statsd line protocol as the server accepts it.

Grammar (etsy statsd v0.10, with the departures listed in the docs):
a packet is split on ``\\n`` and empty lines are skipped.  DogStatsD tags
(``|#k:v,k2:v2``) are cut off the line first and become ``;k=v;k2=v2`` on
the key.  The rest is split on ``:``: the first piece is the name, every
further piece is a separate ``value|type[|@rate]`` sample of that key.  A
bad piece is counted and skipped; the other pieces still count.

This module holds the *only* copy of these rules.  The aggregator's hot
path calls the same helpers (:func:`split_line`, :func:`parse_value`,
:func:`make_key`) and merely caches their results.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

from sprockets_statsd.errors import MetricParseError

__all__ = [
    'KIND_COUNTER',
    'KIND_GAUGE',
    'KIND_SET',
    'KIND_TIMER',
    'ParseResult',
    'ParsedValue',
    'Sample',
    'is_blank',
    'make_key',
    'parse_line',
    'parse_packet',
    'parse_value',
    'sanitize_key',
    'split_line',
]

KIND_COUNTER = 'c'
KIND_TIMER = 'ms'
KIND_GAUGE = 'g'
KIND_SET = 's'

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
# JavaScript's ``\s``, which the reference uses to sanitise names.
_WHITESPACE_RUN = re.compile(
    '[\t\n\x0b\x0c\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]+'
)
_DISALLOWED = re.compile(r'[^A-Za-z0-9_.;=\-]')
# Distinct tag sets remembered; a service sends few, garbage evicts itself.
_MAX_TAG_SETS = 4096

#: ``(kind, number, rate, delta, member)`` of one ``value|type[|@rate]``
#: piece: `number` is the value as written (not rate-scaled; 0 for sets),
#: `delta` is true for a gauge written with a leading sign, `member` is the
#: set member (empty for other kinds).
ParsedValue = tuple[str, float, float, bool, str]


class Sample(NamedTuple):
    """One metric sample, as :func:`parse_line` and :func:`parse_packet` give it.

    :param key: the final key: name, then the DogStatsD tags as
        ``;k=v`` pairs, sanitised and prefixed as configured
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
    """

    samples: tuple[Sample, ...]
    metrics_seen: int
    bad_lines: int


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


def parse_value(piece: str) -> ParsedValue:
    """Parse one ``value|type[|@rate]`` piece of a line.

    Fields after the sample rate are ignored, as in the reference.

    :param piece: the text between two ``:`` (or after the last one)
    :returns: the parsed piece, see :data:`ParsedValue`
    :raises MetricParseError: for an unknown or missing type, a value that
        is not a finite number (any text is a set member), a negative timer
        or a sample rate that is not ``@`` and a number in (0, 1]
    """
    fields = piece.split('|')
    if len(fields) < 2:
        raise MetricParseError(f'{piece!r} has no "|type"')
    kind = _TYPES.get(fields[1]) or _TYPES.get(fields[1].rstrip(_TRAILING_WS))
    if kind is None:
        raise MetricParseError(f'{piece!r}: unknown metric type {fields[1]!r}')
    rate = 1.0
    if len(fields) > 2:
        rate_text = fields[2]
        if rate_text[:1] != '@':
            raise MetricParseError(f'{piece!r}: {rate_text!r} is not "@rate"')
        rate = _number(rate_text[1:], 'sample rate')
        if not 0 < rate <= 1:
            raise MetricParseError(f'{piece!r}: sample rate must be in (0, 1]')
    text = fields[0]
    if kind == KIND_SET:
        # The reference stores an empty member as "0".
        return kind, 0.0, rate, False, text or '0'
    value = _number(text, 'value')
    if kind == KIND_TIMER and value < 0:
        raise MetricParseError(f'{piece!r}: a timer cannot be negative')
    delta = kind == KIND_GAUGE and text.startswith(('+', '-'))
    return kind, value, rate, delta, ''


def split_line(line: str) -> tuple[str, str, list[str]]:
    """Split one line into its name, its tag suffix and its value pieces.

    :param line: one line, without the ``\\n``
    :returns: ``(name, tags, pieces)`` where `tags` is ``''`` or the
        DogStatsD tags as ``;k=v`` pairs (in each tag the first ``;``
        becomes ``_`` and the first ``:`` becomes ``=``, empty tags are
        dropped) and `pieces` are the ``value|type[|@rate]`` texts
    :raises MetricParseError: when there is no ``:`` after the name
    """
    line = line.rstrip(_TRAILING_WS)
    tags = ''
    if '|#' in line:
        line, _, tag_text = line.partition('|#')
        tags = _tag_suffix(tag_text)
    name, colon, rest = line.partition(':')
    if not colon:
        raise MetricParseError(f'{line!r} has no ":value|type"')
    return name, tags, rest.split(':')


@functools.lru_cache(maxsize=_MAX_TAG_SETS)
def _tag_suffix(tag_text: str) -> str:
    """``a:b,c:d`` -> ``;a=b;c=d`` (memoised: services repeat tag sets)."""
    return ''.join(
        ';' + tag.replace(';', '_', 1).replace(':', '=', 1)
        for tag in tag_text.split('|#', 1)[0].split(',')
        if tag
    )


def sanitize_key(key: str) -> str:
    """Clean a key like the reference's ``keyNameSanitize``.

    Runs of whitespace become ``_``, ``/`` becomes ``-``, and every
    character outside ``[A-Za-z0-9_.;=-]`` is deleted.

    :param key: the received name, tags included
    :returns: the cleaned key
    """
    return _DISALLOWED.sub('', _WHITESPACE_RUN.sub('_', key).replace('/', '-'))


def make_key(raw: str, *, sanitize: bool = True, prefix: str = '') -> str:
    """Build the stored key from a received name and tag suffix.

    :param raw: the name followed by the tag suffix of :func:`split_line`
    :param sanitize: apply :func:`sanitize_key`
    :param prefix: prepended with a ``.`` unless empty
    :returns: the key under which the sample is aggregated
    :raises MetricParseError: when the name part (before any ``;``) is
        empty
    """
    key = sanitize_key(raw) if sanitize else raw
    if not key or key[0] == ';':
        raise MetricParseError(f'{raw!r}: the metric name is empty')
    return f'{prefix}.{key}' if prefix else key


def is_blank(line: str) -> bool:
    """Whether a line is empty once trailing whitespace is removed.

    Such lines are skipped without being counted.

    :param line: one line, without its ``\\n``
    """
    return not line.rstrip(_TRAILING_WS)


def parse_line(
    line: bytes | str, *, sanitize: bool = True, prefix: str = ''
) -> list[Sample]:
    """Parse one line strictly.

    :param line: the line, without its ``\\n``; bytes are decoded as UTF-8
        with replacement characters, as the reference does
    :param sanitize: clean the key (``keyNameSanitize``)
    :param prefix: key prefix, see :attr:`.AggregatorConfig.key_prefix`
    :returns: one sample per ``value|type`` piece; none for a blank line
    :raises MetricParseError: if any part of the line is bad
    """
    text = line.decode('utf-8', 'replace') if isinstance(line, bytes) else line
    if is_blank(text):
        return []
    name, tags, pieces = split_line(text)
    key = make_key(name + tags, sanitize=sanitize, prefix=prefix)
    samples = []
    for piece in pieces:
        kind, number, rate, delta, member = parse_value(piece)
        value: float | str = member if kind == KIND_SET else number
        samples.append(Sample(key, kind, value, rate, delta))
    return samples


def parse_packet(
    data: bytes, *, sanitize: bool = True, prefix: str = ''
) -> ParseResult:
    """Parse a datagram (or a chunk of complete lines) leniently.

    Never raises: a bad line, or a bad piece of a line, is counted in
    :attr:`ParseResult.bad_lines` and the rest of the packet is parsed.

    :param data: the packet
    :param sanitize: clean keys (``keyNameSanitize``)
    :param prefix: key prefix, see :attr:`.AggregatorConfig.key_prefix`
    :returns: the good samples and the counts of lines and bad pieces
    """
    samples: list[Sample] = []
    seen = bad = 0
    for line in data.decode('utf-8', 'replace').split('\n'):
        if is_blank(line):
            continue
        seen += 1
        try:
            name, tags, pieces = split_line(line)
            key = make_key(name + tags, sanitize=sanitize, prefix=prefix)
        except MetricParseError:
            bad += 1
            continue
        for piece in pieces:
            try:
                kind, number, rate, delta, member = parse_value(piece)
            except MetricParseError:
                bad += 1
                continue
            value: float | str = member if kind == KIND_SET else number
            samples.append(Sample(key, kind, value, rate, delta))
    return ParseResult(tuple(samples), seen, bad)
