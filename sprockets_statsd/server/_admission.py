"""Admission of stream connections: how many, how long idle, how much partial data.

Strategy: every TCP and Unix stream listener of a server shares one
:class:`Admission`.  It caps the connections open at once, so that clients
cannot take every file descriptor: at start it raises the soft
``RLIMIT_NOFILE`` towards the hard one (as Redis does) and, if the
connections asked for still do not fit beside :data:`FD_RESERVE`
descriptors kept for the sinks, the HTTP endpoints, the admin console and
the log, lowers the cap and says so.  A connection is also refused when
its own descriptor number reaches into the reserve (the kernel hands out
the lowest free number, so that means the reserve is being used up by
something), whatever the count.  Refusals and accept failures are logged
at most once per ten seconds.  Partial lines held by all connections
together are bounded by :data:`DEFAULT_MAX_PARTIAL_BYTES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import typing

from sprockets_statsd._throttle import Throttle

__all__ = [
    'DEFAULT_IDLE_TIMEOUT',
    'DEFAULT_MAX_CONNECTIONS',
    'DEFAULT_MAX_PARTIAL_BYTES',
    'FD_RESERVE',
    'AcceptErrors',
    'Admission',
]

logger = logging.getLogger(__name__)

#: Stream connections served at once, over every TCP and Unix listener.
#: Statsd clients over TCP keep one connection per process; a thousand
#: covers a large host fleet (Telegraf's statsd input allows 250, Redis
#: 10,000 clients), and fits a default 1024-descriptor limit once raised.
DEFAULT_MAX_CONNECTIONS = 1024

#: Seconds a stream connection may stay silent before it is closed.  A
#: client with something to say sends within a flush interval or two; ten
#: minutes, like the admin console, only weeds out the forgotten ones.
DEFAULT_IDLE_TIMEOUT = 600.0

#: Bytes of unfinished lines held by all stream connections together: a
#: connection whose partial line would go beyond it has the line counted
#: as bad (like an over-long one) instead.
DEFAULT_MAX_PARTIAL_BYTES = 16 * 1024 * 1024

#: File descriptors kept free of stream connections: sinks, HTTP
#: connections, 64 console connections, log files, the event loop's own.
FD_RESERVE = 128


def _open_descriptors() -> int:
    """Descriptors the process has open now (0 where it cannot tell)."""
    try:
        return len(os.listdir('/proc/self/fd'))
    except OSError:
        return 0


class Admission:
    """The bounds every stream listener of one server shares.

    :param max_connections: connections served at once
    :param idle_timeout: seconds of silence before a connection is closed
        (0 for never)
    :param max_partial_bytes: bytes of partial lines held in all
    :param reserve: descriptors kept free of stream connections
    """

    def __init__(
        self,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        *,
        max_partial_bytes: int = DEFAULT_MAX_PARTIAL_BYTES,
        reserve: int = FD_RESERVE,
    ) -> None:
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.max_partial_bytes = max_partial_bytes
        self.reserve = reserve
        #: Connections served at once, after :meth:`fit_descriptors`.
        self.limit = max_connections
        #: The descriptor number from which connections are refused.
        self.descriptor_ceiling: int | None = None
        #: Connections open now.
        self.open = 0
        #: Bytes of partial lines held now.
        self.partial_bytes = 0
        #: Connections refused (limit or reserve reached) so far.
        self.refused = 0
        #: Connections closed for staying silent so far.
        self.idle_closed = 0
        #: Partial lines counted as bad to keep the bound on their bytes.
        self.partial_dropped = 0
        self.throttle = Throttle(logger)

    def fit_descriptors(self) -> None:
        """Make room for the connections under ``RLIMIT_NOFILE``.

        Raises the soft limit as far as needed and allowed; if the
        connections still do not fit beside the reserve and what is open
        already, lowers :attr:`limit` and logs a warning that says how to
        fix it.
        """
        try:
            import resource
        except ImportError:  # pragma: no cover - not on POSIX
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        used = _open_descriptors()
        wanted = self.max_connections + self.reserve + used
        if soft != resource.RLIM_INFINITY and soft < wanted:
            target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            with contextlib.suppress(OSError, ValueError):  # not allowed
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            return
        self.descriptor_ceiling = soft - self.reserve
        room = max(soft - self.reserve - used, 0)
        if room < self.max_connections:
            self.limit = room
            logger.warning(
                'only %d stream connections fit in the file descriptor limit '
                '(RLIMIT_NOFILE %d, %d kept in reserve, %d open); %d were '
                'asked for: raise the limit (ulimit -n, LimitNOFILE=) or '
                'lower --max-connections',
                room, soft, self.reserve, used, self.max_connections,
            )

    def admit(self, fd: int, where: str) -> bool:
        """Take a new connection in, or refuse it (counted, logged).

        :param fd: the accepted socket's descriptor number
        :param where: the listener, for the log
        :returns: whether the connection may be served
        """
        ceiling = self.descriptor_ceiling
        if self.open < self.limit and (ceiling is None or fd < ceiling):
            self.open += 1
            return True
        self.refused += 1
        self.throttle.warning(
            'refused',
            'stream listener %s: refused a connection, %d of %d open%s '
            '(%d refused so far)',
            where, self.open, self.limit,
            '' if ceiling is None or fd < ceiling
            else '; the file descriptors kept in reserve are in use',
            self.refused,
        )
        return False

    def release(self) -> None:
        """A connection that was admitted has ended."""
        self.open -= 1

    def hold_partial(self, before: int, after: int) -> bool:
        """Let a connection's partial line grow from `before` to `after` bytes.

        :returns: ``False`` (and nothing changed) if that would exceed the
            bound on all partial lines
        """
        grown = self.partial_bytes + after - before
        if after > before and grown > self.max_partial_bytes:
            self.partial_dropped += 1
            self.throttle.warning(
                'partial',
                'stream connections hold %d bytes of unfinished lines, the '
                'most allowed: an unfinished line was counted as bad '
                '(%d so far)',
                self.partial_bytes, self.partial_dropped,
            )
            return False
        self.partial_bytes = grown
        return True


#: Errors of accept() that mean the process or system ran out of
#: descriptors or memory: retrying at once fails the same way.
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

_LoopHandler = typing.Callable[
    [asyncio.AbstractEventLoop, dict[str, typing.Any]], object
]


class AcceptErrors:
    """Log the event loop's accept failures at most once per ten seconds.

    When descriptors run out, asyncio and Tornado report every failed
    accept with a traceback (thousands a second); while installed, this
    exception handler of the loop turns those into one counted warning per
    interval and hands everything else to the handler it replaced.
    """

    def __init__(self) -> None:
        #: Accept failures seen so far.
        self.count = 0
        self._throttle = Throttle(logger)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: _LoopHandler | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Become `loop`'s exception handler."""
        self._loop = loop
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(self._handle)

    def uninstall(self) -> None:
        """Give the loop its previous handler back."""
        loop, self._loop = self._loop, None
        if loop is not None and loop.get_exception_handler() == self._handle:
            loop.set_exception_handler(self._previous)

    def _handle(
        self, loop: asyncio.AbstractEventLoop, context: dict[str, typing.Any]
    ) -> None:
        exc = context.get('exception')
        if isinstance(exc, OSError) and exc.errno in _EXHAUSTED:
            self.count += 1
            self._throttle.warning(
                'accept',
                'cannot accept connections: %s (%d failures so far); raise '
                'the file descriptor limit or lower --max-connections',
                exc.strerror or exc, self.count,
            )
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)
