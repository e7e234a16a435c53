"""The one body behind every metric method: sample, format, count if invalid, emit.

Strategy: the public metric methods come in two faces, because the two APIs
differ in their signatures and units: the asyncio face
(:class:`~sprockets_statsd.connector.AbstractConnector`: seconds,
keyword-only ``rate``) and the pystatsd face
(:class:`~sprockets_statsd.client.StatsClientBase`: milliseconds,
positional ``rate``).  Each face method only normalises its arguments and
calls :meth:`Emitter._metric` with a *kind*; that one method samples, asks the
:class:`~sprockets_statsd.metrics.Formatter` for the line, counts and logs an
invalid value, and hands the line to the transport's one hook, ``_emit``.

What differs per transport is that hook (enqueue, ``sendto``, a stream
write, a list append, a record) and the drop counting (``_invalid``).  The
fastest calls (``incr(path)`` with the defaults, a plain ``timing``) have
transport-specific fast paths in front of the body; they read the caches that
the formatter owns, so a new prefix is a new formatter and nothing else.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping

from sprockets_statsd import metrics
from sprockets_statsd._dialects import TagSet

__all__ = ['COUNTER', 'GAUGE', 'KIND_CODES', 'RAW', 'SECONDS', 'SET', 'TIMER', 'Emitter']

Tags = typing.Optional[Mapping[str, object]]  # noqa: UP045 - a runtime alias on 3.10

# The kinds of metric the body formats.  They are not the wire codes: a
# timer comes in milliseconds (pystatsd face) or in seconds (asyncio face),
# and an injected line carries a type code of the caller's choosing, which
# may well be 'c' but must not get a counter's type segment.
COUNTER = 'counter'
GAUGE = 'gauge'
TIMER = 'timer'  # the value is in milliseconds
SECONDS = 'seconds'  # a timer whose value is in seconds
SET = 'set'
RAW = 'raw'  # inject_metric: the value is preformatted, the code is `extra`

#: The statsd type code of each kind (RAW's is the caller's).
KIND_CODES: Mapping[str, str] = {
    COUNTER: metrics.COUNTER,
    GAUGE: metrics.GAUGE,
    TIMER: metrics.TIMER,
    SECONDS: metrics.TIMER,
    SET: metrics.SET,
}


class Emitter:
    """The shared body of the metric methods; subclasses provide the hooks.

    A subclass sets ``_formatter`` and ``_random`` and implements
    :meth:`_emit` (move one line) and :meth:`_invalid` (count a drop).
    """

    _formatter: metrics.Formatter
    _random: Callable[[], float]

    def _emit(self, line: str) -> None:
        """Move one formatted line (or two joined by a newline) towards the server."""
        raise NotImplementedError

    def _invalid(self, path: object, error: Exception) -> None:
        """Account for a metric that cannot be sent."""
        raise NotImplementedError

    def _sampled_out(self, path: object, rate: float) -> bool:
        """Decide whether a metric with ``rate != 1`` stays home.

        A kept metric's rate is checked by the formatter; a rate that is
        not in (0, 1] must not pass for "sampled out" silently, so the
        skipping side checks it here.
        """
        try:
            if self._random() < rate:
                return False
            valid = not isinstance(rate, bool) and 0 < rate < 1
        except TypeError:
            valid = False
        if not valid:
            self._invalid(
                path, metrics.InvalidMetricError(f'sample rate {rate!r} is not in (0, 1]')
            )
        return True

    def _metric(
        self,
        kind: str,
        path: str,
        value: typing.Any,
        rate: float,
        tags: Tags,
        extra: typing.Any = False,
    ) -> None:
        """Sample, format, count if invalid, and emit one metric.

        :param kind: one of this module's kinds
        :param extra: ``delta`` for a gauge, the type code for :data:`RAW`
        """
        if rate != 1 and self._sampled_out(path, rate):
            return
        formatter = self._formatter
        # The dispatch is written out here rather than in a helper: this is
        # every metric's path, and a call less is worth the five lines.
        try:
            if kind is COUNTER:
                line = formatter.counter(path, value, rate, tags)
            elif kind is GAUGE:
                line = formatter.gauge(path, value, extra, rate, tags)
            elif kind is SECONDS:
                # The face turned a timedelta into seconds already.
                line = formatter.timer(path, value * 1000.0, rate, tags)
            elif kind is TIMER:
                line = formatter.timer(path, value, rate, tags)
            elif kind is SET:
                line = formatter.set(path, value, rate, tags)
            else:
                line = formatter.line(extra, path, str(value), rate, tags)
        except (metrics.InvalidMetricError, TypeError) as error:
            # TypeError: a timing in seconds that is not a number.
            self._invalid(path, error)
        else:
            self._emit(line)


class PrefixMixin(Emitter):
    """A writable ``prefix`` for the connectors: a new prefix is a new formatter."""

    _prefix: str
    _tag_set: TagSet

    def _bind(self) -> None:
        """Refresh what a subclass caches from the formatter (after a new prefix)."""

    @property
    def prefix(self) -> str:
        """The prefix in front of every metric name (empty for none)."""
        return self._prefix

    @prefix.setter
    def prefix(self, value: str) -> None:
        self._prefix = value or ''
        self._formatter = metrics.Formatter(
            self._prefix, type_segments=True, tags=self._tag_set
        )
        self._bind()
