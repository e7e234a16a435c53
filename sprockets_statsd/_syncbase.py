"""The pystatsd face of the metric methods, shared by the synchronous clients and pipelines.

Each metric method normalises its arguments and calls the one body of
:mod:`sprockets_statsd._emitter`, which samples, formats and hands the line
to the transport's ``_emit``.  A :class:`Pipeline` is a client whose
``_emit`` appends to a list; its :meth:`~Pipeline.send` gives the list to the
client's ``_send_batch``.  The transports live in
:mod:`sprockets_statsd.client`.
"""

from __future__ import annotations

import datetime
import logging
import random
import threading
from collections.abc import Callable, Mapping

from sprockets_statsd import _emitter, metrics
from sprockets_statsd._dialects import TagSet
from sprockets_statsd._emitter import Tags as _Tags
from sprockets_statsd._throttle import Throttle
from sprockets_statsd.timer import Timer

__all__ = ['Pipeline', 'StatsClientBase']

logger = logging.getLogger(__name__)


class _Drops:
    """Drop counters and the warning throttle, shared by a client and its pipelines."""

    __slots__ = ('invalid', 'lock', 'send_failed', 'warn')

    def __init__(self) -> None:
        self.invalid = 0
        self.send_failed = 0
        # Only the (rare) drop paths take the lock, so that counts stay
        # exact when many threads share one client.
        self.lock = threading.Lock()
        self.warn = Throttle(logger)


class StatsClientBase(_emitter.Emitter):
    """The metric methods shared by every client and by :class:`Pipeline`.

    :param prefix: prepended to every stat name with a ``.``
    :param tag_dialect: ``None`` (default: tags are refused),
        ``'dogstatsd'``, ``'influxdb'`` or ``'graphite'``
    :param tags: constant tags added to every metric (needs a dialect)
    :param random_source: returns floats in [0, 1) for sampling

    Every metric method takes the stat name first, the pystatsd positional
    arguments next, and a keyword-only ``tags`` mapping.  A value that cannot
    be sent (NaN, a boolean, a negative timing, a sample rate outside
    (0, 1]) is dropped, counted in :attr:`dropped_invalid` and logged at most
    once per ten seconds.  Tags given to a client without a dialect raise
    :class:`~sprockets_statsd.ConfigurationError`: that is a bug in
    the calling code, not bad data.
    """

    _formatter: metrics.Formatter
    _random: Callable[[], float]
    _drops: _Drops

    def __init__(
        self,
        prefix: str | None = None,
        *,
        tag_dialect: str | None = None,
        tags: Mapping[str, object] | None = None,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        self._prefix = prefix
        self._formatter = metrics.Formatter(
            prefix, type_segments=False, tags=TagSet(tag_dialect, tags)
        )
        self._random = random_source
        self._drops = _Drops()
        self._bind()

    def _bind(self) -> None:
        # The incr() fast paths read the formatter's caches directly.
        self._increments = self._formatter.increment_lines

    @property
    def dropped_invalid(self) -> int:
        """Metrics not sent because a value or sample rate was invalid."""
        return self._drops.invalid

    @property
    def dropped_send_failed(self) -> int:
        """Metrics lost because the operating system refused the send (UDP)."""
        return self._drops.send_failed

    @property
    def dropped(self) -> int:
        """Every metric that was recorded but not sent (sampling aside)."""
        return self._drops.invalid + self._drops.send_failed

    def _invalid(self, stat: object, error: Exception) -> None:
        drops = self._drops
        with drops.lock:
            drops.invalid += 1
            drops.warn.warning('invalid', 'dropping metric %r: %s', stat, error)

    def _send_batch(self, lines: list[str]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the client's socket; here, nothing to release."""

    def pipeline(self) -> Pipeline:
        """Return a :class:`Pipeline` that sends through this client."""
        return Pipeline(self)

    def incr(self, stat: str, count: float = 1, rate: float = 1, *, tags: _Tags = None) -> None:
        """Increment the counter `stat` by `count`: ``stat:count|c``.

        :param stat: the counter's name (after the prefix)
        :param count: the amount, usually an :class:`int`; may be negative
        :param rate: send only this fraction of the calls, and tell the
            server so with ``|@rate`` (it scales counters back up)
        :param tags: tags for this call, added to the constant tags
        """
        self._metric(_emitter.COUNTER, stat, count, rate, tags)

    def decr(self, stat: str, count: float = 1, rate: float = 1, *, tags: _Tags = None) -> None:
        """Decrement the counter `stat` by `count`: ``incr(stat, -count)``.

        :param stat: the counter's name
        :param count: the amount to subtract
        :param rate: sample rate, as for :meth:`incr`
        :param tags: tags for this call
        """
        if type(count) is not int:
            try:
                if isinstance(count, bool):
                    raise TypeError
                count = -count
            except TypeError:
                self._invalid(stat, metrics.InvalidMetricError(f'{count!r} is not a number'))
                return
            self.incr(stat, count, rate, tags=tags)
        else:
            self.incr(stat, -count, rate, tags=tags)

    def gauge(
        self,
        stat: str,
        value: float,
        rate: float = 1,
        delta: bool = False,
        *,
        tags: _Tags = None,
    ) -> None:
        """Set the gauge `stat` to `value`, or change it by `value` if `delta`.

        A negative absolute value goes out as ``0`` followed by the value in
        one datagram (or one write), because a server reads any signed
        value as a change.

        :param stat: the gauge's name
        :param value: the new value, or the change with `delta`
        :param rate: sample rate; servers do not scale gauges by it
        :param delta: send a signed change (``+3``, ``-2``) instead of a value
        :param tags: tags for this call
        """
        self._metric(_emitter.GAUGE, stat, value, rate, tags, delta)

    def set(self, stat: str, value: object, rate: float = 1, *, tags: _Tags = None) -> None:
        """Add `value` to the set `stat`; the server counts distinct values.

        :param stat: the set's name
        :param value: any value; it is sent as text
        :param rate: sample rate; servers do not scale sets by it
        :param tags: tags for this call
        """
        self._metric(_emitter.SET, stat, value, rate, tags)

    def timing(
        self,
        stat: str,
        delta: float | datetime.timedelta,
        rate: float = 1,
        *,
        tags: _Tags = None,
    ) -> None:
        """Record a duration for the timer `stat`: ``stat:ms|ms``.

        :param stat: the timer's name
        :param delta: the duration in **milliseconds**, or a
            :class:`~datetime.timedelta` (converted to milliseconds)
        :param rate: sample rate
        :param tags: tags for this call
        """
        if isinstance(delta, datetime.timedelta):
            delta = metrics.milliseconds(delta)
        self._metric(_emitter.TIMER, stat, delta, rate, tags)

    def timer(self, stat: str, rate: float = 1, *, tags: _Tags = None) -> Timer:
        """Return a :class:`~sprockets_statsd.Timer` for `stat`.

        Use it as a context manager, as a decorator of a plain or ``async``
        function (each call timed on its own, safe from many threads), or
        with ``start()`` / ``stop(send=True)`` / ``send()``.  Its ``ms``
        attribute holds the last measurement in milliseconds.

        :param stat: the timer's name
        :param rate: sample rate applied to each measurement
        :param tags: tags for every measurement
        """
        timing = self.timing

        def report(seconds: float) -> None:
            timing(stat, seconds * 1000.0, rate, tags=tags)

        return Timer(report)


class Pipeline(StatsClientBase):
    """Collects metrics and sends them together; made by ``client.pipeline()``.

    :param client: the client (or the enclosing pipeline) to send through

    A pipeline has every metric method of the client.  Nothing is sent until
    :meth:`send`, or the end of a ``with`` block (even one left by an
    exception).  Sampled-out and invalid metrics are not collected.  A
    pipeline of a pipeline hands its metrics to the outer one when sent.
    A pipeline is not thread-safe: use one per thread or per request.
    """

    def __init__(self, client: StatsClientBase) -> None:
        self._client = client
        self._prefix = client._prefix
        self._formatter = client._formatter
        self._random = client._random
        self._drops = client._drops
        self._stats: list[str] = []
        # Collecting is appending: no Python frame of our own per metric.
        self._emit = self._stats.append  # type: ignore[method-assign,assignment]
        self._bind()

    def incr(self, stat: str, count: float = 1, rate: float = 1, *, tags: _Tags = None) -> None:
        """Collect a counter increment; see :meth:`StatsClientBase.incr`."""
        if count == 1 and rate == 1 and tags is None and count is not True:
            self._emit(self._increments.get(stat) or self._formatter.increment_line(stat))
        else:
            self._metric(_emitter.COUNTER, stat, count, rate, tags)

    def _send_batch(self, lines: list[str]) -> None:
        self._stats.extend(lines)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.send()

    def send(self) -> None:
        """Send everything collected in as few datagrams (or one write) as possible.

        Over UDP each datagram holds whole lines and is at most the client's
        ``maxudpsize`` bytes; a single line longer than that is sent alone.
        Over TCP and Unix sockets the lines go out in one write.
        """
        if not self._stats:
            return
        # Copy and clear: the list stays the one that _emit appends to.
        stats = self._stats.copy()
        self._stats.clear()
        self._client._send_batch(stats)


