"""The processor's connections across reconnects, and what they sent, dropped and gave back.

A reconnect replaces the current connection while the old one may still be
closing: until it has closed it can hand back payloads it could not write
and its counts can still change, so it is kept, then only its counts are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sprockets_statsd.protocols import StatsdProtocol

__all__ = ['Connections']

# Named for the public module, not this one: operators filter the
# processor's logs by that name, which the docs give.
logger = logging.getLogger('sprockets_statsd.processor')


class Connections:
    """The connections of a :class:`~sprockets_statsd.processor.Processor`,
    its base: the current one, those still closing, and their counts."""

    def __init__(self) -> None:
        self.protocol: StatsdProtocol | None = None
        # Counts of the connections no longer tracked; the live ones count
        # for themselves (see sent and dropped).
        self._sent_before = 0
        self._dropped = 0
        self._unsent: list[bytes] = []
        # Connections being closed that may still hand payloads back.
        self._retiring: list[StatsdProtocol] = []

    @property
    def sent(self) -> int:
        """Payloads handed to the operating system (counted by the protocols)."""
        return self._sent_before + sum(p.sent for p in self._live())

    @property
    def dropped(self) -> int:
        """Payloads refused by the operating system, lost to failed sends or abandoned."""
        return self._dropped + sum(p.dropped for p in self._live())

    def _live(self) -> list[StatsdProtocol]:
        return [*self._retiring, self.protocol] if self.protocol is not None else self._retiring

    def _forget(self, protocol: StatsdProtocol) -> None:
        """Stop tracking a closed connection, keeping its counts."""
        self._sent_before += protocol.sent
        self._dropped += protocol.dropped

    @property
    def connected(self) -> bool:
        """Is there a connection that can carry payloads now?"""
        return self.protocol is not None and self.protocol.connected.is_set()

    def _adopt(self, protocol: StatsdProtocol) -> None:
        """Make `protocol` the current connection; keep the one it replaces
        until that one has closed."""
        if self.protocol is not None:
            if self.protocol.closed:
                self._forget(self.protocol)
            else:
                self._retiring.append(self.protocol)
        self.protocol = protocol

    def _take_unsent(self) -> None:
        """Keep what closed or closing connections returned for the next one."""
        protocols = [*self._retiring, self.protocol] if self._retiring else [self.protocol]
        for protocol in protocols:
            if protocol is not None and protocol.unsent:
                # Already taken off the protocol's count of sent payloads.
                self._unsent[:0] = protocol.unsent
                protocol.unsent = []
        if self._retiring:
            for retired in self._retiring:
                if retired.closed:
                    self._forget(retired)
            self._retiring = [p for p in self._retiring if not p.closed]

    def _lose(self, count: int, reason: str) -> None:
        if count:
            self._dropped += count
            logger.warning('dropped %d statsd payloads: %s', count, reason)

    async def _close(self, remaining: Callable[[], float]) -> None:
        """Close every connection, each within the `remaining` seconds."""
        for retiring in self._retiring:
            await self._close_one(retiring, remaining)
        if self.protocol is not None:
            await self._close_one(self.protocol, remaining)

    async def _close_one(self, protocol: StatsdProtocol,
                         remaining: Callable[[], float]) -> None:
        if protocol.transport is None:
            return
        try:
            await asyncio.wait_for(protocol.shutdown(), max(remaining(), 0.001))
        except asyncio.TimeoutError:
            lost = protocol.abort()  # no longer counted as sent by the protocol
            self._lose(lost, 'the connection did not drain before the shutdown timeout')
        except Exception as error:  # pragma: no cover - defensive
            logger.warning('error closing the statsd connection: %r', error)
