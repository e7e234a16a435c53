"""The admin console (etsy statsd's management interface): a sans-I/O core and a TCP server.

:class:`Console` turns one command line into its reply and touches no
socket; :class:`ConsoleSession` frames a connection's bytes into lines
with a length bound; :class:`AdminServer` is the thin asyncio layer that
moves bytes between them and the clients.  Replies are written as the
reference writes them, so scripts written for it keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import re
import time
import typing
from collections.abc import Callable, Sequence

from sprockets_statsd._throttle import Throttle
from sprockets_statsd.server._graphiteown import GraphiteStats
from sprockets_statsd.server._inspect import inspect_object
from sprockets_statsd.server._jsnumber import format_js_number
from sprockets_statsd.server._lines import LineFramer
from sprockets_statsd.server.aggregator import Aggregator, MetricKind
from sprockets_statsd.server.binding import ListeningSockets, format_address
from sprockets_statsd.server.config import DEFAULT_ADMIN_HOST, DEFAULT_ADMIN_PORT
from sprockets_statsd.server.status import HEALTH_DOWN, HEALTH_UP, ServerStatus

__all__ = [
    'DEFAULT_ADMIN_HOST',
    'DEFAULT_ADMIN_PORT',
    'HELP',
    'MAX_CONNECTIONS',
    'MAX_LINE_LENGTH',
    'AdminServer',
    'Console',
    'ConsoleSession',
    'config_lines',
    'looks_like_http',
]

logger = logging.getLogger(__name__)

#: Longest command line, in bytes: room for long ``del*`` lists, small
#: enough that a client cannot pin much memory with a line that never ends.
MAX_LINE_LENGTH = 16 * 1024

#: Console connections served at once; more are told so and closed.
MAX_CONNECTIONS = 64

#: Seconds a client may stay silent, or take to read a reply, before its
#: connection is closed: a stuck client must not hold a slot for ever.
IDLE_TIMEOUT = 600.0

HELP = (
    'Commands: stats, counters, timers, gauges, sets, delcounters, deltimers, '
    'delgauges, delsets, health, config, quit\n\n'
)

_END = 'END\n\n'
# Stands in for an over-long line: no command has this name.
_TOO_LONG = b'line-too-long'
_DELETE: dict[str, MetricKind] = {
    'delcounters': 'counters',
    'deltimers': 'timers',
    'delgauges': 'gauges',
    'delsets': 'sets',
}


def _config_value(value: object) -> str:
    """A setting as the reference's ``config`` prints a scalar or array."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if value is None:
        return 'null'
    if isinstance(value, (int, float)):
        return format_js_number(value)
    if isinstance(value, tuple):
        if len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int):
            return format_address(value)  # an address: host:port
        if len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], tuple):
            return f'{value[0]}={_config_value(value[1])}'  # a histogram
        return ','.join(_config_value(v) for v in value)
    return str(value)


def config_lines(config: object) -> list[str]:
    """The ``config`` reply's lines for a settings dataclass.

    Like the reference: ``name: value`` per setting and ``name > sub:
    value`` one level down (a nested dataclass, or the items of a list).

    :param config: a dataclass instance such as :class:`.ServerConfig`
    """
    lines: list[str] = []
    for field in dataclasses.fields(typing.cast(typing.Any, config)):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            lines.extend(
                f'{field.name} > {sub.name}: {_config_value(getattr(value, sub.name))}'
                for sub in dataclasses.fields(value)
            )
        elif isinstance(value, tuple) and value and isinstance(value[0], tuple):
            lines.extend(
                f'{field.name} > {i}: {_config_value(item)}' for i, item in enumerate(value)
            )
        else:
            lines.append(f'{field.name}: {_config_value(value)}')
    return lines


class Console:
    """The console's commands, as pure functions of the server's state.

    :param aggregator: the live aggregator (dumped and pruned)
    :param status: health, uptime, message statistics
    :param config: the settings the ``config`` command prints
    :param backends: ``(group, stats)`` of each sink for ``stats``
    :param clock: the wall clock, in seconds
    """

    def __init__(
        self,
        aggregator: Aggregator,
        status: ServerStatus,
        *,
        config: object = None,
        backends: Callable[[], Sequence[tuple[str, GraphiteStats]]] = list,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.aggregator = aggregator
        self.status = status
        self._config = config_lines(config) if config is not None else []
        self._backends = backends
        self._clock = clock
        prefix = aggregator.config.prefix_stats
        self._bad_key = f'{prefix}.bad_lines_seen'
        self._metrics_key = f'{prefix}.metrics_received'

    def execute(self, line: str) -> tuple[str, bool]:
        """Run one command line.

        :param line: the command and its arguments, separated by spaces
        :returns: the reply, and whether to close the connection after it
        """
        words = line.split()
        command, args = (words[0], words[1:]) if words else ('', [])
        if command == 'help':
            return HELP, False
        if command == 'quit':
            return '', True
        if command == 'health':
            return self._health(args), False
        if command == 'stats':
            return self._stats(), False
        if command == 'config':
            return ''.join(f'{line}\n' for line in ['', *self._config]), False
        if command in ('counters', 'timers', 'gauges', 'sets'):
            return self._dump(command) + '\n' + _END, False
        kind = _DELETE.get(command)
        if kind is not None:
            return self._delete(kind, args), False
        return 'ERROR\n', False

    def _health(self, args: list[str]) -> str:
        if args:
            action = args[0].lower()
            if action in (HEALTH_UP, HEALTH_DOWN):
                if action != self.status.health:
                    logger.warning('admin console: health set to %s', action)
                self.status.health = action
        return f'health: {self.status.health}\n'

    def _stats(self) -> str:
        now = math.floor(self._clock())
        status = self.status
        counters = self.aggregator.current_counters()
        status.seen_now(counters.get(self._metrics_key, 0.0), now)
        bad = status.bad_lines_flushed + counters.get(self._bad_key, 0.0)
        lines = [
            f'uptime: {now - status.startup_time}',
            f'messages.last_msg_seen: {now - status.last_msg_seen}',
            f'messages.bad_lines_seen: {format_js_number(bad)}',
        ]
        for group, stats in self._backends():
            for name, value in (
                ('last_flush', stats.last_flush or 0),
                ('last_exception', stats.last_exception or 0),
                ('flush_time', stats.flush_time),
                ('flush_length', stats.flush_length),
            ):
                shown = now - value if name.startswith('last_') else value
                lines.append(f'{group}.{name}: {format_js_number(shown)}')
        return '\n'.join(lines) + '\n' + _END

    def _dump(self, kind: str) -> str:
        aggregator = self.aggregator
        if kind == 'counters':
            return inspect_object(aggregator.current_counters())
        if kind == 'timers':
            return inspect_object(aggregator.current_timers())
        if kind == 'gauges':
            return inspect_object(aggregator.current_gauges())
        return inspect_object(aggregator.current_sets())

    def _delete(self, kind: MetricKind, patterns: list[str]) -> str:
        out: list[str] = []
        for pattern in patterns:
            deleted = self.aggregator.delete(kind, pattern)
            if not deleted:
                out.append(f'metric {pattern} not found\n')
            out.extend(f'deleted: {name}\n' for name in deleted)
        if out:
            logger.info('admin console: %s %s', kind, ' '.join(patterns))
        return ''.join(out) + _END


# A request line (``POST / HTTP/1.1``, ``GET http://host/ HTTP/1.0``) or a
# header line (``Host: example``): what a browser sends first and after.
# No console command looks like either.
_HTTP_REQUEST = re.compile(
    r'(?:GET|HEAD|POST|PUT|DELETE|CONNECT|OPTIONS|TRACE|PATCH)\s+(?:/|\*|\w+://)'
    r'|[A-Za-z0-9-]+:',
    re.IGNORECASE,
)


def looks_like_http(line: str) -> bool:
    """Whether a console line is part of an HTTP request.

    A method followed by a path or URL, or a header (``Name:``) at the
    start of the line: the console closes such a connection without
    executing anything, as Redis does, so that a web page cannot make a
    browser send it commands (a cross-protocol request).

    :param line: one line as received
    """
    return _HTTP_REQUEST.match(line.lstrip()) is not None


class ConsoleSession:
    """One connection's line framing around a :class:`Console`.

    :param console: runs the commands
    :param max_line_length: a longer line answers ``ERROR`` and is skipped
    """

    def __init__(self, console: Console, max_line_length: int = MAX_LINE_LENGTH) -> None:
        self._console = console
        # An over-long line becomes one that no command has: it is answered
        # ERROR once, and the rest of it is skipped.
        self._framer = LineFramer(max_line_length, _TOO_LONG)
        #: Whether ``quit`` was received: nothing more is executed.
        self.closed = False
        #: Whether the connection was closed for speaking HTTP.
        self.refused_http = False

    def feed(self, data: bytes) -> bytes:
        """Take received bytes; return the replies of the complete lines.

        :param data: bytes as they arrived
        """
        lines = self._framer.feed(data).split(b'\n')
        if not lines[-1]:
            lines.pop()  # the empty piece after the last newline
        replies: list[str] = []
        for line in lines:
            if self.closed:
                break  # nothing after quit is executed
            replies.append(self._run(line))
        return ''.join(replies).encode()

    def end(self) -> bytes:
        """The connection ended: run a last line that had no newline."""
        line = self._framer.end()
        if self.closed or not line.strip():
            return b''
        return self._run(line).encode()

    def _run(self, line: bytes) -> str:
        text = line.decode('utf-8', 'replace')
        if looks_like_http(text):
            # A web page can make a browser send this: run nothing, hang up.
            self.closed = True
            self.refused_http = True
            return ''
        reply, close = self._console.execute(text)
        self.closed = close
        return reply


class AdminServer(ListeningSockets):
    """Serve the console over TCP.

    :param console: runs the commands of every connection
    :param max_connections: connections served at once
    :param idle_timeout: seconds a connection may stall
    """

    def __init__(
        self,
        console: Console,
        *,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.console = console
        self._max_connections = max_connections
        self._idle_timeout = idle_timeout
        super().__init__()
        self._servers: list[asyncio.Server] = []
        self._clients: set[asyncio.Task[None]] = set()
        self._throttle = Throttle(logger)

    async def start(self) -> None:
        """Accept connections on the running event loop."""
        for sock in self._sockets:
            self._servers.append(await asyncio.start_server(self._accept, sock=sock))

    async def stop(self) -> None:
        """Stop accepting and close every connection."""
        for server in self._servers:
            server.close()
        if not self._servers:
            for sock in self._sockets:
                sock.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.wait(self._clients)
        for server in self._servers:
            await server.wait_closed()
        self._servers = []

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            if len(self._clients) >= self._max_connections:
                writer.write(b'ERROR too many connections\n')
                return
            self._clients.add(task)
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.TimeoutError):
            pass  # the client went away or stalled: its business alone
        except Exception:
            logger.exception('admin console: a connection failed')
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = ConsoleSession(self.console)
        while not session.closed:
            data = await asyncio.wait_for(reader.read(65536), self._idle_timeout)
            reply = session.feed(data) if data else session.end()
            if reply:
                writer.write(reply)
                await asyncio.wait_for(writer.drain(), self._idle_timeout)
            if not data:
                return
        if session.refused_http:
            peer = writer.get_extra_info('peername')
            self._throttle.warning(
                'http',
                'admin console: closed a connection from %s that sent an '
                'HTTP request (a web page?); nothing was executed',
                format_address(peer) if peer else 'a client',
            )
