"""What every repeater shares: its counts, connecting, and reconnecting with back-off.

A repeater connects (resolving its target) within a timeout, then a task of
the event loop reconnects, with a doubling delay, whenever the connection
is lost.  Drops are counted and logged at most once per throttle interval.
"""

from __future__ import annotations

import abc
import asyncio
import logging

from sprockets_statsd._throttle import Throttle
from sprockets_statsd.server._repeattarget import RepeatTarget

__all__ = [
    'DEFAULT_CONNECT_TIMEOUT',
    'DEFAULT_RECONNECT_DELAY',
    'DEFAULT_RECONNECT_MAX_DELAY',
    'Repeater',
]

# Named for the public module, not this one: operators filter the repeaters'
# logs by that name, which the docs give.
logger = logging.getLogger('sprockets_statsd.server.repeater')

#: Bounds of the reconnect back-off, and of one connection attempt, seconds.
DEFAULT_RECONNECT_DELAY = 0.5
DEFAULT_RECONNECT_MAX_DELAY = 10.0
DEFAULT_CONNECT_TIMEOUT = 5.0


class Repeater(abc.ABC):
    """Sends packets to one target; never blocks, never raises from
    :meth:`repeat`.

    :param target: where to send
    :param reconnect_delay: first back-off delay after a failure, seconds
    :param reconnect_max_delay: the back-off's ceiling, seconds
    :param connect_timeout: seconds a resolution or connection may take
    """

    def __init__(
        self,
        target: RepeatTarget,
        *,
        reconnect_delay: float = DEFAULT_RECONNECT_DELAY,
        reconnect_max_delay: float = DEFAULT_RECONNECT_MAX_DELAY,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self.target = target
        #: Datagrams (UDP) or packets (TCP) handed to the kernel.
        self.sent = 0
        #: Bytes handed to the kernel.
        self.sent_bytes = 0
        #: Datagrams or packets given up on.
        self.dropped = 0
        self._reconnect_delay = min(reconnect_delay, reconnect_max_delay)
        self._reconnect_max_delay = reconnect_max_delay
        self._connect_timeout = connect_timeout
        self._throttle = Throttle(logger)
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()

    @property
    def name(self) -> str:
        """How logs refer to this repeater: ``udp:host:port``."""
        return str(self.target)

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """Whether packets can be sent right now."""

    @abc.abstractmethod
    def repeat(self, packet: bytes) -> None:
        """Send `packet` on, or count it as dropped; never blocks or raises.

        :param packet: a packet as a listener received it
        """

    @abc.abstractmethod
    async def _connect(self) -> None:
        """Make the connection (resolving the host); raise when it fails."""

    async def start(self) -> None:
        """Connect (waiting at most the connect timeout), then keep the
        connection up in a task of the running event loop."""
        await self._attempt()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f'statsd repeater {self.name}'
        )

    async def close(self, timeout: float) -> None:
        """Stop reconnecting and release the socket.

        :param timeout: seconds to deliver what is buffered
        """
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._task = None
        logger.info('repeater %s: %d sent, %d dropped', self.name, self.sent, self.dropped)

    def _drop(self, count: int, kind: str, why: str) -> None:
        self.dropped += count
        self._throttle.warning(
            kind, 'repeater %s: %s; %d dropped so far', self.name, why, self.dropped
        )

    async def _attempt(self) -> bool:
        try:
            await asyncio.wait_for(self._connect(), self._connect_timeout)
        except Exception as exc:  # OSError, a timeout, a bad host name...
            self._throttle.warning(
                'connect', 'repeater %s: cannot connect (%s)', self.name,
                str(exc) or type(exc).__name__,
            )
            return False
        self._throttle.reset('connect')
        return True

    async def _run(self) -> None:
        delay = self._reconnect_delay
        while True:
            if self.connected:
                await self._lost.wait()
                self._lost.clear()
                delay = self._reconnect_delay
                continue
            await asyncio.sleep(delay)
            if not await self._attempt():
                delay = min(delay * 2, self._reconnect_max_delay)
