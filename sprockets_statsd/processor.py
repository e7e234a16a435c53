"""The Processor: a bounded queue drained in batches over a reconnecting transport.

Strategy: the processor task waits (once) for the queue to become non-empty,
then takes everything that is ready with ``get_nowait()`` up to
``max_batch_size`` payloads and gives the batch to the protocol adapter in
one call.  It never awaits per metric, so the cost per metric is a queue
``get_nowait`` plus its share of one ``join`` and one system call.

Connections are opened on demand with a connect timeout, re-resolving the
host each time, and retried with exponential back-off and jitter; those a
reconnect replaced are kept until closed (``_connections``).  Nothing
that happens while handling a payload can end the task: errors are logged
(throttled by time) and the loop goes on.  :meth:`Processor.stop` flushes
within ``shutdown_timeout`` seconds and accounts for every payload it could
not deliver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import typing
from collections.abc import Callable

from sprockets_statsd._connections import Connections
from sprockets_statsd._payloadqueue import DEFAULT_MAX_QUEUE_SIZE, PayloadQueue
from sprockets_statsd._throttle import Throttle
from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.protocols import MAX_UNIX_DATAGRAM_SIZE, StatsdProtocol
from sprockets_statsd.transports import (
    TransportFactory,
    parse_address,
    socket_factory,
    unix_socket,
)

__all__ = ['DEFAULT_MAX_QUEUE_SIZE', 'PayloadQueue', 'Processor']

logger = logging.getLogger(__name__)

#: Payloads taken from the queue per batch.  Large enough that the per-batch
#: costs vanish, small enough that one batch never stalls the loop (~1 ms).
DEFAULT_MAX_BATCH_SIZE = 1_000


def _positive(name: str, value: typing.Any, kind: type = float) -> typing.Any:
    """Return `value` converted to `kind`, or raise naming the argument."""
    try:
        if isinstance(value, bool):
            raise TypeError
        converted = kind(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f'{name} must be a positive {kind.__name__}, not {value!r}'
        ) from None
    if not converted > 0:
        raise ConfigurationError(
            f'{name} must be a positive {kind.__name__}, not {value!r}'
        )
    return converted


class Processor(Connections):
    """Maintains the statsd connection and sends queued payloads.

    :param host: host name or address of the statsd server,
        ``unix:/path`` (or an absolute path) for a Unix stream socket, or
        ``unixgram:/path`` for a Unix datagram socket
    :param port: the server's port, 1 to 65535 (ignored for Unix sockets)
    :param ip_protocol: :data:`socket.IPPROTO_TCP` or :data:`socket.IPPROTO_UDP`
    :param max_queue_size: payloads held before new metrics are dropped
    :param max_batch_size: payloads taken from the queue per send
    :param max_udp_size: largest datagram in bytes: by default 512 over UDP
        (safe on any path; raise it on a LAN or loopback) and
        :data:`~sprockets_statsd.protocols.MAX_UNIX_DATAGRAM_SIZE` (8192)
        over a Unix datagram socket
    :param reconnect_sleep: first delay after a failed connection, seconds
    :param max_reconnect_sleep: cap of the exponential back-off, seconds
    :param connect_timeout: how long one connection attempt may take
    :param shutdown_timeout: how long :meth:`stop` may take to flush
    :param wait_timeout: how long the idle task waits for a payload before
        it checks :attr:`should_terminate` and the connection again
    :param transport_factory: opens a connection (see
        :mod:`sprockets_statsd.transports`); by default real sockets to
        `host`, and for tests a
        :class:`~sprockets_statsd.transports.MemoryServer`
    :raises ~sprockets_statsd.errors.ConfigurationError: naming the argument
        that is empty, out of range or unknown

    .. attribute:: queue
       :type: PayloadQueue

       Formatted payloads (``bytes`` without a trailing newline); an
       :class:`asyncio.Queue`.  The processor marks every payload it takes
       as done once it has handed it on, so ``await processor.queue.join()``
       waits for what is queued to be sent (or dropped) without stopping.

    .. attribute:: running
       :type: asyncio.Event

       Set while :meth:`run` runs.

    .. attribute:: stopped
       :type: asyncio.Event

       Set while :meth:`run` is not running.

    .. attribute:: should_terminate
       :type: bool

       Set it (or call :meth:`stop`) to make :meth:`run` flush and return.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int = 8125,
        ip_protocol: int = socket.IPPROTO_TCP,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_udp_size: int | None = None,
        reconnect_sleep: float = 1.0,
        max_reconnect_sleep: float = 30.0,
        connect_timeout: float = 5.0,
        shutdown_timeout: float = 5.0,
        wait_timeout: float = 0.1,
        transport_factory: TransportFactory | None = None,
    ) -> None:
        if isinstance(host, str) and host.strip() and unix_socket(host) is None:
            port = _positive('port', port, int)
        self.address = parse_address(host, port, ip_protocol)
        #: The path of a Unix (stream or datagram) socket, else ``None``.
        self.unix_path = self.address.host if self.address.is_unix else None
        self.host = host
        self.port = port
        self.ip_protocol = ip_protocol
        self.max_batch_size = _positive('max_batch_size', max_batch_size, int)
        if max_udp_size is None:
            max_udp_size = MAX_UNIX_DATAGRAM_SIZE if self.address.kind == 'unixgram' else 512
        self.max_udp_size = _positive('max_udp_size', max_udp_size, int)
        self._factory = transport_factory or socket_factory(
            self.address, max_datagram_size=self.max_udp_size
        )
        self.reconnect_sleep = _positive('reconnect_sleep', reconnect_sleep)
        self.max_reconnect_sleep = max(
            _positive('max_reconnect_sleep', max_reconnect_sleep), self.reconnect_sleep
        )
        self.connect_timeout = _positive('connect_timeout', connect_timeout)
        self.shutdown_timeout = _positive('shutdown_timeout', shutdown_timeout)
        self.wait_timeout = _positive('wait_timeout', wait_timeout)
        self.queue = PayloadQueue(maxsize=_positive('max_queue_size', max_queue_size, int))
        self.running = asyncio.Event()
        self.stopped = asyncio.Event()
        self.stopped.set()
        self.should_terminate = False
        super().__init__()
        self._getter: asyncio.Task[bytes] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._deadline: float | None = None
        self._failures = 0
        self._random = random.Random()
        self._warn = Throttle(logger)

    def enqueue(self, metric: bytes) -> None:
        """Put a payload on the queue, as the metric methods do.

        :raises asyncio.QueueFull: when the queue is full (the payload is
            not queued)
        """
        if not self.queue.offer(metric):
            raise asyncio.QueueFull

    async def run(self) -> None:
        """Connect, send payloads as they arrive, and flush when told to stop.

        Runs until :attr:`should_terminate` is set (see :meth:`stop`).
        """
        self.should_terminate = False
        self._deadline = None
        self.stopped.clear()
        self.running.set()
        try:
            while not self.should_terminate:
                await self._step(self.wait_timeout)
            await self._flush()
        finally:
            self._cancel_getter()
            self.running.clear()
            self.stopped.set()

    async def stop(self) -> None:
        """Ask :meth:`run` to flush and stop, and wait until it has.

        Returns within ``shutdown_timeout`` seconds (plus scheduling delays).
        """
        self._stop_soon()
        await self.stopped.wait()

    def abandon_queue(self) -> None:
        """Count everything queued as dropped (for a processor never run)."""
        count = self._drain_queue() + len(self._unsent)
        self._unsent.clear()
        self._lose(count, 'the processor was never started')

    def _drain_queue(self) -> int:
        """Empty the queue, marking what it held as done; return how many."""
        taken = len(self.queue.take(self.queue.qsize()))
        self.queue.task_done(taken)
        return taken

    def _stop_soon(self) -> None:
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().time() + self.shutdown_timeout
        self.should_terminate = True
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _remaining(self) -> float:
        if self._deadline is None:
            return float('inf')
        return self._deadline - asyncio.get_running_loop().time()

    async def _pause(self, delay: float) -> None:
        """Sleep for `delay` seconds, cut short by :meth:`stop`."""
        self._wakeup = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait({self._wakeup}, timeout=delay)
        finally:
            self._wakeup = None

    async def _step(self, timeout: float) -> None:
        """One round: connect if needed, then send one batch if one is ready."""
        try:
            if not self.connected:
                await self._connect()
                return
            protocol = typing.cast(StatsdProtocol, self.protocol)
            if not protocol.writable:
                await asyncio.wait_for(protocol.wait_writable(), timeout)
                return
            batch = await self._next_batch(timeout)
            if batch:
                self._send(protocol, batch)
        except asyncio.TimeoutError:
            pass
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._warn.warning('loop', 'statsd processor error: %r', error)
            logger.debug('statsd processor error', exc_info=True)

    async def _next_batch(self, timeout: float) -> list[bytes]:
        """Payloads ready to go: the unsent ones first, then the queue's."""
        if self._retiring:
            self._take_unsent()
        if self._unsent:
            size = self.max_batch_size
            batch, self._unsent = self._unsent[:size], self._unsent[size:]
            return batch
        queue = self.queue
        getter = self._getter
        if getter is None and queue.empty():
            getter = self._getter = asyncio.get_running_loop().create_task(queue.get())
        if getter is not None:
            if not getter.done():
                wakeup = self._wakeup = asyncio.get_running_loop().create_future()
                waiters: set[asyncio.Future[typing.Any]] = {getter, wakeup}
                try:
                    await asyncio.wait(waiters, timeout=timeout,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    self._wakeup = None
                if not getter.done():
                    return []
            self._getter = None
            batch = [getter.result()]
        else:
            batch = []
        batch.extend(queue.take(self.max_batch_size - len(batch)))
        # Done as far as the queue is concerned: the caller hands the batch
        # on before it yields to the event loop, so join() wakes after that.
        queue.task_done(len(batch))
        return batch

    def _send(self, protocol: StatsdProtocol, batch: list[bytes]) -> None:
        dropped = protocol.dropped
        try:
            protocol.send_batch(batch)
        except TypeError:
            # Something other than bytes was put on the queue by hand.
            self._send(protocol, self._only_bytes(batch))
            return
        self._unsent.extend(protocol.unsent)
        protocol.unsent.clear()
        if protocol.dropped != dropped:
            self._warn.warning(
                'send', 'statsd at %s refused %d payloads: %s',
                self.address, protocol.dropped - dropped, protocol.last_error,
            )

    def _only_bytes(self, batch: list[bytes]) -> list[bytes]:
        good: list[bytes] = []
        for payload in batch:
            if isinstance(payload, bytes):
                good.append(payload)
            elif isinstance(payload, str):  # type: ignore[unreachable]
                good.append(payload.encode())
            else:
                self._lose(1, f'{type(payload).__name__} is not a payload')
        return good

    async def _connect(self) -> None:
        """Open a new connection, or back off after a failure."""
        self._take_unsent()
        try:
            protocol = await asyncio.wait_for(
                self._factory(),
                min(self.connect_timeout, max(self._remaining(), 0.001)),
            )
        except (OSError, asyncio.TimeoutError) as error:
            self._failures += 1
            self._warn.warning(
                'connect', 'connection to statsd at %s failed: %s',
                self.address, error or 'timed out',
            )
            await self._pause(min(self._backoff(self._failures), max(self._remaining(), 0)))
        else:
            self._failures = 0
            self._warn.reset('connect')
            self._adopt(protocol)

    def _backoff(self, failures: int) -> float:
        """The delay after `failures` failed attempts in a row.

        Doubles from ``reconnect_sleep`` up to ``max_reconnect_sleep``; the
        actual delay is drawn between half and all of that, so that many
        clients cut off at once do not reconnect in lockstep.
        """
        ceiling = min(self.max_reconnect_sleep,
                      self.reconnect_sleep * 2 ** min(failures - 1, 30))
        return self._random.uniform(ceiling / 2, ceiling)

    async def _flush(self) -> None:
        """Send what is queued until done or the shutdown deadline passes."""
        if self._deadline is None:  # should_terminate was set directly
            self._deadline = asyncio.get_running_loop().time() + self.shutdown_timeout
        while (self._unsent or not self.queue.empty() or self._getter_ready()) \
                and self._remaining() > 0:
            await self._step(max(min(self._remaining(), self.wait_timeout), 0))
        self._cancel_getter()
        await self._close(self._remaining)
        self._take_unsent()
        abandoned = len(self._unsent) + self._drain_queue()
        self._unsent.clear()
        self._lose(abandoned, f'statsd at {self.address} was not reachable '
                              f'within the {self.shutdown_timeout}s shutdown timeout')

    def _getter_ready(self) -> bool:
        return self._getter is not None and self._getter.done()

    def _cancel_getter(self) -> None:
        getter, self._getter = self._getter, None
        if getter is None:
            return
        if getter.done():
            with contextlib.suppress(Exception):
                self._unsent.append(getter.result())
                self.queue.task_done()
        else:
            getter.cancel()


ConnectorFactory = Callable[..., Processor]
