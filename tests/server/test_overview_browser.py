"""The overview page in a real headless Chromium: it renders and shows live data."""

from __future__ import annotations

import asyncio
import contextlib
import math
import pathlib
import shutil
import struct
import tempfile
import typing

import pytest

from sprockets_statsd.server.app import Server
from tests.server.helpers import DEFAULT_TIMEOUT, running_server, send_udp, wait_until

#: Where the screenshot is kept for people to look at (git-ignored).
ARTIFACTS = pathlib.Path(__file__).resolve().parents[2] / 'test-artifacts'

#: Chromium can take a while to start on a loaded machine.
BROWSER_TIMEOUT = 90.0

_FLAGS = (
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--window-size=1200,800', '--virtual-time-budget=2000',
)


def chromium() -> str:
    """The browser's path; fail (never skip) when it is missing."""
    path = shutil.which('chromium') or shutil.which('chromium-browser')
    if path is None:
        pytest.fail(
            'chromium is not installed: the overview page is tested in a real '
            'browser; install the Debian package with '
            '`apt-get install -y chromium`'
        )
    return path


async def browse(*args: str) -> bytes:
    """Run headless Chromium with a fresh profile; return its stdout."""
    with tempfile.TemporaryDirectory(prefix='chromium-') as profile:
        process = await asyncio.create_subprocess_exec(
            chromium(), *_FLAGS, f'--user-data-dir={profile}', *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), BROWSER_TIMEOUT)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 0, stderr.decode(errors='replace')[-2000:]
    return stdout


async def feed(server: Server) -> None:
    """Send a little of every metric type, ten times a second, for ever."""
    address = server.udp_addresses[0]
    for tick in range(10_000):
        wave = 50 + 40 * math.sin(tick / 5)
        send_udp(address, b'\n'.join([
            b'browser.visits:%d|c' % (1 + tick % 7),
            b'browser.render:%.1f|ms' % wave,
            b'browser.render:%.1f|ms' % (wave / 2),
            b'browser.queue_depth:%d|g' % (tick % 13),
            b'browser.users:user%d|s' % (tick % 9),
            b'api.requests:1|c|#env:prod',
        ]))
        await asyncio.sleep(0.1)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
    assert data[12:16] == b'IHDR'
    return typing.cast(tuple[int, int], struct.unpack('>II', data[16:24]))


async def test_overview_renders_in_chromium_with_a_metric_sent_over_udp() -> None:
    """Headless Chromium loads the page, its DOM holds the metrics sent over
    UDP with an SVG sparkline each, and a screenshot is kept as an artefact."""
    async with running_server(
        load_sinks=(('127.0.0.1', 0),), default_admin=None,
        flush_interval=0.1, frame_length=0.5,
    ) as server:
        sender = asyncio.get_running_loop().create_task(feed(server))
        try:
            frames = server.frames
            assert frames is not None
            # Several frames with data, so that the sparklines are lines.
            await wait_until(lambda: len(frames.frames()) >= 5, DEFAULT_TIMEOUT, '5 frames')
            url = f'http://127.0.0.1:{server.http_addresses[0][1]}/'
            dom = (await browse('--dump-dom', url)).decode()
            ARTIFACTS.mkdir(exist_ok=True)
            screenshot = ARTIFACTS / 'overview.png'
            with contextlib.suppress(FileNotFoundError):
                screenshot.unlink()
            await browse(f'--screenshot={screenshot}', url + '?filter=browser')
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
    assert '<h1>statsd overview</h1>' in dom
    assert '<td class="name">browser.visits</td>' in dom
    assert '<td class="name">api.requests;env=prod</td>' in dom
    assert 'data-kind="timer"' in dom
    assert dom.count('<svg') >= 6
    assert '<polyline' in dom
    assert png_size(screenshot.read_bytes()) == (1200, 800)
    assert screenshot.stat().st_size > 10_000  # more than a blank page
