"""A fake carbon receiver and helpers that run the statsd server for tests.

:class:`FakeCarbon` is the TCP capture server of :mod:`tests.helpers`
reading Graphite plaintext lines; :func:`running_server` runs the server on
the test's event loop; :class:`ServerProcess` runs the command line in a
subprocess and learns the bound port from its startup line.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import re
import signal
import socket
import sys
import typing

import pytest

from sprockets_statsd.server.app import Server, ServerConfig
from sprockets_statsd.server.config import AggregatorConfig
from tests.helpers import DEFAULT_TIMEOUT, StatsdServer, wait_until

__all__ = [
    'DEFAULT_TIMEOUT',
    'FakeCarbon',
    'Point',
    'ServerProcess',
    'SteppingClock',
    'free_ports',
    'parse_points',
    'running_server',
    'send_tcp',
    'send_udp',
    'wait_until',
]


@dataclasses.dataclass(frozen=True)
class Point:
    """One Graphite plaintext line: ``name value timestamp``."""

    name: str
    value: float
    timestamp: int


def parse_points(lines: typing.Iterable[bytes]) -> list[Point]:
    """Graphite plaintext lines (without newlines), parsed."""
    parsed = []
    for line in lines:
        name, value, timestamp = line.decode().split(' ')
        parsed.append(Point(name, float(value), int(timestamp)))
    return parsed


class FakeCarbon(StatsdServer):
    """Captures Graphite plaintext lines on a TCP port of 127.0.0.1 (or ::1).

    :param host: the loopback address to bind
    """

    def __init__(self, host: str = '127.0.0.1') -> None:
        super().__init__('tcp', host)

    @property
    def points(self) -> list[Point]:
        """Every line received so far, parsed."""
        return parse_points(self.lines)

    def values(self, name: str) -> list[float]:
        """The values received for `name`, in order."""
        return [p.value for p in self.points if p.name == name]

    def timestamps(self, name: str = 'statsd.numStats') -> list[int]:
        """The timestamps of `name`: one per flush for ``statsd.numStats``."""
        return [p.timestamp for p in self.points if p.name == name]

    async def wait_for(
        self,
        predicate: typing.Callable[[FakeCarbon], bool],
        what: str,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Wait until `predicate(self)` holds; fail with `what` otherwise."""
        await wait_until(lambda: predicate(self), timeout, what)

    async def wait_for_value(
        self, name: str, value: float, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Wait until some line gave `name` the value `value`."""
        await self.wait_for(
            lambda c: value in c.values(name),
            f'{name} = {value} (got {self.values(name)})',
            timeout,
        )

    async def wait_for_flushes(
        self, count: int, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Wait until `count` flushes (``statsd.numStats`` lines) arrived."""
        await self.wait_for(
            lambda c: len(c.timestamps()) >= count,
            f'{count} flushes (got {len(self.timestamps())})',
            timeout,
        )


class SteppingClock:
    """A wall clock that moves `step` seconds further at every reading.

    Given to the server, it makes every flush's timestamp distinct even with
    sub-second flush intervals, so that tests can check none is missing or
    repeated.
    """

    def __init__(self, start: int = 1_700_000_000, step: int = 10) -> None:
        self.start = start
        self.step = step
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        return float(self.start + self.step * self.readings)


@contextlib.asynccontextmanager
async def running_server(
    *,
    sinks: typing.Sequence[tuple[str, int]] = (),
    binds: typing.Sequence[tuple[str, int]] = (('127.0.0.1', 0),),
    flush_interval: float = 0.2,
    stdout: typing.BinaryIO | None = None,
    wall_clock: typing.Callable[[], float] | None = None,
    aggregator: typing.Mapping[str, typing.Any] | None = None,
    **settings: typing.Any,
) -> typing.AsyncIterator[Server]:
    """Run the server on the current event loop; stop it on exit.

    :param sinks: Graphite receivers; with none, flushes go to `stdout`
        (a throw-away buffer by default, not the test's real stdout)
    :param binds: addresses for UDP and TCP (port 0: a free one)
    :param flush_interval: seconds between flushes
    :param stdout: where the default sink writes
    :param wall_clock: gives the flush timestamps
    :param aggregator: further :class:`AggregatorConfig` fields
    :param settings: further :class:`ServerConfig` fields
    """
    config = ServerConfig(
        aggregator=AggregatorConfig(
            flush_interval=flush_interval, **(aggregator or {})
        ),
        binds=tuple(binds),
        sinks=tuple(sinks),
        **settings,
    )
    extra: dict[str, typing.Any] = {}
    if wall_clock is not None:
        extra['wall_clock'] = wall_clock
    server = Server(config, stdout=stdout or io.BytesIO(), **extra)
    await asyncio.wait_for(server.start(), DEFAULT_TIMEOUT)
    try:
        yield server
    finally:
        await asyncio.wait_for(server.stop(), DEFAULT_TIMEOUT)


def free_ports(count: int = 1) -> list[int]:
    """Distinct loopback TCP ports with nothing listening (a moment ago)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(('127.0.0.1', 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


async def wait_for_listener(
    process: asyncio.subprocess.Process,
    port: int,
    what: str,
    output: typing.Callable[[], str],
    timeout: float,
    poll: float = 0.05,
) -> None:
    """Wait until 127.0.0.1:`port` accepts a connection, failing the test
    (with the program's `output`) if `process` exits or `timeout` passes."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if process.returncode is not None:
            pytest.fail(f'{what} exited with {process.returncode}:\n{output()}')
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection('127.0.0.1', port), 1.0)
        except (OSError, asyncio.TimeoutError):
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f'{what} did not listen within {timeout} s:\n{output()}')
            await asyncio.sleep(poll)
            continue
        writer.close()
        await writer.wait_closed()
        return


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ':' in host else socket.AF_INET


def send_udp(address: tuple[typing.Any, ...], *payloads: bytes) -> None:
    """Send each payload as one datagram to `address` (host, port)."""
    host, port = address[0], address[1]
    with socket.socket(_family(host), socket.SOCK_DGRAM) as sock:
        for payload in payloads:
            sock.sendto(payload, (host, port))


async def send_tcp(address: typing.Any, *chunks: bytes) -> None:
    """Connect to `address` ((host, port) or a Unix path), write, close."""
    if isinstance(address, str):
        connect = asyncio.open_unix_connection(address)
    else:
        connect = asyncio.open_connection(address[0], address[1])
    _, writer = await asyncio.wait_for(connect, DEFAULT_TIMEOUT)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), DEFAULT_TIMEOUT)
    finally:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), DEFAULT_TIMEOUT)


_LISTENING = re.compile(r'listening on udp (?:\[([^\]]+)\]|([^:]+)):(\d+)')


class ServerProcess:
    """``python -m sprockets_statsd.server`` in a subprocess.

    :param args: command-line arguments
    :param env: extra environment variables
    :param stdout: where its standard output goes (default: a pipe that
        :meth:`stop` reads)
    :param python: the interpreter (default: the one running the tests)
    :param cwd: the working directory (default: the current one)
    :param preexec_fn: run in the child before the server starts (to lower
        a resource limit, say)

    :meth:`start` waits for the startup line on standard error and reads the
    first UDP address from it into :attr:`host` and :attr:`port`.
    """

    def __init__(
        self,
        *args: str,
        env: typing.Mapping[str, str] | None = None,
        stdout: int = asyncio.subprocess.PIPE,
        python: str = sys.executable,
        cwd: str | None = None,
        preexec_fn: typing.Callable[[], None] | None = None,
    ) -> None:
        self.args = args
        self.stdout = stdout
        self.preexec_fn = preexec_fn
        self.python = python
        self.cwd = cwd
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith('STATSD_')
        }
        self.env.update(env or {})
        self.process: asyncio.subprocess.Process | None = None
        self.stderr: list[str] = []
        self.host = ''
        self.port = 0

    async def start(self) -> ServerProcess:
        """Start the process and wait until it listens."""
        self.process = await asyncio.create_subprocess_exec(
            self.python, '-m', 'sprockets_statsd.server', *self.args,
            stdout=self.stdout, stderr=asyncio.subprocess.PIPE,
            env=self.env, cwd=self.cwd, preexec_fn=self.preexec_fn,
        )
        assert self.process.stderr is not None
        while True:
            raw = await asyncio.wait_for(
                self.process.stderr.readline(), DEFAULT_TIMEOUT
            )
            if not raw:
                await asyncio.wait_for(self.process.wait(), DEFAULT_TIMEOUT)
                raise AssertionError(
                    f'server exited ({self.process.returncode}): {self.stderr}'
                )
            line = raw.decode()
            self.stderr.append(line)
            match = _LISTENING.search(line)
            if match:
                self.host = match[1] or match[2]
                self.port = int(match[3])
                return self

    def endpoint(self, what: str) -> str:
        """``host:port`` of the ``load sink`` or ``admin console`` (the
        first one), from the startup line."""
        pattern = {'load sink': r'load sink http://([^/\s"]+)/',
                   'admin console': r'admin console on ([^,;\s"]+)'}[what]
        found = re.search(pattern, ''.join(self.stderr))
        assert found, f'no {what} in {self.stderr}'
        return found[1]

    @property
    def address(self) -> tuple[str, int]:
        """Where to send metrics (the wildcard address becomes loopback)."""
        host = {'::': '::1', '0.0.0.0': '127.0.0.1'}.get(self.host, self.host)
        return host, self.port

    async def stop(
        self, signum: int = signal.SIGTERM
    ) -> tuple[int, bytes, str]:
        """Send `signum`, wait for the exit; return status, stdout, stderr."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signum)
        stdout, stderr = await asyncio.wait_for(
            self.process.communicate(), DEFAULT_TIMEOUT
        )
        self.stderr.append(stderr.decode())
        assert self.process.returncode is not None
        return self.process.returncode, stdout or b'', ''.join(self.stderr)

    async def __aenter__(self) -> ServerProcess:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await asyncio.wait_for(self.process.communicate(), DEFAULT_TIMEOUT)
