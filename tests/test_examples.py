"""End to end: the documented examples run as programs against a loopback statsd server."""

from __future__ import annotations

import asyncio
import os
import pathlib
import re
import signal
import sys

import pytest
from tornado import httpclient

from tests.helpers import StatsdServer

EXAMPLES = pathlib.Path(__file__).parents[1] / 'docs' / 'examples'
TIMEOUT = 30.0


async def listening_port(stream: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read the program's log until it says where it listens; return the port and the log."""
    output = b''
    while True:
        line = await stream.readline()
        if not line:
            raise AssertionError(f'the example exited before listening:\n{output.decode()}')
        output += line
        found = re.search(rb'listening on http://127\.0\.0\.1:(\d+)/', line)
        if found is not None:
            return int(found.group(1)), output


@pytest.mark.parametrize('signo', [signal.SIGINT, signal.SIGTERM])
async def test_tornado_app_example(signo: signal.Signals) -> None:
    """tornado_app.py serves a request, then flushes its metrics and exits 0 on a signal."""
    async with StatsdServer('tcp') as statsd:
        environ = {name: value for name, value in os.environ.items()
                   if not name.startswith('STATSD_')}
        environ.update(STATSD_HOST=statsd.host, STATSD_PORT=str(statsd.port), PORT='0',
                       ENVIRONMENT='test')
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLES / 'tornado_app.py'), env=environ,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            assert process.stderr is not None
            port, log = await asyncio.wait_for(listening_port(process.stderr), TIMEOUT)

            client = httpclient.AsyncHTTPClient(force_instance=True)
            try:
                response = await asyncio.wait_for(
                    client.fetch(f'http://127.0.0.1:{port}/'), TIMEOUT)
            finally:
                client.close()
            assert response.code == 204

            process.send_signal(signo)
            log += await asyncio.wait_for(process.stderr.read(), TIMEOUT)
            assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0, log.decode()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        lines = await statsd.wait_for_lines(3)

    head = b'applications.example.test.'
    assert head + b'counters.greetings:1|c' in lines
    timers = {line.partition(b':')[0]: line.partition(b':')[2] for line in lines
              if line.endswith(b'|ms')}
    assert set(timers) == {head + b'timers.some-operation',
                           head + b'timers.MyHandler.GET.204'}
    for value in timers.values():
        # The handler sleeps 50 ms: the values are milliseconds.
        assert 40 <= float(value.removesuffix(b'|ms')) < TIMEOUT * 1000
    assert b'stopping' in log
