"""The interface every sink implements: take each flush, deliver it, close."""

from __future__ import annotations

import abc

from sprockets_statsd.server._graphiteown import GraphiteStats
from sprockets_statsd.server._snapshot import Snapshot

__all__ = ['Sink']


class Sink(abc.ABC):
    """Where the server hands every flush: Graphite, a stream, the load sink."""

    #: What the sink reports about its previous send, as Graphite lines
    #: (the admin console's ``stats``); ``None`` for a sink that sends none.
    stats: GraphiteStats | None = None

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """How logs and the startup line refer to this sink."""

    @abc.abstractmethod
    def start(self) -> None:
        """Start working on the running event loop."""

    @abc.abstractmethod
    def submit(self, snapshot: Snapshot) -> None:
        """Take one flush; never blocks, never raises.

        :param snapshot: the flush, from :meth:`.Aggregator.flush`
        """

    @abc.abstractmethod
    async def close(self, timeout: float) -> None:
        """Deliver what is queued, waiting at most `timeout` seconds, and stop.

        :param timeout: seconds to wait for delivery
        """
