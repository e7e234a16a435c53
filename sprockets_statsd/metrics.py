"""Pure formatting of statsd lines: names, values, sample rates and tag dialects.

Strategy: every client in this package (the asyncio :class:`~.Connector` and
the synchronous clients) formats through one :class:`Formatter`.  The part of
a line that depends only on the metric type and the name (prefix, type
segment, cleaned name, constant tags) is computed once per name and kept in a
small bounded cache, so the hot path is one dictionary look-up, one number
formatting and one string concatenation.

Nothing here touches sockets, the event loop or a clock.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping

from sprockets_statsd._dialects import DIALECTS, NAME_TABLE, NAME_TABLES, TagSet

__all__ = [
    'COUNTER',
    'DIALECTS',
    'GAUGE',
    'SET',
    'TIMER',
    'TYPE_SEGMENTS',
    'Formatter',
    'InvalidMetricError',
    'TagSet',
    'clean_name',
    'encode',
    'format_number',
    'format_rate',
    'milliseconds',
]

# The metric types on the wire, shared by the clients and the server's parser.
COUNTER = 'c'
GAUGE = 'g'
TIMER = 'ms'
SET = 's'

#: Path segment that :class:`~.Connector` puts between its prefix and the
#: metric path, for compatibility with sprockets-statsd 1.0.
TYPE_SEGMENTS: Mapping[str, str] = {
    COUNTER: 'counters',
    GAUGE: 'gauges',
    TIMER: 'timers',
    SET: 'sets',
}

# Beyond this many distinct names the head cache stops growing: a service
# that invents names per request must not turn the cache into a leak.
DEFAULT_CACHE_SIZE = 10_000


class InvalidMetricError(ValueError):
    """A metric value or sample rate cannot be sent.

    Raised by the formatting functions; the clients catch it on the hot path,
    count the metric as dropped and log (throttled) instead of raising.
    """


def clean_name(name: str, dialect: str | None = None) -> str:
    """Return `name` with protocol characters replaced by ``_``.

    ``:``, ``|``, ``@``, ``#``, carriage return, newline and NUL would end
    the name early or start a new line, so each becomes ``_``; so does the
    character that starts the tags of `dialect` (``,`` for InfluxDB, ``;``
    for Graphite).  Everything else, including non-ASCII text (sent as
    UTF-8), is left alone, except lone surrogates, which cannot be encoded
    and become ``?``.
    """
    cleaned = name.translate(NAME_TABLES.get(dialect, NAME_TABLE))
    if not cleaned.isascii():
        cleaned = cleaned.encode('utf-8', 'replace').decode('utf-8')
    return cleaned


def encode(text: str) -> bytes:
    """Encode a line as UTF-8, replacing what cannot be encoded with ``?``.

    A lone surrogate (in a set member or a tag) cannot be encoded: renaming
    that one character is better than losing the metric or raising into the
    caller.
    """
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode('utf-8', 'replace')


def format_number(value: object) -> str:
    """Format a metric value for the wire.

    :param value: an :class:`int` or a finite :class:`float` (anything that
        :func:`float` accepts, such as :class:`~decimal.Decimal`, is
        converted to a float first)
    :raises InvalidMetricError: for booleans, non-numbers, NaN and infinity
    """
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is float:
        if math.isfinite(value):  # type: ignore[arg-type]
            return repr(value)
        raise InvalidMetricError(f'{value!r} is not a finite number')
    if kind is bool or isinstance(value, (str, bytes)):
        raise InvalidMetricError(f'{value!r} is not a number')
    if isinstance(value, int):
        return str(int(value))
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidMetricError(f'{value!r} is not a number') from None
    return format_number(number)


def format_rate(rate: float) -> str:
    """Return the ``|@rate`` suffix for a sample rate, empty for 1.

    :raises InvalidMetricError: unless ``0 < rate <= 1``
    """
    if rate == 1:  # True counts as 1, as it does everywhere in Python
        return ''
    if not 0 < rate < 1:
        raise InvalidMetricError(f'sample rate {rate!r} is not in (0, 1]')
    return f'|@{rate!r}' if type(rate) is float else f'|@{float(rate)!r}'


def milliseconds(duration: float | datetime.timedelta) -> float:
    """Convert seconds (or a :class:`~datetime.timedelta`) to milliseconds."""
    if isinstance(duration, datetime.timedelta):
        return duration.total_seconds() * 1000.0
    return duration * 1000.0


class Formatter:
    """Builds complete statsd lines for one client.

    :param prefix: prepended to every name with a ``.``; empty or ``None``
        for none
    :param type_segments: insert ``counters``/``gauges``/``timers``/``sets``
        between the prefix and the path (the :class:`~.Connector` layout);
        the synchronous clients leave it off, as pystatsd does
    :param tags: the client's :class:`TagSet`
    :param cache_size: how many names to remember per metric type (by
        default :data:`DEFAULT_CACHE_SIZE`, read when the formatter is made)

    Every name cache of a client lives here, so that a new prefix means a
    new formatter and nothing else to reset.  Every method returns the
    line(s) as :class:`str` without a trailing newline.  A negative absolute
    gauge is returned as two lines joined with ``\\n`` (``0`` first) and
    must be sent in one datagram or write.
    """

    __slots__ = (
        '_cache_size',
        '_counter_heads',
        '_gauge_heads',
        '_heads',
        '_plain_tail',
        '_prefix',
        '_segments',
        '_set_heads',
        '_timer_heads',
        'increment_lines',
        'increment_payloads',
        'tags',
    )

    def __init__(
        self,
        prefix: str | None = '',
        *,
        type_segments: bool = False,
        tags: TagSet | None = None,
        cache_size: int | None = None,
    ) -> None:
        self.tags = tags if tags is not None else TagSet()
        self._prefix = f'{clean_name(prefix, self.tags.dialect)}.' if prefix else ''
        self._segments = type_segments
        self._cache_size = DEFAULT_CACHE_SIZE if cache_size is None else cache_size
        # DogStatsD puts tags after the type, so constant tags are a tail.
        self._plain_tail = (
            self.tags.render(None) if self.tags.dialect == 'dogstatsd' else ''
        )
        self._heads: dict[str, dict[str, str]] = {
            code: {} for code in ('', COUNTER, GAUGE, TIMER, SET)
        }
        # The same caches as attributes: each type's method looks its head up
        # inline (``(not tags and cache.get(path)) or self._head(...)``),
        # which saves a call on every metric whose name was seen before.
        self._counter_heads = self._heads[COUNTER]
        self._gauge_heads = self._heads[GAUGE]
        self._timer_heads = self._heads[TIMER]
        self._set_heads = self._heads[SET]
        #: ``incr(path)`` with the defaults, by far the most frequent call,
        #: as a finished line and as a finished payload, by path.  Read them
        #: directly on the hot path; fill them with :meth:`increment_line`
        #: and :meth:`increment_payload`.
        self.increment_lines: dict[str, str] = {}
        self.increment_payloads: dict[str, bytes] = {}

    @property
    def timer_heads(self) -> dict[str, str]:
        """The cache of :meth:`head` for timers, by path (read it, do not fill it)."""
        return self._timer_heads

    def increment_line(self, path: str) -> str:
        """Return (and remember, within the bound) the line of ``incr(path)``."""
        line = self.counter(path)
        if len(self.increment_lines) < self._cache_size:
            self.increment_lines[path] = line
        return line

    def increment_payload(self, path: str) -> bytes:
        """Return (and remember, within the bound) the encoded line of ``incr(path)``."""
        payload = encode(self.counter(path))
        if len(self.increment_payloads) < self._cache_size:
            self.increment_payloads[path] = payload
        return payload

    @property
    def plain_tail(self) -> str:
        """What follows the type code when no per-call tags are given."""
        return self._plain_tail

    def head(self, code: str, path: str) -> str:
        """Return ``name:`` (with constant tags where the dialect puts them)."""
        return self._head(code, path, None)

    def name(self, code: str, path: str) -> str:
        """Return the full metric name for `path` of type `code`."""
        path = clean_name(path, self.tags.dialect)
        if self._segments and code in TYPE_SEGMENTS:
            return f'{self._prefix}{TYPE_SEGMENTS[code]}.{path}'
        return f'{self._prefix}{path}'

    def _head(self, code: str, path: str, tags: Mapping[str, object] | None) -> str:
        """Return ``name[tags]:`` (or ``name:`` for DogStatsD, tags go last)."""
        if not tags:
            cache = self._heads.get(code)
            if cache is not None:
                head = cache.get(path)
                if head is not None:
                    return head
            head = self._compose(code, path, None)
            if cache is not None and len(cache) < self._cache_size:
                cache[path] = head
            return head
        return self._compose(code, path, tags)

    def _compose(self, code: str, path: object, tags: Mapping[str, object] | None) -> str:
        # Paths are meant to be text, but a number or an enum member must not
        # take the application down: str() it, as the Tornado mixins do.
        name = self.name(code, path if isinstance(path, str) else str(path))
        if self.tags.dialect in ('influxdb', 'graphite'):
            return f'{name}{self.tags.render(tags)}:'
        return f'{name}:'

    def _suffix(self, rate: float, tags: Mapping[str, object] | None) -> str:
        """Return what follows the type code: the sample rate, then any tail."""
        if rate == 1 and not tags:  # the common case, in one frame
            return self._plain_tail
        return f'{format_rate(rate)}{self._tail(tags)}'

    def _tail(self, tags: Mapping[str, object] | None) -> str:
        if not tags:
            return self._plain_tail
        if self.tags.dialect == 'dogstatsd':
            return self.tags.render(tags)
        if self.tags.dialect is None:
            self.tags.render(tags)  # raises ConfigurationError
        return ''

    def line(
        self,
        code: str,
        path: str,
        value: str,
        rate: float = 1,
        tags: Mapping[str, object] | None = None,
    ) -> str:
        """Return one line with an already formatted `value`.

        This is the general form behind :meth:`~.Connector.inject_metric`:
        no type segment is added, and `code` is sent as given (after protocol
        characters are replaced).
        """
        code = clean_name(code)
        value = clean_name(value)
        return f'{self._head("", path, tags)}{value}|{code}{format_rate(rate)}{self._tail(tags)}'

    def counter(
        self,
        path: str,
        value: float = 1,
        rate: float = 1,
        tags: Mapping[str, object] | None = None,
    ) -> str:
        """Return a counter line: ``name:value|c``."""
        if rate == 1 and not tags and type(value) is int:
            head = self._counter_heads.get(path) or self._head(COUNTER, path, None)
            return f'{head}{value}|c{self._plain_tail}'
        return (
            f'{(not tags and self._counter_heads.get(path)) or self._head(COUNTER, path, tags)}'
            f'{format_number(value)}|c'
            f'{self._suffix(rate, tags)}'
        )

    def timer(
        self,
        path: str,
        millis: float,
        rate: float = 1,
        tags: Mapping[str, object] | None = None,
    ) -> str:
        """Return a timer line: ``name:millis|ms``.

        :raises InvalidMetricError: for a negative duration, which statsd
            servers reject
        """
        text = format_number(millis)
        if text[0] == '-':
            raise InvalidMetricError(f'duration {millis!r} is negative')
        head = (not tags and self._timer_heads.get(path)) or self._head(TIMER, path, tags)
        return f'{head}{text}|ms{self._suffix(rate, tags)}'

    def gauge(
        self,
        path: str,
        value: float,
        delta: bool = False,
        rate: float = 1,
        tags: Mapping[str, object] | None = None,
    ) -> str:
        """Return a gauge line, or two for a negative absolute value.

        A delta is always signed (``+3``, ``-2.5``).  A statsd server reads
        any signed value as a delta, so an absolute negative value is sent as
        ``0`` followed by the value, in one payload.
        """
        text = format_number(value)
        head = (not tags and self._gauge_heads.get(path)) or self._head(GAUGE, path, tags)
        tail = f'|g{self._suffix(rate, tags)}'
        if delta:
            if text[0] != '-':
                text = '+' + text
            return f'{head}{text}{tail}'
        if text[0] == '-':
            return f'{head}0{tail}\n{head}{text}{tail}'
        return f'{head}{text}{tail}'

    def set(
        self,
        path: str,
        value: object,
        rate: float = 1,
        tags: Mapping[str, object] | None = None,
    ) -> str:
        """Return a set line: ``name:value|s``; the value is any text."""
        # clean_name(), written out: a set member is new text on every call.
        text = (value if isinstance(value, str) else str(value)).translate(NAME_TABLE)
        if not text.isascii():
            text = text.encode('utf-8', 'replace').decode('utf-8')
        head = (not tags and self._set_heads.get(path)) or self._head(SET, path, tags)
        return f'{head}{text}|s{self._suffix(rate, tags)}'
