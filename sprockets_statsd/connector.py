"""The asyncio metric API: AbstractConnector (null object), Connector and Timer."""

from __future__ import annotations

import asyncio
import datetime
import functools
import inspect
import logging
import random
import socket
import time
import typing
from collections.abc import Callable, Mapping

from sprockets_statsd import metrics
from sprockets_statsd._throttle import Throttle
from sprockets_statsd.processor import Processor

__all__ = ['AbstractConnector', 'Connector', 'Timer']

_F = typing.TypeVar('_F', bound=Callable[..., typing.Any])
Tags = typing.Optional[Mapping[str, object]]  # noqa: UP045 - a runtime alias on 3.10

logger = logging.getLogger(__name__)
_INFINITY = float('inf')
# incr()'s fast path tests `value is _ONE`: every int equal to 1 is this very
# object in CPython and PyPy, while True (also == 1) is not and stays invalid.
_ONE: object = 1


class Timer:
    """Measures a duration with a monotonic clock and reports it in seconds.

    :param report: called with the elapsed seconds when the timer stops
    :param clock: the clock, :func:`time.perf_counter` unless a test injects one

    Use it as a context manager (the block is timed), as a decorator of a
    plain or ``async`` function (every call is timed separately, so one
    decorated function is safe to call from many threads and tasks at
    once), or through :meth:`start` / :meth:`stop` / :meth:`send`.

    The object form keeps state, so a single :class:`Timer` must not be
    started from two threads at once; the decorator form keeps none.
    """

    def __init__(
        self,
        report: Callable[[float], None],
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._report = report
        self._clock = clock
        self._start: float | None = None
        self._sent = False
        #: The last measured duration in seconds, ``None`` before the first stop.
        self.elapsed: float | None = None

    @property
    def ms(self) -> float | None:
        """The last measured duration in milliseconds (``None`` if none yet)."""
        return None if self.elapsed is None else self.elapsed * 1000.0

    def start(self) -> Timer:
        """Start (or restart) timing and return the timer."""
        self.elapsed = None
        self._sent = False
        self._start = self._clock()
        return self

    def stop(self, send: bool = True) -> Timer:
        """Stop timing and, unless `send` is false, report the duration.

        :raises RuntimeError: if the timer was not started
        """
        if self._start is None:
            raise RuntimeError('timer.stop() called before timer.start()')
        self.elapsed = self._clock() - self._start
        self._start = None
        if send:
            self.send()
        return self

    def send(self) -> None:
        """Report the measured duration.

        :raises RuntimeError: if nothing was measured yet, or it was already sent
        """
        if self.elapsed is None:
            raise RuntimeError('timer.send() called with no measurement')
        if self._sent:
            raise RuntimeError('timer.send() called twice for one measurement')
        self._sent = True
        self._report(self.elapsed)

    def __enter__(self) -> Timer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __call__(self, func: _F) -> _F:
        """Decorate `func` so that each call is timed on its own."""
        report, clock = self._report, self._clock

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def timed_coroutine(*args: typing.Any, **kwargs: typing.Any) -> typing.Any:
                start = clock()
                try:
                    return await func(*args, **kwargs)
                finally:
                    report(clock() - start)

            return typing.cast(_F, timed_coroutine)

        @functools.wraps(func)
        def timed(*args: typing.Any, **kwargs: typing.Any) -> typing.Any:
            start = clock()
            try:
                return func(*args, **kwargs)
            finally:
                report(clock() - start)

        return typing.cast(_F, timed)


class AbstractConnector:
    """The metric API without a destination: every method does nothing.

    Use it where metrics are switched off so that application code does not
    have to check.  :class:`Connector` overrides :meth:`inject_metric` and
    the typed methods; everything here is safe to call before, during and
    after :meth:`start`.
    """

    async def start(self) -> None:
        """Do nothing; present so both connectors can be started alike."""

    async def stop(self) -> None:
        """Do nothing; present so both connectors can be stopped alike."""

    def inject_metric(
        self,
        path: str,
        value: str,
        type_code: str,
        *,
        rate: float = 1.0,
        tags: Tags = None,
    ) -> None:
        """Send ``path:value|type_code`` (prefix applied); here, nothing."""

    def incr(
        self, path: str, value: float = 1, *, rate: float = 1.0, tags: Tags = None
    ) -> None:
        """Increment the counter `path` by `value`."""

    def decr(
        self, path: str, value: float = 1, *, rate: float = 1.0, tags: Tags = None
    ) -> None:
        """Decrement the counter `path` by `value`: ``incr(path, -value)``."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self._invalid(path, metrics.InvalidMetricError(f'{value!r} is not a number'))
            return
        self.incr(path, -value, rate=rate, tags=tags)

    def _invalid(self, path: str, error: Exception) -> None:
        """Account for a metric that cannot be sent; here, nothing."""

    def gauge(
        self,
        path: str,
        value: float,
        delta: bool = False,
        *,
        rate: float = 1.0,
        tags: Tags = None,
    ) -> None:
        """Set the gauge `path` to `value`, or adjust it by `value` if `delta`."""

    def timing(
        self,
        path: str,
        seconds: float | datetime.timedelta,
        *,
        rate: float = 1.0,
        tags: Tags = None,
    ) -> None:
        """Record a duration of `seconds` for the timer `path`."""

    def set(
        self, path: str, value: object, *, rate: float = 1.0, tags: Tags = None
    ) -> None:
        """Add `value` to the set `path` (the server counts distinct values)."""

    def timer(self, path: str, *, rate: float = 1.0, tags: Tags = None) -> Timer:
        """Return a :class:`Timer` that records into the timer `path`.

        Use it as ``with connector.timer('db.query'):`` or as a decorator of a
        plain or ``async`` function.
        """
        return Timer(lambda seconds: self.timing(path, seconds, rate=rate, tags=tags))


class Connector(AbstractConnector):
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
        self._tags = metrics.TagSet(tag_dialect, tags)
        self._prefix = prefix or ''
        self._formatter = metrics.Formatter(
            self._prefix, type_segments=True, tags=self._tags
        )
        self._random = random_source
        self.processor = Processor(
            host=host, port=port, ip_protocol=ip_protocol, **processor_options
        )
        self._offer = self.processor.queue.offer
        # Complete payloads for incr(path) with the defaults, the most
        # frequent call by far; bounded like the formatter's own cache.
        self._increments: dict[str, bytes] = {}
        # Heads (``name:``) of timers, for the plain timing() fast path.
        self._timer_heads: dict[str, str] = {}
        self._tail = self._formatter.plain_tail
        self._task: asyncio.Task[None] | None = None
        self._warn = Throttle(logger)
        #: Metrics offered to the queue (accepted or refused for being full).
        self.enqueued = 0
        #: Metrics refused because the queue was full.
        self.dropped_queue_full = 0
        #: Metrics not sent because a value or sample rate was invalid.
        self.dropped_invalid = 0

    @property
    def prefix(self) -> str:
        """The prefix in front of every metric name (empty for none)."""
        return self._prefix

    @prefix.setter
    def prefix(self, value: str) -> None:
        self._prefix = value or ''
        self._formatter = metrics.Formatter(
            self._prefix, type_segments=True, tags=self._tags
        )
        self._increments = {}
        self._timer_heads = {}

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

    def _enqueue(self, line: str) -> None:
        self.enqueued += 1
        try:
            payload = line.encode()
        except UnicodeEncodeError:  # a lone surrogate in a set member
            payload = line.encode('utf-8', 'replace')
        if not self._offer(payload):
            self._full()

    def _full(self) -> None:
        self.dropped_queue_full += 1
        self._warn.warning(
            'queue-full',
            'statsd queue is full (%d payloads), dropping metrics',
            self.processor.queue.maxsize,
        )

    def _timer_head(self, path: str) -> str:
        head = self._formatter.head(metrics.TIMER, path)
        if len(self._timer_heads) < metrics.DEFAULT_CACHE_SIZE:
            self._timer_heads[path] = head
        return head

    def _increment_payload(self, path: str) -> bytes:
        payload = self._formatter.counter(path).encode()
        if len(self._increments) < metrics.DEFAULT_CACHE_SIZE:
            self._increments[path] = payload
        return payload

    def _skip(self, path: str, rate: float) -> bool:
        """Decide whether a sampled metric stays home (rate is not 1)."""
        if isinstance(rate, bool) or not 0 < rate < 1:
            self._invalid(
                path, metrics.InvalidMetricError(f'sample rate {rate!r} is not in (0, 1]')
            )
            return True
        return self._random() >= rate

    def _invalid(self, path: str, error: Exception) -> None:
        self.dropped_invalid += 1
        self._warn.warning('invalid', 'dropping metric %r: %s', path, error)

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
        if rate != 1 and self._skip(path, rate):
            return
        # The rate was checked by _skip(); nothing else here can be invalid.
        self._enqueue(self._formatter.line(type_code, path, str(value), rate, tags))

    def incr(
        self, path: str, value: float = 1, *, rate: float = 1.0, tags: Tags = None
    ) -> None:
        """Increment the counter `path` by `value` (``counters.`` segment)."""
        if value is _ONE and rate == 1 and tags is None:
            payload = self._increments.get(path) or self._increment_payload(path)
            self.enqueued += 1
            if not self._offer(payload):
                self._full()
            return
        if rate != 1 and self._skip(path, rate):
            return
        try:
            line = self._formatter.counter(path, value, rate, tags)
        except metrics.InvalidMetricError as error:
            self._invalid(path, error)
        else:
            self._enqueue(line)

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
        if rate != 1 and self._skip(path, rate):
            return
        try:
            line = self._formatter.gauge(path, value, delta, rate, tags)
        except metrics.InvalidMetricError as error:
            self._invalid(path, error)
        else:
            self._enqueue(line)

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
        if rate == 1 and tags is None and type(seconds) is float and 0.0 <= seconds < _INFINITY:
            head = self._timer_heads.get(path) or self._timer_head(path)
            self.enqueued += 1
            if not self._offer(f'{head}{seconds * 1000.0!r}|ms{self._tail}'.encode()):
                self._full()
            return
        if rate != 1 and self._skip(path, rate):
            return
        try:
            millis = metrics.milliseconds(seconds)
            line = self._formatter.timer(path, millis, rate, tags)
        except (metrics.InvalidMetricError, TypeError) as error:
            self._invalid(path, error)
        else:
            self._enqueue(line)

    def set(
        self, path: str, value: object, *, rate: float = 1.0, tags: Tags = None
    ) -> None:
        """Add `value` to the set `path`; the server counts distinct values."""
        if rate != 1 and self._skip(path, rate):
            return
        # Any value is a set member, and the rate was checked by _skip().
        self._enqueue(self._formatter.set(path, value, rate, tags))

