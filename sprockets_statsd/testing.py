"""Recording stand-ins for the connector and the synchronous client, for users' tests.

Strategy: both recorders inherit the public metric methods of the class they
stand in for and run every call through the same body and the same
:class:`~sprockets_statsd.metrics.Formatter` as the real thing (so invalid
values are dropped exactly as in production and the wire line can be
asserted on); their transport hook appends a :class:`RecordedMetric`
instead of sending.  Sampling is not applied: every call is recorded, with
its rate.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping

from sprockets_statsd import _emitter, metrics
from sprockets_statsd._dialects import TagSet
from sprockets_statsd._emitter import Tags as _Tags
from sprockets_statsd._syncbase import Pipeline, StatsClientBase
from sprockets_statsd.connector import AbstractConnector
from sprockets_statsd.metrics import Formatter

__all__ = [
    'RecordedMetric',
    'Recorder',
    'RecordingConnector',
    'RecordingPipeline',
    'RecordingStatsClient',
]

_KIND_NAMES = {
    metrics.COUNTER: 'counter',
    metrics.GAUGE: 'gauge',
    metrics.TIMER: 'timer',
    metrics.SET: 'set',
}


@dataclasses.dataclass(frozen=True)
class RecordedMetric:
    """One metric as the application recorded it."""

    #: The statsd type code: ``'c'``, ``'g'``, ``'ms'``, ``'s'``, or what
    #: was given to :meth:`~RecordingConnector.inject_metric`.
    type: str
    #: The path (stat name) as the application gave it, without the prefix.
    path: str
    #: The full metric name on the wire: prefix, type segment (connector
    #: only) and path.
    name: str
    #: The value as given, in the API's unit: seconds for the connector's
    #: ``timing``, milliseconds for the client's (a
    #: :class:`~datetime.timedelta` is converted); ``decr`` records the
    #: negated amount, as it is sent.
    value: object
    #: The sample rate (1 when not sampled).
    rate: float
    #: The constant tags updated with the call's tags.
    tags: Mapping[str, object]
    #: The line(s) that would be sent, without a trailing newline.
    line: str
    #: Whether a gauge was sent as a change (``delta=True``).
    delta: bool = False


class Recorder(_emitter.Emitter):
    """The record and the assertion helpers that both recorders share.

    Not used on its own: create a :class:`RecordingConnector` or a
    :class:`RecordingStatsClient`.
    """

    #: Every metric recorded, oldest first.
    metrics: list[RecordedMetric]
    _formatter: Formatter
    _constant_tags: Mapping[str, object]

    def _setup(
        self,
        prefix: str | None,
        type_segments: bool,
        tag_dialect: str | None,
        tags: Mapping[str, object] | None,
    ) -> None:
        self._tag_set = TagSet(tag_dialect, tags)
        self._formatter = metrics.Formatter(
            prefix, type_segments=type_segments, tags=self._tag_set
        )
        self._constant_tags = dict(tags or {})
        self.metrics = []
        self._invalid_count = 0

    @property
    def dropped_invalid(self) -> int:
        """Metrics dropped because a value or sample rate was invalid."""
        return self._invalid_count

    @property
    def dropped(self) -> int:
        """Metrics dropped: here, only invalid ones."""
        return self._invalid_count

    def _invalid(self, stat: object, error: Exception) -> None:
        self._invalid_count += 1

    def _sampled_out(self, path: object, rate: float) -> bool:
        return False  # every call is recorded, with its rate

    def _metric(
        self, kind: str, path: str, value: typing.Any, rate: float, tags: _Tags,
        extra: typing.Any = False,
    ) -> None:
        # The call is kept for _emit(), which turns it into a RecordedMetric
        # once the shared body has formatted (or dropped) it.
        self._call = (kind, path, value, rate, tags, extra)
        _emitter.Emitter._metric(self, kind, path, value, rate, tags, extra)

    def _emit(self, line: str) -> None:
        kind, path, value, rate, tags, extra = self._call
        code = extra if kind is _emitter.RAW else _emitter.KIND_CODES[kind]
        merged = {**self._constant_tags, **(tags or {})}
        name = self._formatter.name(code, path if isinstance(path, str) else str(path))
        delta = extra if kind is _emitter.GAUGE else False
        self._record(RecordedMetric(code, path, name, value, rate, merged, line, delta))

    def _record(self, metric: RecordedMetric) -> None:
        self.metrics.append(metric)

    @property
    def lines(self) -> list[str]:
        """Every wire line recorded, oldest first (two for a negative gauge)."""
        return [line for metric in self.metrics for line in metric.line.split('\n')]

    def reset(self) -> None:
        """Forget everything recorded so far."""
        self.metrics.clear()
        self._invalid_count = 0

    def find(
        self,
        type: str | None = None,
        path: str | None = None,
        *,
        value: object = None,
        tags: Mapping[str, object] | None = None,
        rate: float | None = None,
        delta: bool | None = None,
    ) -> list[RecordedMetric]:
        """Return the recorded metrics that match every criterion given.

        :param type: the type code (``'c'``, ``'g'``, ``'ms'``, ``'s'``)
        :param path: the path as the application gave it
        :param value: compared with ``==`` (so ``pytest.approx`` works)
        :param tags: each of these must be among the metric's tags
        :param rate: the sample rate
        :param delta: whether a gauge was a change
        """
        found = []
        for metric in self.metrics:
            if type is not None and metric.type != type:
                continue
            if path is not None and metric.path != path:
                continue
            if value is not None and value != metric.value:
                continue
            if rate is not None and metric.rate != rate:
                continue
            if delta is not None and metric.delta != delta:
                continue
            if tags is not None and any(
                key not in metric.tags or metric.tags[key] != wanted
                for key, wanted in tags.items()
            ):
                continue
            found.append(metric)
        return found

    def _assert(
        self, code: str, path: str, times: int | None, **criteria: typing.Any
    ) -> list[RecordedMetric]:
        found = self.find(code, path, **criteria)
        if (not found and times is None) or (times is not None and len(found) != times):
            wanted = ', '.join(f'{k}={v!r}' for k, v in criteria.items() if v is not None)
            same_path = [repr(m) for m in self.metrics if m.path == path]
            if same_path:
                seen = 'recorded for this path:\n  ' + '\n  '.join(same_path)
            elif self.metrics:
                seen = 'recorded:\n  ' + '\n  '.join(repr(m) for m in self.metrics)
            else:
                seen = 'nothing was recorded'
            raise AssertionError(
                f'expected {_KIND_NAMES[code]} {path!r}'
                f'{" with " + wanted if wanted else ""} '
                f'{"at least once" if times is None else f"{times} time(s)"}, '
                f'found {len(found)}; {seen}'
            )
        return found

    def assert_incr(
        self,
        path: str,
        value: object = None,
        *,
        times: int | None = None,
        tags: Mapping[str, object] | None = None,
        rate: float | None = None,
    ) -> list[RecordedMetric]:
        """Assert that the counter `path` was incremented (by `value`, if given).

        :param times: how many matching metrics there must be (default: at
            least one)
        :returns: the matching metrics
        :raises AssertionError: listing what was recorded for `path`
        """
        return self._assert(metrics.COUNTER, path, times, value=value, tags=tags, rate=rate)

    def assert_decr(
        self,
        path: str,
        value: object = None,
        *,
        times: int | None = None,
        tags: Mapping[str, object] | None = None,
        rate: float | None = None,
    ) -> list[RecordedMetric]:
        """Assert that the counter `path` was decremented (by `value`, if given).

        A decrement is recorded as a counter with the negated value, so
        ``assert_decr('x', 2)`` finds ``decr('x', 2)`` and ``incr('x', -2)``.
        """
        negated = None if value is None else -typing.cast(float, value)
        found = self._assert(metrics.COUNTER, path, times, value=negated, tags=tags, rate=rate)
        if value is None and not any(_negative(metric.value) for metric in found):
            raise AssertionError(f'counter {path!r} was never decremented: {found!r}')
        return found

    def assert_gauge(
        self,
        path: str,
        value: object = None,
        *,
        delta: bool | None = None,
        times: int | None = None,
        tags: Mapping[str, object] | None = None,
        rate: float | None = None,
    ) -> list[RecordedMetric]:
        """Assert that the gauge `path` was set (to `value`, if given)."""
        return self._assert(
            metrics.GAUGE, path, times, value=value, delta=delta, tags=tags, rate=rate
        )

    def assert_timing(
        self,
        path: str,
        value: object = None,
        *,
        times: int | None = None,
        tags: Mapping[str, object] | None = None,
        rate: float | None = None,
    ) -> list[RecordedMetric]:
        """Assert that a duration was recorded for the timer `path`.

        Measured durations are unpredictable: leave `value` out, or pass
        something like ``pytest.approx(0.5, abs=0.1)``.
        """
        return self._assert(metrics.TIMER, path, times, value=value, tags=tags, rate=rate)

    def assert_set(
        self,
        path: str,
        value: object = None,
        *,
        times: int | None = None,
        tags: Mapping[str, object] | None = None,
        rate: float | None = None,
    ) -> list[RecordedMetric]:
        """Assert that `value` (or anything) was added to the set `path`."""
        return self._assert(metrics.SET, path, times, value=value, tags=tags, rate=rate)

    def assert_not_recorded(self, path: str, type: str | None = None) -> None:
        """Assert that nothing (of type code `type`) was recorded for `path`."""
        found = self.find(type, path)
        if found:
            raise AssertionError(f'expected no metric {path!r}, found: {found!r}')


def _negative(value: object) -> bool:
    try:
        return bool(value < 0)  # type: ignore[operator]
    except TypeError:
        return False


class RecordingConnector(Recorder, _emitter.PrefixMixin, AbstractConnector):
    """Records metrics instead of sending them; stands in for :class:`~.Connector`.

    :param host: accepted and ignored, like `port`
    :param port: accepted and ignored
    :param prefix: prepended to every path, as by the connector
    :param tag_dialect: the connector's tag dialect
    :param tags: constant tags
    :param options: any other :class:`~.Connector` keyword (queue sizes,
        ``ip_protocol``...) is accepted and ignored, so that code building a
        connector from settings can build this one instead

    Names carry the connector's type segment (``prefix.counters.path``).
    :meth:`start` and :meth:`stop` only flip :attr:`running`.
    """

    def __init__(
        self,
        host: str = '',
        port: int = 8125,
        *,
        prefix: str = '',
        tag_dialect: str | None = None,
        tags: Mapping[str, object] | None = None,
        **options: object,
    ) -> None:
        super().__init__()
        self._setup(prefix, True, tag_dialect, tags)
        self.prefix = prefix
        #: Whether :meth:`start` was called and :meth:`stop` not since.
        self.running = False

    async def start(self) -> None:
        """Mark the connector as running."""
        self.running = True

    async def stop(self) -> None:
        """Mark the connector as stopped."""
        self.running = False


class RecordingStatsClient(Recorder, StatsClientBase):
    """Records metrics instead of sending them; stands in for :class:`~.client.StatsClient`.

    :param prefix: prepended to every stat name
    :param tag_dialect: the client's tag dialect
    :param tags: constant tags

    It has every method of the real clients (``close`` does nothing);
    :meth:`pipeline` returns a :class:`RecordingPipeline`, whose metrics are
    recorded here when it is sent.
    """

    def __init__(
        self,
        prefix: str | None = None,
        *,
        tag_dialect: str | None = None,
        tags: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(prefix, tag_dialect=tag_dialect, tags=tags)
        self._setup(prefix, False, tag_dialect, tags)

    def pipeline(self) -> Pipeline:
        """Return a :class:`RecordingPipeline` that records into this client when sent."""
        return RecordingPipeline(self)


class RecordingPipeline(RecordingStatsClient, Pipeline):
    """A :class:`~.client.Pipeline` of a :class:`RecordingStatsClient`.

    :param client: the recording client, or an enclosing recording pipeline

    Its own :attr:`~Recorder.metrics` holds what was collected and not yet sent;
    :meth:`send` (or the end of the ``with`` block) moves them to the client.
    """

    # The general path, not the pipeline's fast path: every call is recorded.
    incr = StatsClientBase.incr

    def __init__(self, client: RecordingStatsClient) -> None:
        Pipeline.__init__(self, client)
        del self._emit  # record, rather than collect lines to send
        self._recorder = client
        self._constant_tags = client._constant_tags
        self.metrics = []
        self._invalid_count = 0

    def _invalid(self, stat: object, error: Exception) -> None:
        self._recorder._invalid(stat, error)

    def send(self) -> None:
        """Record the collected metrics in the client (or enclosing pipeline)."""
        pending, self.metrics = self.metrics, []
        for metric in pending:
            self._recorder._record(metric)
