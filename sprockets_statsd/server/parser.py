"""Sans-I/O parser of the statsd line protocol as the server accepts it.

Grammar: a packet is split on ``\\n``; empty lines are skipped.  A line
starting with ``_e{`` is a DogStatsD event and one starting with ``_sc|`` a
service check: both are recognised and counted, never aggregated.  Any
other line is ``name:body``.  The name may carry Graphite (``;k=v``) or
InfluxDB (``,k=v``) tags, see :mod:`.tags`.

What follows the name's first ``:`` (the body) is read by
:mod:`._body`.  These two modules hold the *only* copy of these rules.  The
aggregator's hot path calls :func:`parse_body` and :func:`make_key` and
caches their results.
"""

from __future__ import annotations

from typing import NamedTuple

from sprockets_statsd.errors import MetricParseError
from sprockets_statsd.metrics import COUNTER as KIND_COUNTER
from sprockets_statsd.metrics import GAUGE as KIND_GAUGE
from sprockets_statsd.metrics import SET as KIND_SET
from sprockets_statsd.metrics import TIMER as KIND_TIMER
from sprockets_statsd.server._body import (
    CONTAINER_TAG,
    TRAILING_WS,
    Body,
    ParsedValue,
    parse_body,
    parse_value,
)
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

# Service check statuses: OK, WARNING, CRITICAL, UNKNOWN.
_CHECK_STATUSES = frozenset('0123')

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
        if len(fields) >= 3 and fields[1] and fields[2].rstrip(TRAILING_WS) in _CHECK_STATUSES:
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
    return not line.rstrip(TRAILING_WS)


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
