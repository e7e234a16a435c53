"""The server against a real carbon-cache, read back from its whisper files."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import sys
import time
import typing

import pytest
import whisper

from tests.server.helpers import free_ports, running_server, send_udp, wait_until

CARBON_START_TIMEOUT = 30.0
WRITE_TIMEOUT = 20.0

CARBON_CONF = """\
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
LOG_CREATES = True
WHISPER_AUTOFLUSH = True
"""

# One point per second for an hour: every flush is its own point.
STORAGE_SCHEMAS = """\
[everything]
pattern = .*
retentions = 1s:1h
"""


class Carbon:
    """carbon-cache in a subprocess with its whole tree under `root`."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.line_port, pickle, query = free_ports(3)
        conf = root / 'conf'
        conf.mkdir()
        (root / 'storage').mkdir()
        (conf / 'carbon.conf').write_text(CARBON_CONF.format(
            root=root, line=self.line_port, pickle=pickle, query=query))
        (conf / 'storage-schemas.conf').write_text(STORAGE_SCHEMAS)
        self.log = root / 'carbon.log'
        self._log_file = self.log.open('wb')
        self.process: asyncio.subprocess.Process | None = None

    def output(self) -> str:
        return self.log.read_text(errors='replace') if self.log.exists() else ''

    async def start(self) -> None:
        script = os.path.join(os.path.dirname(sys.executable), 'carbon-cache.py')
        env = dict(os.environ, GRAPHITE_ROOT=str(self.root),
                   GRAPHITE_CONF_DIR=str(self.root / 'conf'),
                   GRAPHITE_STORAGE_DIR=str(self.root / 'storage'))
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, script, f'--config={self.root}/conf/carbon.conf',
            '--nodaemon', '--logfile=-', f'--pidfile={self.root}/carbon.pid',
            'start', stdout=self._log_file, stderr=asyncio.subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + CARBON_START_TIMEOUT
        while True:
            if self.process.returncode is not None:
                pytest.fail(f'carbon-cache exited with {self.process.returncode}:\n'
                            f'{self.output()}')
            try:
                _, writer = await asyncio.open_connection('127.0.0.1', self.line_port)
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f'carbon-cache did not listen within '
                                f'{CARBON_START_TIMEOUT} s:\n{self.output()}')
                await asyncio.sleep(0.1)
                continue
            writer.close()
            await writer.wait_closed()
            return

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except asyncio.TimeoutError:
                self.process.kill()
                await asyncio.wait_for(self.process.wait(), 10)
        self._log_file.close()

    def values(self, name: str) -> list[float]:
        """The stored, non-empty values of `name` over the last ten minutes."""
        path = self.root / 'storage' / 'whisper' / (name.replace('.', '/') + '.wsp')
        if not path.exists():
            return []
        fetched = whisper.fetch(str(path), time.time() - 600)
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


@contextlib.asynccontextmanager
async def carbon_cache(root: pathlib.Path) -> typing.AsyncIterator[Carbon]:
    carbon = Carbon(root)
    try:
        await carbon.start()
        yield carbon
    finally:
        await carbon.stop()


@pytest.mark.slow
async def test_flushes_land_in_whisper(tmp_path: pathlib.Path) -> None:
    """Counters, timers and gauges sent to the server end up in carbon's
    whisper files, from periodic flushes and from the final flush on stop."""
    async with carbon_cache(tmp_path) as carbon:
        sink = ('127.0.0.1', carbon.line_port)
        async with running_server(sinks=[sink], flush_interval=1.0) as server:
            send_udp(server.udp_addresses[0],
                     b'carbon_test.hits:3|c\ncarbon_test.hits:4|c\n'
                     b'carbon_test.rt:100|ms\ncarbon_test.rt:200|ms\n'
                     b'carbon_test.temp:21.5|g')
            await carbon.wait_for_value('stats_counts.carbon_test.hits', 7)
            await carbon.wait_for_value('stats.timers.carbon_test.rt.upper', 200)
            await carbon.wait_for_value('stats.timers.carbon_test.rt.mean', 150)
            await carbon.wait_for_value('stats.gauges.carbon_test.temp', 21.5)
        # No periodic flush within the hour: only the final one delivers.
        async with running_server(sinks=[sink], flush_interval=3600) as server:
            send_udp(server.udp_addresses[0], b'carbon_test.final:-4|g')
        await carbon.wait_for_value('stats.gauges.carbon_test.final', -4)
