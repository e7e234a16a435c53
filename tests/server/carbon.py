"""Real carbon daemons (PyPI ``carbon``) for integration tests.

:class:`CarbonCache` runs ``carbon-cache.py`` and reads back its whisper
files; :class:`CarbonRelay` runs ``carbon-relay.py`` in front of caches.
Each daemon runs in the foreground with its whole tree (configuration,
whisper files, pid file) under a temporary directory, on free loopback
ports, and logs to a file there, shown when a wait fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import sys
import time
import typing

import whisper  # type: ignore[import-untyped]

from tests.server.helpers import free_ports, wait_for_listener, wait_until

__all__ = [
    'START_TIMEOUT',
    'WRITE_TIMEOUT',
    'CarbonCache',
    'CarbonRelay',
    'carbon_cache',
    'carbon_relay',
]

#: Seconds a carbon daemon may take to listen (Twisted's import is slow).
START_TIMEOUT = 30.0

#: Seconds a point may take from the line receiver into a whisper file.
WRITE_TIMEOUT = 20.0

_CACHE_CONF = """\
[cache]
DATABASE = whisper
LOCAL_DATA_DIR = {root}/storage/whisper
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = 100000
MAX_CREATES_PER_MINUTE = 100000
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {line}
ENABLE_UDP_LISTENER = False
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = {pickle}
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = {query}
LOG_UPDATES = False
LOG_CREATES = False
LOG_LISTENER_CONN_SUCCESS = False
WHISPER_AUTOFLUSH = True
"""

_RELAY_CONF = """\
[relay]
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {line}
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = {pickle}
RELAY_METHOD = consistent-hashing
REPLICATION_FACTOR = 1
DIVERSE_REPLICAS = False
DESTINATIONS = {destinations}
DESTINATION_PROTOCOL = pickle
MAX_QUEUE_SIZE = 100000
LOG_LISTENER_CONN_SUCCESS = False
"""

# One point per second for an hour: every flush is its own point.
_STORAGE_SCHEMAS = """\
[everything]
pattern = .*
retentions = 1s:1h
"""


class _CarbonDaemon:
    """A carbon program in a subprocess with its whole tree under `root`."""

    program = ''

    def __init__(self, root: pathlib.Path, conf: str) -> None:
        self.root = root
        (root / 'conf').mkdir(parents=True)
        (root / 'storage').mkdir()
        (root / 'conf' / 'carbon.conf').write_text(conf)
        (root / 'conf' / 'storage-schemas.conf').write_text(_STORAGE_SCHEMAS)
        self.log = root / 'carbon.log'
        self._log_file = self.log.open('wb')
        self.process: asyncio.subprocess.Process | None = None

    @property
    def line_port(self) -> int:
        """The plaintext (line) receiver's port on 127.0.0.1."""
        raise NotImplementedError

    def output(self) -> str:
        """What the daemon logged so far."""
        return self.log.read_text(errors='replace') if self.log.exists() else ''

    async def start(self) -> None:
        """Start the daemon and wait until its line receiver accepts."""
        script = os.path.join(os.path.dirname(sys.executable), self.program)
        env = dict(os.environ, GRAPHITE_ROOT=str(self.root),
                   GRAPHITE_CONF_DIR=str(self.root / 'conf'),
                   GRAPHITE_STORAGE_DIR=str(self.root / 'storage'))
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, script, f'--config={self.root}/conf/carbon.conf',
            '--nodaemon', '--logfile=-', f'--pidfile={self.root}/carbon.pid',
            'start', stdout=self._log_file, stderr=asyncio.subprocess.STDOUT, env=env,
        )
        await wait_for_listener(self.process, self.line_port, self.program, self.output,
                                START_TIMEOUT, poll=0.1)

    async def stop(self) -> None:
        """Terminate the daemon (kill it if it lingers)."""
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except asyncio.TimeoutError:
                self.process.kill()
                await asyncio.wait_for(self.process.wait(), 10)
        self._log_file.close()


class CarbonCache(_CarbonDaemon):
    """``carbon-cache.py`` writing whisper files under `root`."""

    program = 'carbon-cache.py'

    def __init__(self, root: pathlib.Path) -> None:
        self._line, self.pickle_port, query = free_ports(3)
        super().__init__(root, _CACHE_CONF.format(
            root=root, line=self._line, pickle=self.pickle_port, query=query))
        self.whisper_dir = root / 'storage' / 'whisper'

    @property
    def line_port(self) -> int:
        return self._line

    def series(self) -> set[str]:
        """The names of every whisper file written so far."""
        return {
            '.'.join(path.relative_to(self.whisper_dir).with_suffix('').parts)
            for path in self.whisper_dir.rglob('*.wsp')
        }

    def values(self, name: str) -> list[float]:
        """The stored, non-empty values of `name` over the last ten minutes."""
        return self.stored(self.whisper_dir / (name.replace('.', '/') + '.wsp'))

    def stored(self, path: pathlib.Path) -> list[float]:
        """The stored, non-empty values of the whisper file at `path`."""
        if not path.exists():
            return []
        try:
            fetched = whisper.fetch(str(path), time.time() - 600)
        except whisper.CorruptWhisperFile:
            return []  # carbon is still writing the file's header: look again

        if fetched is None:
            return []
        return [v for v in fetched[1] if v is not None]

    async def wait_for_value(self, name: str, value: float) -> None:
        """Wait until whisper holds `value` for `name` (carbon writes lazily)."""
        try:
            await wait_until(lambda: value in self.values(name), WRITE_TIMEOUT,
                             f'{name} = {value}')
        except AssertionError as exc:
            raise AssertionError(
                f'{exc}; stored: {self.values(name)}\ncarbon said:\n{self.output()}'
            ) from None


class CarbonRelay(_CarbonDaemon):
    """``carbon-relay.py`` spreading series over caches by consistent hashing.

    :param destinations: ``(pickle port, instance name)`` of each cache on
        127.0.0.1; the instance names place the caches on the hash ring
    """

    program = 'carbon-relay.py'

    def __init__(self, root: pathlib.Path,
                 destinations: typing.Sequence[tuple[int, str]]) -> None:
        self._line, pickle = free_ports(2)
        self.destinations = list(destinations)
        super().__init__(root, _RELAY_CONF.format(
            line=self._line, pickle=pickle,
            destinations=', '.join(f'127.0.0.1:{port}:{name}' for port, name in destinations),
        ))

    @property
    def line_port(self) -> int:
        return self._line


@contextlib.asynccontextmanager
async def carbon_cache(root: pathlib.Path) -> typing.AsyncIterator[CarbonCache]:
    """Run a carbon-cache under `root` for the duration of the block."""
    carbon = CarbonCache(root)
    try:
        await carbon.start()
        yield carbon
    finally:
        await carbon.stop()


@contextlib.asynccontextmanager
async def carbon_relay(
    root: pathlib.Path, destinations: typing.Sequence[tuple[int, str]]
) -> typing.AsyncIterator[CarbonRelay]:
    """Run a carbon-relay under `root` for the duration of the block."""
    relay = CarbonRelay(root, destinations)
    try:
        await relay.start()
        yield relay
    finally:
        await relay.stop()
