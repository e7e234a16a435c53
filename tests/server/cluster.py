"""The engines statsd operators run around their servers, for real.

:class:`StatsdProxy` runs etsy statsd's ``proxy.js`` (installed by
``scripts/test`` with ``npm ci`` in ``bench/etsy``) with a generated
configuration; :func:`proxy_ring` asks the proxy's own hash ring library
where it puts each name; :class:`CarbonCRelay` runs Debian's
``carbon-c-relay`` with a consistent-hash cluster.  Each runs in the
foreground on loopback ports picked for it, logs to a file under its
directory, and is shown in a failure's message.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import shutil
import signal
import socket
import subprocess
import time
import typing

import pytest

from tests.server.helpers import free_ports, wait_for_listener

__all__ = [
    'ETSY_DIR',
    'CarbonCRelay',
    'StatsdProxy',
    'free_udp_port',
    'proxy_ring',
]

#: Where ``scripts/test`` installs etsy statsd (``npm ci`` in this folder).
ETSY_DIR = pathlib.Path(__file__).resolve().parents[2] / 'bench' / 'etsy'

#: Seconds a daemon may take to listen.
START_TIMEOUT = 20.0

#: Seconds to wait for a daemon to exit once told to.
STOP_TIMEOUT = 10.0


def free_udp_port() -> int:
    """A loopback UDP port with nothing bound to it (a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return int(sock.getsockname()[1])


def _statsd_package() -> pathlib.Path:
    package = ETSY_DIR / 'node_modules' / 'statsd'
    if not (package / 'proxy.js').exists() or shutil.which('node') is None:
        pytest.fail('etsy statsd is not installed: run scripts/test, or '
                    '`npm ci --omit=optional` in bench/etsy (needs node and npm)')
    return package


def proxy_ring(nodes: typing.Sequence[str], keys: typing.Sequence[str]) -> dict[str, str]:
    """The node the proxy's ring gives each key, as proxy.js builds it.

    :param nodes: the ring's ``host:port`` entries
    :param keys: metric names
    """
    script = (
        "const HashRing = require('hashring');"
        "const [nodes, keys] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "const weights = {}; for (const n of nodes) weights[n] = 100;"
        "const ring = new HashRing(weights, 'md5', {'max cache size': 10000, replicas: 0});"
        "const out = {}; for (const k of keys) out[k] = ring.get(k);"
        "process.stdout.write(JSON.stringify(out));"
    )
    _statsd_package()
    result = subprocess.run(
        ['node', '-e', script], input=json.dumps([list(nodes), list(keys)]),
        capture_output=True, text=True, timeout=30, check=True,
        cwd=ETSY_DIR,
    )
    placement: dict[str, str] = json.loads(result.stdout)
    return placement


class _Daemon:
    """A program in the foreground, its output in `root`/`name`.log."""

    def __init__(self, root: pathlib.Path, name: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.log = root / f'{name}.log'
        self.process: asyncio.subprocess.Process | None = None

    def output(self) -> str:
        """What the program printed so far."""
        return self.log.read_text(errors='replace') if self.log.exists() else ''

    async def _spawn(self, *argv: str) -> None:
        with self.log.open('wb') as log:
            self.process = await asyncio.create_subprocess_exec(
                *argv, stdout=log, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL, cwd=self.root,
            )

    async def _wait_for_tcp(self, port: int, what: str) -> None:
        """Wait until 127.0.0.1:`port` accepts, failing if the program exits."""
        assert self.process is not None
        await wait_for_listener(self.process, port, what, self.output, START_TIMEOUT)

    async def stop(self) -> None:
        """Terminate the program (kill it if it lingers)."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            process.kill()
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)


class StatsdProxy(_Daemon):
    """etsy statsd's ``proxy.js`` in front of statsd nodes.

    :param root: directory for its configuration and log
    :param nodes: ``(host, udp port, admin port)`` of each node
    :param check_interval: seconds between the proxy's health checks (also
        its health check timeout)
    """

    def __init__(self, root: pathlib.Path,
                 nodes: typing.Sequence[tuple[str, int, int]],
                 check_interval: float = 1.0) -> None:
        super().__init__(root, 'proxy')
        self.nodes = list(nodes)
        self.port = free_udp_port()
        (self.mgmt_port,) = free_ports(1)
        self.config = root / 'proxyConfig.js'
        entries = ',\n'.join(
            f"    {{host: '{host}', port: {port}, adminport: {admin}}}"
            for host, port, admin in self.nodes
        )
        # proxy.js binds `address` (not `host`, whatever its example says)
        # and takes port 0 for its default, so the ports are picked here.
        self.config.write_text(
            '{\n'
            f'  nodes: [\n{entries}\n  ],\n'
            "  server: './servers/udp',\n"
            "  address: '127.0.0.1',\n"
            f'  port: {self.port},\n'
            "  mgmt_address: '127.0.0.1',\n"
            f'  mgmt_port: {self.mgmt_port},\n'
            '  forkCount: 0,\n'
            f'  checkInterval: {round(check_interval * 1000)},\n'
            '  cacheSize: 10000\n'
            '}\n'
        )

    @property
    def ids(self) -> list[str]:
        """The ring's entries: ``host:port`` of each node."""
        return [f'{host}:{port}' for host, port, _ in self.nodes]

    async def start(self) -> None:
        """Start the proxy and wait until its management port answers."""
        package = _statsd_package()
        await self._spawn('node', str(package / 'proxy.js'), str(self.config))
        await self._wait_for_tcp(self.mgmt_port, 'proxy.js')

    async def ring_nodes(self) -> set[str]:
        """The nodes in the proxy's ring now (its ``status`` command)."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection('127.0.0.1', self.mgmt_port), 5.0)
        try:
            writer.write(b'status\n')
            reply = b''
            while b'nodes:' not in reply or not reply.endswith(b'\n'):
                data = await asyncio.wait_for(reader.read(4096), 5.0)
                if not data:
                    break
                reply += data
        finally:
            writer.close()
            await writer.wait_closed()
        for line in reply.decode().splitlines():
            if line.startswith('nodes:'):
                return set(line.split()[1:])
        raise AssertionError(f'proxy.js status said {reply!r}')

    async def wait_for_ring(self, expected: set[str], timeout: float) -> None:
        """Wait until the ring holds exactly `expected` (health checks run
        every check interval)."""
        deadline = time.monotonic() + timeout
        while (nodes := await self.ring_nodes()) != expected:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f'proxy ring is {sorted(nodes)}, not {sorted(expected)} after '
                    f'{timeout} s:\n{self.output()}')
            await asyncio.sleep(0.05)

    def send(self, *datagrams: bytes) -> None:
        """Send each datagram to the proxy's UDP port."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for datagram in datagrams:
                sock.sendto(datagram, ('127.0.0.1', self.port))


class CarbonCRelay(_Daemon):
    """Debian's ``carbon-c-relay`` spreading series over carbon-caches.

    :param root: directory for its configuration and log
    :param destinations: ``(line port, instance name)`` of each cache on
        127.0.0.1; the instance names place them on carbon's hash ring

    Submission mode (``-s``) keeps the relay's own statistics out of the
    caches.  Its listener is on a port picked here, never the packaged
    service's 2003.
    """

    def __init__(self, root: pathlib.Path,
                 destinations: typing.Sequence[tuple[int, str]]) -> None:
        super().__init__(root, 'carbon-c-relay')
        (self.port,) = free_ports(1)
        self.config = root / 'relay.conf'
        members = '\n'.join(f'        127.0.0.1:{port}={name}' for port, name in destinations)
        self.config.write_text(
            'cluster caches\n'
            '    carbon_ch replication 1\n'
            f'{members}\n'
            '    ;\n'
            'match * send to caches stop;\n'
            'listen\n'
            '    type linemode\n'
            f'        127.0.0.1:{self.port} proto tcp\n'
            '    ;\n'
        )

    async def start(self) -> None:
        """Start the relay and wait until it accepts connections."""
        program = shutil.which('carbon-c-relay')
        if program is None:
            pytest.fail('carbon-c-relay is not installed: run scripts/test, or '
                        'apt-get install carbon-c-relay')
        await self._spawn(program, '-f', str(self.config), '-s', '-H', 'topology')
        await self._wait_for_tcp(self.port, 'carbon-c-relay')
