"""The asyncio metric API: AbstractConnector (null object), Connector and Timer."""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import socket
import typing
from collections.abc import Callable, Mapping

from sprockets_statsd import _emitter, metrics
from sprockets_statsd._dialects import TagSet
from sprockets_statsd._emitter import Tags
from sprockets_statsd._throttle import Throttle
from sprockets_statsd.processor import Processor
from sprockets_statsd.timer import Timer

# Timer lives in its own module; it is still importable from here.
__all__ = ['AbstractConnector', 'Connector', 'Timer']

logger = logging.getLogger(__name__)
_INFINITY = float('inf')
# incr()'s fast path tests `value is _ONE`: every int equal to 1 is this very
# object in CPython and PyPy, while True (also == 1) is not and stays invalid.
_ONE: object = 1


class AbstractConnector:
    """The metric API without a destination: every method does nothing.

    Use it where metrics are switched off so that application code does not
    have to check.  Its metric methods are the asyncio face of the one body
    that every client shares: :class:`Connector` (and the recording
    connector of :mod:`sprockets_statsd.testing`) give that body somewhere
    to send to; here it goes nowhere.  Everything here is safe to call
    before, during and after :meth:`start`.
    """

    async def start(self) -> None:
        """Do nothing; present so both connectors can be started alike."""

    async def stop(self) -> None:
        """Do nothing; present so both connectors can be stopped alike."""

    def _metric(
        self, kind: str, path: str, value: typing.Any, rate: float, tags: Tags,
        extra: typing.Any = False,
    ) -> None:
        """Format and send one metric; here, nothing (see :mod:`._emitter`)."""

    def _invalid(self, path: object, error: Exception) -> None:
        """Account for a metric that cannot be sent; here, nothing."""

    def inject_metric(
        self,
        path: str,
        value: str,
        type_code: str,
        *,
        rate: float = 1.0,
        tags: Tags = None,
    ) -> None:
        """Send ``{prefix}.{path}:{value}|{type_code}`` as it is.

        :param path: the metric path after the prefix (no type segment is
            added here)
        :param value: the already formatted value
        :param type_code: the statsd type code (``c``, ``g``, ``ms``, ``s``...)
        """
        self._metric(_emitter.RAW, path, value, rate, tags, type_code)

    def incr(
        self, path: str, value: float = 1, *, rate: float = 1.0, tags: Tags = None
    ) -> None:
        """Increment the counter `path` by `value` (``counters.`` segment)."""
        self._metric(_emitter.COUNTER, path, value, rate, tags)

    def decr(
        self, path: str, value: float = 1, *, rate: float = 1.0, tags: Tags = None
    ) -> None:
        """Decrement the counter `path` by `value`: ``incr(path, -value)``."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self._invalid(path, metrics.InvalidMetricError(f'{value!r} is not a number'))
            return
        self.incr(path, -value, rate=rate, tags=tags)

    def gauge(
        self,
        path: str,
        value: float,
        delta: bool = False,
        *,
        rate: float = 1.0,
        tags: Tags = None,
    ) -> None:
        """Set the gauge `path` to `value`, or adjust it by `value` if `delta`.

        A negative absolute value is sent as ``0`` then the value in one
        payload, because a statsd server reads any signed value as a delta.
        """
        self._metric(_emitter.GAUGE, path, value, rate, tags, delta)

    def timing(
        self,
        path: str,
        seconds: float | datetime.timedelta,
        *,
        rate: float = 1.0,
        tags: Tags = None,
    ) -> None:
        """Record `seconds` (or a :class:`~datetime.timedelta`) for timer `path`.

        The value goes on the wire in milliseconds.
        """
        if isinstance(seconds, datetime.timedelta):
            seconds = seconds.total_seconds()
        self._metric(_emitter.SECONDS, path, seconds, rate, tags)

    def set(
        self, path: str, value: object, *, rate: float = 1.0, tags: Tags = None
    ) -> None:
        """Add `value` to the set `path`; the server counts distinct values."""
        self._metric(_emitter.SET, path, value, rate, tags)

    def timer(self, path: str, *, rate: float = 1.0, tags: Tags = None) -> Timer:
        """Return a :class:`Timer` that records into the timer `path`.

        Use it as ``with connector.timer('db.query'):`` or as a decorator of a
        plain or ``async`` function.
        """
        return Timer(lambda seconds: self.timing(path, seconds, rate=rate, tags=tags))


class Connector(_emitter.PrefixMixin, AbstractConnector):
    """Sends metrics to a statsd server from asyncio code.

    :param host: the statsd server: a host name or IP address, or a Unix
        stream socket given as ``unix:/path/to.sock`` or an absolute path
    :param port: the server's port (ignored for Unix sockets)
    :param prefix: prepended to every metric path with a ``.``
    :param ip_protocol: :data:`socket.IPPROTO_TCP` (default) or
        :data:`socket.IPPROTO_UDP`
    :param tag_dialect: ``None`` (default: tags are refused), ``'dogstatsd'``,
        ``'influxdb'`` or ``'graphite'``
    :param tags: constant tags added to every metric (needs a dialect)
    :param random_source: returns floats in [0, 1) for sampling; inject one
        in tests
    :param processor_options: passed to :class:`~.Processor` (queue size,
        datagram size, timeouts; see there)
    :raises ~sprockets_statsd.errors.ConfigurationError: for an empty host,
        a bad port, an unknown protocol or dialect, or a non-positive size

    Metric names are ``{prefix}.{type}.{path}`` where ``type`` is
    ``counters``, ``gauges``, ``timers`` or ``sets``, as in
    sprockets-statsd 1.0.  The metric methods format the line once and put
    it on the processor's bounded queue; they never block and never raise
    for network or queue trouble.  When the queue is full the metric is
    dropped and counted in :attr:`dropped_queue_full`.
    """

    #: The processor that owns the queue and the connection.
    processor: Processor

    def __init__(
        self,
        host: str,
        port: int = 8125,
        *,
        prefix: str = '',
        ip_protocol: int = socket.IPPROTO_TCP,
        tag_dialect: str | None = None,
        tags: Mapping[str, object] | None = None,
        random_source: Callable[[], float] = random.random,
        **processor_options: typing.Any,
    ) -> None:
        super().__init__()
        self._tag_set = TagSet(tag_dialect, tags)
        self.processor = Processor(
            host=host, port=port, ip_protocol=ip_protocol, **processor_options
        )
        self._offer = self.processor.queue.offer
        self._random = random_source
        self.prefix = prefix  # makes the formatter and binds its caches
        self._task: asyncio.Task[None] | None = None
        self._warn = Throttle(logger)
        #: Metrics offered to the queue (accepted or refused for being full).
        self.enqueued = 0
        #: Metrics refused because the queue was full.
        self.dropped_queue_full = 0
        #: Metrics not sent because a value or sample rate was invalid.
        self.dropped_invalid = 0

    def _bind(self) -> None:
        # The fast paths read the formatter's caches directly: one attribute
        # look-up less per metric.
        formatter = self._formatter
        self._increments = formatter.increment_payloads
        self._timer_heads = formatter.timer_heads
        self._tail = formatter.plain_tail

    @property
    def sent(self) -> int:
        """Metrics handed to the operating system for delivery."""
        return self.processor.sent

    @property
    def dropped_send_failed(self) -> int:
        """Metrics lost to a failed send or abandoned at :meth:`stop`."""
        return self.processor.dropped

    @property
    def dropped(self) -> int:
        """Every metric that was offered but will never be sent."""
        return self.dropped_queue_full + self.processor.dropped

    async def start(self) -> None:
        """Start the processor task and return once it is running.

        Metrics recorded before this call wait in the queue.
        """
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.get_running_loop().create_task(self.processor.run())
        await self.processor.running.wait()

    async def stop(self) -> None:
        """Flush the queue, close the connection and stop the processor.

        Returns within the processor's ``shutdown_timeout`` (plus a moment)
        even when the server is unreachable; whatever could not be delivered
        by then is logged and counted in :attr:`dropped_send_failed`.
        """
        task, self._task = self._task, None
        if task is None:
            self.processor.abandon_queue()
            return
        await self.processor.stop()
        await task

    def _emit(self, line: str) -> None:
        self.enqueued += 1
        try:
            payload = line.encode()
        except UnicodeEncodeError:  # a lone surrogate in a set member
            payload = metrics.encode(line)
        if not self._offer(payload):
            self._full()

    def _full(self) -> None:
        self.dropped_queue_full += 1
        self._warn.warning(
            'queue-full',
            'statsd queue is full (%d payloads), dropping metrics',
            self.processor.queue.maxsize,
        )

    def _invalid(self, path: object, error: Exception) -> None:
        self.dropped_invalid += 1
        self._warn.warning('invalid', 'dropping metric %r: %s', path, error)

    # incr() and timing() put a fast path for their most frequent form in
    # front of the shared body; their documentation is AbstractConnector's.
    def incr(self, path: str, value: float = 1, *, rate: float = 1.0,
             tags: Tags = None) -> None:
        if value is _ONE and rate == 1 and tags is None:
            payload = (self._increments.get(path)
                       or self._formatter.increment_payload(path))
            self.enqueued += 1
            if not self._offer(payload):
                self._full()
            return
        self._metric(_emitter.COUNTER, path, value, rate, tags)

    def timing(self, path: str, seconds: float | datetime.timedelta, *, rate: float = 1.0,
               tags: Tags = None) -> None:
        if rate == 1 and tags is None and type(seconds) is float and 0.0 <= seconds < _INFINITY:
            head = self._timer_heads.get(path) or self._formatter.head(metrics.TIMER, path)
            self.enqueued += 1
            if not self._offer(f'{head}{seconds * 1000.0!r}|ms{self._tail}'.encode()):
                self._full()
            return
        if isinstance(seconds, datetime.timedelta):
            seconds = seconds.total_seconds()
        self._metric(_emitter.SECONDS, path, seconds, rate, tags)
