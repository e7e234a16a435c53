"""The server's own state for the admin console and ``/health``."""

from __future__ import annotations

import math

from sprockets_statsd.server._snapshot import Snapshot

__all__ = ['HEALTH_DOWN', 'HEALTH_UP', 'ServerStatus']

HEALTH_UP = 'up'
HEALTH_DOWN = 'down'


class ServerStatus:
    """Health, uptime and message statistics, as the reference keeps them.

    The hot path is left alone: the times are learnt from the flushes (and
    from the interval in progress when asked), so :attr:`last_msg_seen` is
    accurate to one flush interval.

    :param startup_time: unix seconds when the server started
    """

    def __init__(self, startup_time: float) -> None:
        self.startup_time = math.floor(startup_time)
        #: ``up`` or ``down``; the admin console's ``health`` sets it and
        #: ``/health`` answers 503 while it is down.
        self.health = HEALTH_UP
        #: unix seconds of the last flush or query that saw new metrics
        self.last_msg_seen = self.startup_time
        #: bad lines of every flush so far
        self.bad_lines_flushed = 0.0

    @property
    def healthy(self) -> bool:
        """Whether load balancers should send traffic here."""
        return self.health == HEALTH_UP

    def flushed(self, snapshot: Snapshot, now: float) -> None:
        """Account for one flush.

        :param snapshot: the flush
        :param now: unix seconds
        """
        self.bad_lines_flushed += snapshot.bad_lines_seen
        if snapshot.metrics_received:
            self.last_msg_seen = math.floor(now)

    def seen_now(self, metrics_received: float, now: float) -> None:
        """Note the interval in progress: metrics in it were seen by `now`.

        :param metrics_received: the interval's ``metrics_received`` so far
        :param now: unix seconds
        """
        if metrics_received:
            self.last_msg_seen = math.floor(now)
