"""Time-based throttling of repeated warnings."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ['DEFAULT_INTERVAL', 'Throttle']

#: At most one warning of a kind per this many seconds: a broken network
#: must not turn into a log storm, yet the operator still hears of it.
DEFAULT_INTERVAL = 10.0


class Throttle:
    """Logs each kind of warning at most once per `interval` seconds.

    :param logger: where the messages go
    :param interval: seconds between two messages of one kind
    :param clock: a monotonic clock; injectable for tests

    When a message is let through after others were held back, it says how
    many were suppressed, so nothing is lost silently.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = DEFAULT_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: object) -> bool:
        """Log `message` at WARNING unless `kind` was logged too recently.

        :returns: whether the message was logged
        """
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        self._last[kind] = now
        held = self._suppressed.pop(kind, 0)
        if held:
            self._logger.warning(
                message + ' (%d similar messages suppressed)', *args, held
            )
        else:
            self._logger.warning(message, *args)
        return True

    def reset(self, kind: str) -> None:
        """Forget `kind`, so that its next warning is logged at once."""
        self._last.pop(kind, None)
        self._suppressed.pop(kind, None)
