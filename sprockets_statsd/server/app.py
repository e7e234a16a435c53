"""The statsd server: listeners, the aggregator, the flush timer and sinks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import sys
import time
import typing

from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.server import binding, listeners
from sprockets_statsd.server._admission import (
    AcceptErrors,
    Admission,
)
from sprockets_statsd.server._aggregatorconfig import AggregatorConfig
from sprockets_statsd.server._extras import needs_extra
from sprockets_statsd.server._graphiteown import GraphiteStats
from sprockets_statsd.server._listening import bind_listeners
from sprockets_statsd.server._snapshot import Snapshot
from sprockets_statsd.server.admin import AdminServer, Console
from sprockets_statsd.server.aggregator import Aggregator
from sprockets_statsd.server.config import (
    DEFAULT_PORT,
    DEFAULT_SHUTDOWN_TIMEOUT,
    ServerConfig,
)
from sprockets_statsd.server.frames import FrameStore
from sprockets_statsd.server.repeater import Repeaters
from sprockets_statsd.server.sinks import GraphiteSink, Sink, StreamSink
from sprockets_statsd.server.status import ServerStatus

if typing.TYPE_CHECKING:  # Tornado and prometheus_client come with the server extra.
    from sprockets_statsd.server.http import QueryService
    from sprockets_statsd.server.prometheus import StatsdCollector

__all__ = ['DEFAULT_PORT', 'DEFAULT_SHUTDOWN_TIMEOUT', 'Server', 'ServerConfig', 'report_interval']

logger = logging.getLogger(__name__)

#: Longest wait, in seconds, for the clock to reach the second after the
#: previous flush's before the final flush (see Server._final_flush).
_MAX_FINAL_WAIT = 1.0


def report_interval(snapshot: Snapshot, config: AggregatorConfig) -> None:
    """Log what went wrong in a flush interval: one warning per kind, at most.

    Bad lines and samples dropped at ``max_names`` are counted on every
    line, but logged once per interval with a count, so that a misbehaving
    client cannot flood the log.

    :param snapshot: the interval's flush
    :param config: the aggregator's settings, for ``max_names``
    """
    if snapshot.bad_line_example is not None:
        logger.warning(
            '%d bad lines in this interval, for example %r',
            int(snapshot.bad_lines_seen), snapshot.bad_line_example,
        )
    if snapshot.names_dropped:
        logger.warning(
            'dropped %d samples of new names in this interval: %d names '
            'are held (max_names); raise it or delete idle names',
            snapshot.names_dropped, config.max_names,
        )


class Server:
    """Receive statsd metrics, aggregate them, flush them to every sink.

    :param config: the server's configuration
    :param stdout: where flushes go when no sink is configured (default:
        the process's standard output)
    :param wall_clock: gives each flush's timestamp, in seconds

    Use as ``async with Server(config) as server:`` or call :meth:`start`
    and :meth:`stop`.  Flushes happen at start + k * flush interval, so the
    schedule never drifts, whatever a flush costs.  The load sink (HTTP)
    and the admin console run on the same event loop.
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        stdout: typing.BinaryIO | None = None,
        wall_clock: typing.Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.aggregator = Aggregator(config.aggregator)
        self.udp_listeners: list[listeners.UDPListener] = []
        self.stream_listeners: list[listeners.StreamListener] = []
        #: Bounds shared by the stream listeners: connections, idleness.
        self.admission = Admission(config.max_connections, config.idle_timeout)
        self.sinks: list[Sink] = []
        #: Forward every packet to the ``repeat`` targets, then aggregate it.
        self.repeaters = Repeaters.for_targets(config.repeat)
        self._receiver = self.repeaters.wrap(self.aggregator)
        #: Health, uptime and message statistics (admin console, /health).
        #: Uptime is real time: the injected clock stamps flushes alone.
        self.status = ServerStatus(time.time())
        #: The load sink, while served (one of :attr:`sinks` once started).
        self.query: QueryService | None = None
        self.admin: AdminServer | None = None
        self._stdout = stdout
        self._wall_clock = wall_clock
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._flush_task: asyncio.Task[None] | None = None
        #: The previous flush's timestamp (0: none yet).
        self._last_timestamp = 0
        #: The wall clock's reading at the previous flush, and the loop's.
        self._flushed_at = (0.0, 0.0)
        self._started = False
        self._stopped = False
        self._accept_errors = AcceptErrors()

    @property
    def udp_addresses(self) -> list[typing.Any]:
        """The bound UDP addresses (as :meth:`socket.getsockname` says), then
        the Unix datagram socket's path if any."""
        return [listener.address for listener in self.udp_listeners]

    @property
    def tcp_addresses(self) -> list[typing.Any]:
        """The bound TCP addresses, then the Unix socket path if any."""
        return [listener.address for listener in self.stream_listeners]

    @property
    def frames(self) -> FrameStore | None:
        """The load sink's frames, while it is served."""
        return self.query.frames if self.query is not None else None

    @property
    def collector(self) -> StatsdCollector | None:
        """The load sink's Prometheus collector, while it is served."""
        return self.query.collector if self.query is not None else None

    @property
    def http_addresses(self) -> list[typing.Any]:
        """Where the load sink's HTTP endpoints are served."""
        return self.query.addresses if self.query is not None else []

    @property
    def admin_addresses(self) -> list[typing.Any]:
        """Where the admin console listens."""
        return self.admin.addresses if self.admin is not None else []

    def describe(self) -> str:
        """One line saying where the server listens and where it flushes."""
        where = [
            f'{"unix-dgram" if isinstance(a, str) else "udp"} {binding.format_address(a)}'
            for a in self.udp_addresses
        ]
        for listener in self.stream_listeners:
            kind = 'unix' if isinstance(listener.address, str) else 'tcp'
            where.append(f'{kind} {listener.description}')
        targets = [sink.name for sink in self.sinks]
        text = (
            f'listening on {", ".join(where)}; flushing every '
            f'{self.config.aggregator.flush_interval:g} s to {", ".join(targets)}'
        )
        if self.admin_addresses:
            consoles = ', '.join(binding.format_address(a) for a in self.admin_addresses)
            text += f'; admin console on {consoles}'
        if self.repeaters.repeaters:
            text += '; repeating to ' + ', '.join(r.name for r in self.repeaters.repeaters)
        return text

    async def start(self) -> None:
        """Bind every socket, start the sinks and the flush timer.

        :raises OSError: when an address cannot be bound (nothing is left
            open then)
        """
        if self._started:
            raise RuntimeError('the server was already started')
        self._started = True
        self.status = ServerStatus(time.time())  # uptime counts from here
        try:
            bind_listeners(
                self.config, self._receiver, self.admission,
                self.udp_listeners, self.stream_listeners,
            )
            self._bind_queries()
        except BaseException:
            for udp in self.udp_listeners:
                udp.close()
            for stream in self.stream_listeners:
                await stream.close()
            await self._stop_queries()
            raise
        if self.stream_listeners:
            self.admission.fit_descriptors()
        self._accept_errors.install(asyncio.get_running_loop())
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix='statsd-render'
        )
        self._make_sinks()
        for sink in self.sinks:
            sink.start()
        await self.repeaters.start()
        for udp in self.udp_listeners:
            udp.start()
        for stream in self.stream_listeners:
            await stream.start()
        if self.admin is not None:
            await self.admin.start()
        self._flush_task = asyncio.get_running_loop().create_task(
            self._flush_loop(), name='statsd flush timer'
        )
        logger.info('statsd server %s', self.describe())

    def _bind_queries(self) -> None:
        """Bind the load sink's HTTP addresses and the admin console."""
        config = self.config
        http = [(address, True) for address in config.load_sinks]
        if not config.sinks and not config.load_sinks and config.default_load_sink:
            http.append((config.default_load_sink, False))
        if http:
            try:
                with needs_extra('the load sink'):
                    from sprockets_statsd.server.http import QueryService
                    from sprockets_statsd.server.prometheus import StatsdCollector
            except ConfigurationError as exc:
                if config.load_sinks:
                    raise
                # Only the default: the server runs without it.
                logger.warning('%s; running without it (--http off hides this line)', exc)
                http = []
        if http:
            collector = StatsdCollector(
                config.aggregator.percent_thresholds, config.aggregator.histograms
            )
            self.query = QueryService(FrameStore(config.frame_length), collector, self.status)
            for (host, port), required in http:
                binding.bind_or_warn(self.query.bind, host, port, 'the load sink', required)
            if not self.query.addresses:
                self.query = None
        address, required = config.admin, True
        if address is None:
            address, required = config.default_admin, False
        if address is not None:
            host, port = address
            console = Console(
                self.aggregator, self.status, config=config, backends=self._backends
            )
            self.admin = AdminServer(console)
            binding.bind_or_warn(self.admin.bind, host, port, 'the admin console', required)
            if not self.admin.addresses:
                self.admin = None

    def _backends(self) -> list[tuple[str, GraphiteStats]]:
        """Each sink's previous send, for the admin console's ``stats``."""
        sent = [(sink.name, sink.stats) for sink in self.sinks if sink.stats is not None]
        if len(sent) == 1:
            return [('graphite', sent[0][1])]
        return [(f'graphite[{name}]', stats) for name, stats in sent]

    async def _stop_queries(self) -> None:
        if self.query is not None:
            await self.query.stop()
        if self.admin is not None:
            await self.admin.stop()

    def _make_sinks(self) -> None:
        config = self.config
        if not config.sinks and not config.load_sinks:
            stdout = self._stdout or sys.stdout.buffer
            self.sinks.append(
                StreamSink(
                    stdout,
                    config.aggregator,
                    buffer_bytes=config.sink_buffer_bytes,
                    buffer_flushes=config.sink_buffer_flushes,
                    executor=self._executor,
                )
            )
        for host, port in config.sinks:
            self.sinks.append(
                GraphiteSink(
                    host,
                    port,
                    config.aggregator,
                    buffer_bytes=config.sink_buffer_bytes,
                    buffer_flushes=config.sink_buffer_flushes,
                    reconnect_max_delay=config.reconnect_max_delay,
                    executor=self._executor,
                )
            )
        if self.query is not None:
            self.sinks.append(self.query)

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.aggregator.flush_interval
        start = loop.time()
        k = 1
        while True:
            # Every deadline counts from the start, so lateness never adds up.
            await asyncio.sleep(start + k * interval - loop.time())
            self.flush()
            behind = math.floor((loop.time() - start) / interval)
            if behind > k:
                logger.warning(
                    'flushing fell %d interval(s) behind; skipping to the next',
                    behind - k,
                )
                k = behind
            k += 1

    def flush(self) -> None:
        """Flush the aggregator now and hand the snapshot to every sink."""
        now = self._wall_clock()
        self._flushed_at = (now, asyncio.get_running_loop().time())
        try:
            snapshot = self.aggregator.flush(now)
        except Exception:
            logger.exception('flush failed; its metrics are lost')
            return
        self._last_timestamp = snapshot.timestamp
        report_interval(snapshot, self.config.aggregator)
        for sink in self.sinks:
            sink.submit(snapshot)
        self.status.flushed(snapshot, now)

    async def _final_flush(self) -> None:
        """The last flush, stamped a second after the previous one at least.

        Graphite keeps the last value written for a timestamp, so a final
        flush in the same second as the regular one before it would replace
        that full interval with its partial one.  Stamping it later than
        the clock instead would lose it: whisper drops points from the
        future.  So it waits until the clock rounds to a later second (at
        most a second, within the shutdown timeout); the aggregator moves
        the stamp on in any case.
        """
        if self._last_timestamp:
            # The wall clock now, from its reading at the previous flush
            # (so that an injected clock is read once per flush).
            wall, then = self._flushed_at
            now = wall + asyncio.get_running_loop().time() - then
            wait = self._last_timestamp + 0.5 - now
            limit = min(_MAX_FINAL_WAIT, self.config.shutdown_timeout / 2)
            if wait > 0:
                await asyncio.sleep(min(wait, limit))
        self.flush()

    async def stop(self) -> None:
        """Stop receiving, flush what was received, deliver it, release all.

        Delivery is bounded by the configured shutdown timeout; flushes
        still undelivered then are dropped and logged by their sink.
        """
        if not self._started or self._stopped:
            return
        self._stopped = True
        if self._flush_task is not None:
            self._flush_task.cancel()
            await asyncio.wait({self._flush_task})
        for udp in self.udp_listeners:
            udp.close()
        await asyncio.gather(*(stream.close() for stream in self.stream_listeners))
        await self._stop_queries()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self._final_flush()
        # The wait for the final flush's second comes out of the timeout.
        timeout = max(self.config.shutdown_timeout - (loop.time() - started), 0.0)
        await asyncio.gather(
            *(sink.close(timeout) for sink in self.sinks),
            self.repeaters.close(timeout),
        )
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._accept_errors.uninstall()
        logger.info('statsd server stopped')

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

