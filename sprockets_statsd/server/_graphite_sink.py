"""The sink that sends flushes to Graphite over TCP and resends after a reset."""

# Graphite: one long-lived connection, reconnected with exponential
# back-off.  The kernel taking a payload does not mean the receiver read
# it: a receiver that resets the connection throws away what its kernel
# acknowledged but it never read.  So each payload written stays held,
# "unconfirmed", until the receiver's kernel has acknowledged all of it
# (SIOCOUTQ on Linux gives the bytes still unacknowledged) and the
# connection then stayed open for CONFIRM_DELAY, or until the receiver
# closed the connection cleanly (a clean close means it read everything it
# had acknowledged; unread data makes the kernel reset instead).  When the
# connection fails, the unconfirmed payloads are sent again, in order, on
# the next one: Graphite keeps one value per name and timestamp, so a
# repeated line is harmless.  A connection that fails is aborted with a
# reset, so its descriptor and kernel send queue are released at once.
#
# (A Graphite sink holds its payloads whole, to send them again when a
# connection fails; the stream sink renders them as it writes.)

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time

from sprockets_statsd.server._aggregatorconfig import AggregatorConfig
from sprockets_statsd.server._buffer import BufferedSink, Payload, wait_and_clear
from sprockets_statsd.server._connection import Connection
from sprockets_statsd.server._jsnumber import js_round
from sprockets_statsd.server.binding import format_address
from sprockets_statsd.server.config import (
    DEFAULT_BUFFER_BYTES,
    DEFAULT_BUFFER_FLUSHES,
    DEFAULT_RECONNECT_MAX_DELAY,
)

__all__ = [
    'DEFAULT_CONFIRM_DELAY',
    'DEFAULT_CONNECT_TIMEOUT',
    'DEFAULT_RECONNECT_DELAY',
    'DEFAULT_SEND_TIMEOUT',
    'GraphiteSink',
]

# The public module's name, which log configuration already refers to.
logger = logging.getLogger('sprockets_statsd.server.sinks')

#: The lower bound of the exponential reconnect back-off, in seconds (the
#: upper one is :data:`.DEFAULT_RECONNECT_MAX_DELAY`).
DEFAULT_RECONNECT_DELAY = 0.5

#: How long a connection attempt or the sending of one flush may take.
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_SEND_TIMEOUT = 30.0

#: Seconds a payload stays held after the receiver's kernel acknowledged
#: it, the connection still open, before it counts as read.  Carbon reads
#: within milliseconds; a receiver that resets sooner than this after
#: acknowledging gets the payload again on the next connection.
DEFAULT_CONFIRM_DELAY = 10.0

#: While closing, how often a sink asks the kernel whether the receiver
#: acknowledged the last bytes (TCP has no event for it).
_ACK_POLL = 0.02


class GraphiteSink(BufferedSink):
    """Send flushes to a Graphite plaintext receiver (carbon) over TCP.

    :param host: the receiver's name or address
    :param port: the receiver's port (carbon's default is 2003)
    :param config: the aggregator's configuration
    :param buffer_bytes: most bytes of undelivered flushes kept
    :param buffer_flushes: most undelivered flushes kept
    :param reconnect_delay: first back-off delay after a failure, seconds
    :param reconnect_max_delay: the back-off's ceiling, seconds
    :param connect_timeout: seconds a connection attempt may take
    :param send_timeout: seconds the sending of one flush may take; a
        connection that exceeds it is closed
    :param confirm_delay: seconds a written flush stays held after the
        receiver acknowledged it, to be sent again if the connection fails
    :param executor: renders payloads off the event loop

    A flush whose send fails, or that was written on a connection that
    fails before it was confirmed, is sent again in full on the next
    connection; Graphite stores the repeated points once.
    """

    def __init__(
        self,
        host: str,
        port: int,
        config: AggregatorConfig,
        *,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        buffer_flushes: int = DEFAULT_BUFFER_FLUSHES,
        reconnect_delay: float = DEFAULT_RECONNECT_DELAY,
        reconnect_max_delay: float = DEFAULT_RECONNECT_MAX_DELAY,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        confirm_delay: float = DEFAULT_CONFIRM_DELAY,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        super().__init__(
            config,
            buffer_bytes=buffer_bytes,
            buffer_flushes=buffer_flushes,
            executor=executor,
        )
        self.host = host
        self.port = port
        self._reconnect_delay = min(reconnect_delay, reconnect_max_delay)
        self._reconnect_max_delay = reconnect_max_delay
        self._connect_timeout = connect_timeout
        self._send_timeout = send_timeout
        self._confirm_delay = confirm_delay
        #: Written on the current connection, not yet confirmed read.
        self._unconfirmed: collections.deque[Payload] = collections.deque()
        self._connection: Connection | None = None
        self._delay = self._reconnect_delay
        self._next_attempt = 0.0
        self._failing = False
        #: Flushes sent again because their connection failed.
        self.resent_flushes = 0
        #: Written flushes forgotten unconfirmed to make room in the buffer.
        self.unconfirmed_forgotten = 0

    @property
    def name(self) -> str:
        return format_address((self.host, self.port))

    @property
    def connected(self) -> bool:
        """Whether the sink holds an open connection right now."""
        return self._connection is not None and not self._connection.lost

    @property
    def unconfirmed_flushes(self) -> int:
        """Flushes written but held in case the connection fails."""
        return len(self._unconfirmed)

    def _held_flushes(self) -> int:
        return self.buffered_flushes + len(self._unconfirmed)

    def _evict(self) -> bool:
        if self._unconfirmed:
            # Written and acknowledged or on their way: likely read, so they
            # make room before anything that never left.
            self._release(self._unconfirmed.popleft())
            self.unconfirmed_forgotten += 1
            return True
        return super()._evict()

    def _abandon(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if not connection.lost:
            acked = connection.acknowledged()
            unacked = sum(p.end > acked for p in self._unconfirmed)
            if unacked:
                logger.warning(
                    'sink %s: %d written flush(es) not yet acknowledged by '
                    'the receiver at shutdown',
                    self.name,
                    unacked,
                )
        while self._unconfirmed:
            self._release(self._unconfirmed.popleft())
        transport = connection.transport
        if transport is not None and transport.get_write_buffer_size() == 0:
            transport.close()  # the kernel still sends what it holds
        else:
            connection.abort()

    async def _deliver_all(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            connection = self._connection
            if connection is not None:
                if connection.lost:
                    if self._lost(connection):
                        self._failed('delivery', ConnectionResetError('connection lost'))
                    continue
                self._confirm(connection)
            if self._done():
                if not self._unconfirmed_unacked():
                    return
                await wait_and_clear(self._payload_added, _ACK_POLL)
                continue
            if not self._payloads:
                await wait_and_clear(self._payload_added, self._next_check())
                continue
            if not self.connected:
                delay = self._next_attempt - loop.time()
                if delay > 0:
                    await wait_and_clear(self._payload_added, delay)
                    continue
                await self._connect()
                continue
            await self._send()

    def _next_check(self) -> float | None:
        """Seconds until unconfirmed payloads are worth looking at again."""
        if not self._unconfirmed or not self.connected:
            return None
        return self._confirm_delay / 2

    def _unconfirmed_unacked(self) -> bool:
        connection = self._connection
        if connection is None or connection.lost or not self._unconfirmed:
            return False
        return connection.acknowledged() < self._unconfirmed[-1].end

    def _confirm(self, connection: Connection, *, everything: bool = False) -> None:
        """Forget unconfirmed payloads that the receiver has surely read.

        :param everything: the receiver closed cleanly, so whatever it
            acknowledged it read
        """
        if not self._unconfirmed:
            return
        acked = connection.acknowledged()
        now = time.monotonic()
        while self._unconfirmed:
            payload = self._unconfirmed[0]
            if payload.end > acked:
                break
            if payload.acked_at is None:
                payload.acked_at = now
            if not everything and now - payload.acked_at < self._confirm_delay:
                break
            self._release(self._unconfirmed.popleft())
            # Read by the receiver: the connection works.
            self._delay = self._reconnect_delay
            self._failing = False
        for payload in self._unconfirmed:
            if payload.end > acked:
                break
            if payload.acked_at is None:
                payload.acked_at = now

    def _on_eof(self, connection: Connection) -> None:
        if connection is self._connection:
            self._confirm(connection, everything=True)

    def _lost(self, connection: Connection) -> int:
        """Put back what `connection` left unconfirmed, to be sent again.

        :returns: how many flushes will be sent again
        """
        if connection is self._connection:
            self._connection = None
        connection.abort()
        count = len(self._unconfirmed)
        if count:
            self.resent_flushes += count
            for payload in self._unconfirmed:
                payload.acked_at = None
            self._payloads.extendleft(reversed(self._unconfirmed))
            self._unconfirmed.clear()
            self._throttle.warning(
                'resend',
                'sink %s: the connection failed before %d written flush(es) '
                'were known to be read; sending them again',
                self.name,
                count,
            )
        return count

    def _failed(self, what: str, exc: BaseException) -> None:
        loop = asyncio.get_running_loop()
        self.stats.last_exception = js_round(time.time())
        self._next_attempt = loop.time() + self._delay
        level = logging.DEBUG if self._failing else logging.WARNING
        logger.log(
            level,
            'sink %s: %s failed (%s), %d flush(es) buffered, retrying in %.1f s',
            self.name,
            what,
            str(exc) or type(exc).__name__,
            self.buffered_flushes,
            self._delay,
        )
        self._failing = True
        self._delay = min(self._delay * 2, self._reconnect_max_delay)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Connection(self._on_eof, self._payload_added.set),
                    self.host,
                    self.port,
                ),
                self._connect_timeout,
            )
        except Exception as exc:  # OSError, a timeout, a bad host name...
            self._failed('connecting', exc)
            return
        self._connection = connection
        log = logger.warning if self._failing else logger.info
        log('sink %s: connected', self.name)

    async def _send(self) -> None:
        connection = self._connection
        assert connection is not None
        payload = self._sending = self._payloads.popleft()
        started = time.perf_counter()
        try:
            await asyncio.wait_for(
                connection.send(payload.chunks), self._send_timeout
            )
        except Exception as exc:  # OSError or a timeout
            self._sending = None
            self._payloads.appendleft(payload)
            self._lost(connection)
            self._failed('sending', exc)
            return
        self._sending = None
        payload.end = connection.written
        payload.acked_at = None
        if connection.lost:
            # Lost while the last bytes went out: send it again, too.
            self._unconfirmed.append(payload)
            self._lost(connection)
            self._failed('sending', ConnectionResetError('connection lost'))
            return
        self._unconfirmed.append(payload)
        self._sent(started, payload.size)
