"""A Graphite plaintext receiver whose faults the test controls.

:class:`FaultyCarbon` listens on a loopback port and treats each accepted
connection according to the next entry of its schedule (then its default
mode): ``read`` it like carbon, ``reset`` it without reading once data has
arrived (so what the kernel acknowledged is lost), ``stall`` (accept,
never read), or ``slow`` (read a little at a time).  ``refuse`` is the
receiver not listening at all: :meth:`stop` and :meth:`start` again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import typing

from tests.server.helpers import Point, parse_points

__all__ = ['TCP_CLOSE', 'FaultyCarbon', 'tcp_state']

Mode = typing.Literal['read', 'reset', 'stall', 'slow']

#: ``tcpi_state`` of a socket whose connection is gone (Linux).
TCP_CLOSE = 7
_TCP_ESTABLISHED = 1

#: Receive buffer of the listening socket (inherited by accepted ones), so
#: that a stalled connection fills up after little data.
_SMALL_BUFFER = 4096


def tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of `sock` (first byte of TCP_INFO)."""
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0])


class FaultyCarbon:
    """A controllable Graphite receiver on 127.0.0.1.

    :param schedule: the mode of the first connections, in order
    :param default: the mode of every later connection
    :param slow_bytes: bytes a ``slow`` connection reads per step
    :param slow_pause: seconds between the steps of a ``slow`` connection
    """

    def __init__(
        self,
        schedule: typing.Sequence[Mode] = (),
        default: Mode = 'read',
        *,
        slow_bytes: int = 4096,
        slow_pause: float = 0.005,
        small_buffer: bool = False,
    ) -> None:
        self.schedule = list(schedule)
        self.default = default
        self.slow_bytes = slow_bytes
        self.slow_pause = slow_pause
        self.small_buffer = small_buffer
        self.port = 0
        #: Complete lines read, in order of arrival, per connection.
        self.lines: list[bytes] = []
        #: The mode each accepted connection got, in order.
        self.modes: list[Mode] = []
        #: The receiver's end of each accepted connection (kept open).
        self.sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def points(self) -> list[Point]:
        """Every line read so far, parsed."""
        return parse_points(self.lines)

    def distinct(self, name: str) -> dict[int, float]:
        """`name`'s value per timestamp, as Graphite stores it (last wins)."""
        return {p.timestamp: p.value for p in self.points if p.name == name}

    async def start(self) -> FaultyCarbon:
        """Listen (on the same port as before after a stop)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.small_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SMALL_BUFFER)
        sock.bind(('127.0.0.1', self.port))
        sock.listen(16)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._spawn(self._accept(sock))
        return self

    async def stop(self) -> None:
        """Stop listening and drop every connection (the refuse fault)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for sock in self.sockets:
            sock.close()

    def _spawn(self, coroutine: typing.Coroutine[typing.Any, typing.Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            self.sockets.append(conn)
            mode = self.schedule.pop(0) if self.schedule else self.default
            self.modes.append(mode)
            if mode == 'reset':
                self._spawn(self._reset(conn))
            elif mode == 'read':
                self._spawn(self._read(conn, 65536, 0.0))
            elif mode == 'slow':
                self._spawn(self._read(conn, self.slow_bytes, self.slow_pause))
            # 'stall': accepted, never read.

    async def _readable(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_reader(conn, lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            loop.remove_reader(conn)

    async def _reset(self, conn: socket.socket) -> None:
        # Wait until data has arrived, then close without reading it: the
        # kernel answers with a reset and throws away what it acknowledged.
        await self._readable(conn)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        conn.close()

    async def _read(self, conn: socket.socket, size: int, pause: float) -> None:
        loop = asyncio.get_running_loop()
        partial = b''
        with contextlib.suppress(ConnectionError):
            while data := await loop.sock_recv(conn, size):
                partial += data
                *complete, partial = partial.split(b'\n')
                self.lines.extend(complete)
                if pause:
                    await asyncio.sleep(pause)

    async def __aenter__(self) -> FaultyCarbon:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
