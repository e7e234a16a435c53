"""Loopback statsd capture servers for the client tests.

``StatsdServer`` runs on the test's event loop (UDP, TCP or a Unix stream
socket, bound to port 0 or a temporary path); ``ThreadedStatsdServer`` runs
the same capture on a thread for tests of the blocking clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
import typing

__all__ = [
    'StatsdServer',
    'ThreadedStatsdServer',
    'UDPReceiver',
    'UnixDatagramReceiver',
    'wait_until',
]

DEFAULT_TIMEOUT = 10.0


async def wait_until(
    predicate: typing.Callable[[], bool], timeout: float = DEFAULT_TIMEOUT, what: str = ''
) -> None:
    """Poll `predicate` every few milliseconds until it is true or time is up."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f'timed out after {timeout}s waiting for {what or predicate}')
        await asyncio.sleep(0.005)


def _large_receive_buffer(sock: typing.Any) -> None:
    """Make bursts of datagrams fit in the kernel's buffer (root may force it)."""
    size = 16 * 1024 * 1024
    try:
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, 'SO_RCVBUFFORCE', 33), size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, server: StatsdServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: typing.Any) -> None:
        self.server.datagrams.append(data)
        self.server._add(data.split(b'\n'))


class StatsdServer:
    """Captures statsd lines sent to it over UDP, TCP or a Unix socket.

    :param protocol: ``'udp'``, ``'tcp'`` or ``'unix'``
    :param host: the loopback address to bind (``'127.0.0.1'`` or ``'::1'``)
    :param path: the socket path for ``'unix'``

    ``lines`` holds every complete line received, in order; ``datagrams``
    every UDP datagram as it arrived.  TCP and Unix connections are read to
    the end; :meth:`restart` closes them gracefully (half-close, then read
    until the client closes) so that nothing in flight is lost, and listens
    again on the same port.
    """

    def __init__(self, protocol: str = 'tcp', host: str = '127.0.0.1', path: str = '') -> None:
        self.protocol = protocol
        self.host = host
        self.port = 0
        self.path = path
        self.lines: list[bytes] = []
        self.datagrams: list[bytes] = []
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._readers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._changed = asyncio.Event()

    @property
    def address(self) -> str:
        """What to give a client as its host."""
        return f'unix:{self.path}' if self.protocol == 'unix' else self.host

    def _add(self, lines: typing.Iterable[bytes]) -> None:
        self.lines.extend(line for line in lines if line)
        self._changed.set()

    async def start(self) -> StatsdServer:
        """Bind and listen (on the same port as before after a restart)."""
        loop = asyncio.get_running_loop()
        if self.protocol == 'udp':
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self), local_addr=(self.host, self.port)
            )
            _large_receive_buffer(self._transport.get_extra_info('socket'))
            self.port = self._transport.get_extra_info('sockname')[1]
        elif self.protocol == 'unix':
            self._server = await asyncio.start_unix_server(self._read, self.path)
        else:
            self._server = await asyncio.start_server(self._read, self.host, self.port)
            self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._readers.add(task)
        self._writers.add(writer)
        self.connections += 1
        self._changed.set()
        partial = b''
        try:
            while data := await reader.read(65536):
                partial += data
                *complete, partial = partial.split(b'\n')
                self._add(complete)
        except ConnectionError:
            pass
        finally:
            self._readers.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def stop(self) -> None:
        """Stop listening and end every connection gracefully."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            with contextlib.suppress(OSError):
                writer.write_eof()
        if self._readers:
            await asyncio.wait_for(asyncio.gather(*self._readers), DEFAULT_TIMEOUT)
        if self.protocol == 'unix':
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def restart(self) -> None:
        """Stop gracefully, then listen again on the same address."""
        await self.stop()
        await self.start()

    async def wait_for_lines(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> list[bytes]:
        """Wait until at least `count` lines arrived; return all lines."""
        await wait_until(lambda: len(self.lines) >= count, timeout,
                         f'{count} lines (have {len(self.lines)})')
        return self.lines

    async def __aenter__(self) -> StatsdServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


class ThreadedStatsdServer:
    """The blocking twin of :class:`StatsdServer`, serving from a thread.

    :param protocol: ``'udp'``, ``'tcp'`` or ``'unix'``
    :param host: ``'127.0.0.1'`` or ``'::1'``
    :param path: the socket path for ``'unix'``

    Use it as a context manager.  ``lines``, ``datagrams`` and
    ``connections`` are updated under a lock; :meth:`wait_for_lines` blocks.
    """

    def __init__(self, protocol: str = 'udp', host: str = '127.0.0.1', path: str = '') -> None:
        self.protocol = protocol
        self.host = host
        self.path = path
        self.port = 0
        self.lines: list[bytes] = []
        self.datagrams: list[bytes] = []
        self.connections = 0
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        if protocol == 'unix':
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.bind(path)
        elif protocol == 'udp':
            self._sock = socket.socket(family, socket.SOCK_DGRAM)
            _large_receive_buffer(self._sock)
            self._sock.bind((host, 0))
        else:
            self._sock = socket.socket(family, socket.SOCK_STREAM)
            self._sock.bind((host, 0))
        if protocol != 'unix':
            self.port = self._sock.getsockname()[1]
        if protocol != 'udp':
            self._sock.listen(16)
        self._sock.settimeout(0.05)

    def _add(self, lines: typing.Iterable[bytes]) -> None:
        with self._lock:
            self.lines.extend(line for line in lines if line)
            self._lock.notify_all()

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            with self._lock:
                self.datagrams.append(data)
            self._add(data.split(b'\n'))

    def _serve_stream(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with self._lock:
                self.connections += 1
            thread = threading.Thread(target=self._read, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _read(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        partial = b''
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    if self._stop.is_set():
                        return
                    continue
                except OSError:
                    return
                if not data:
                    return
                partial += data
                *complete, partial = partial.split(b'\n')
                self._add(complete)

    def wait_for_lines(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> list[bytes]:
        """Block until at least `count` lines arrived; return a copy of all."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.lines) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f'timed out waiting for {count} lines, '
                                         f'have {len(self.lines)}: {self.lines[-5:]}')
                self._lock.wait(left)
            return list(self.lines)

    def __enter__(self) -> ThreadedStatsdServer:
        target = self._serve_udp if self.protocol == 'udp' else self._serve_stream
        thread = threading.Thread(target=target, daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self._sock.close()
        if self.protocol == 'unix':
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


class UDPReceiver:
    """A bound UDP socket that the test reads synchronously, datagram by datagram."""

    def __init__(self, host: str = '127.0.0.1') -> None:
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        # Room for every datagram a test sends before it reads them.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((host, 0))
        self.sock.settimeout(DEFAULT_TIMEOUT)
        self.port: int = self.sock.getsockname()[1]

    def datagram(self) -> bytes:
        """The next datagram (fails after DEFAULT_TIMEOUT seconds)."""
        return self.sock.recv(65536)

    def datagrams(self, lines: int) -> list[bytes]:
        """Datagrams until they hold `lines` lines in all."""
        received: list[bytes] = []
        while sum(d.count(b'\n') + 1 for d in received) < lines:
            received.append(self.datagram())
        return received

    def assert_quiet(self, client: typing.Any) -> None:
        """Assert that nothing is waiting: the next datagram is a fresh marker."""
        client.set('quiet.marker', 'end')
        datagram = self.datagram()
        # Prefix and tags may surround the name; anything else is a leftover.
        assert b'quiet.marker' in datagram, f'unexpected datagram {datagram!r}'
        assert b':end|s' in datagram, f'unexpected datagram {datagram!r}'

    def close(self) -> None:
        self.sock.close()


class UnixDatagramReceiver(UDPReceiver):
    """A Unix datagram socket, read like UDPReceiver.

    :param path: where to bind; by default in a fresh temporary directory,
        removed again by :meth:`close`
    :param rcvbuf: the receive buffer size (small to fill the queue quickly)
    """

    def __init__(self, path: str | None = None, rcvbuf: int = 8 << 20) -> None:
        self.directory = None if path is not None else tempfile.mkdtemp(prefix='statsd-dgram-')
        self.path = path if path is not None else os.path.join(self.directory or '', 'dsd.socket')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind(self.path)
        self.sock.settimeout(DEFAULT_TIMEOUT)
        self.port = 0

    def stop(self) -> None:
        """Close the socket and remove it from the file system (the server is gone)."""
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def close(self) -> None:
        self.stop()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
