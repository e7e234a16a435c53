"""A write-only TCP connection that can tell what the receiver acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
import typing
from collections.abc import Sequence

__all__ = ['Connection']

#: Linux's SIOCOUTQ (the same number as TIOCOUTQ): bytes of a TCP socket's
#: send queue the peer has not acknowledged yet.
_SIOCOUTQ: int | None = 0x5411 if sys.platform.startswith('linux') else None


class Connection(asyncio.Protocol):
    """A write-only client connection that honours flow control.

    :param on_eof: called when the receiver closes its side cleanly, while
        the socket can still be asked what it acknowledged
    :param on_lost: called when the connection is gone
    """

    def __init__(
        self,
        on_eof: typing.Callable[[Connection], None],
        on_lost: typing.Callable[[], None],
    ) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        #: Bytes the kernel has taken on this connection.
        self.written = 0
        self._on_eof = on_eof
        self._on_lost = on_lost
        self._drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)
        # Pause as soon as anything is buffered: a send counts as written
        # only once the kernel holds all of it, so that `written` is exact.
        self.transport.set_write_buffer_limits(high=0)

    def data_received(self, data: bytes) -> None:
        """Graphite's plaintext receiver never answers; ignore anything."""

    def eof_received(self) -> bool | None:
        self._on_eof(self)
        return None  # the peer is gone: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake(exc or ConnectionResetError('connection closed by peer'))
        self._on_lost()

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake(None)

    def _wake(self, exc: Exception | None) -> None:
        waiter, self._drained = self._drained, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    def acknowledged(self) -> int:
        """Bytes the receiver's kernel acknowledged (all written if unknown)."""
        unacked = 0
        sock = self.transport.get_extra_info('socket') if self.transport else None
        if _SIOCOUTQ is not None and sock is not None and sock.fileno() >= 0:
            import fcntl

            with contextlib.suppress(OSError):
                raw = fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b'\0' * 4)
                unacked = struct.unpack('i', raw)[0]
        return self.written - unacked

    async def send(self, chunks: Sequence[bytes]) -> None:
        """Write `chunks` and wait until the kernel has taken them."""
        for chunk in chunks:
            if self.lost or self.transport is None:
                raise ConnectionResetError('connection closed by peer')
            self.transport.write(chunk)
            if self._drained is not None:
                await self._drained
            self.written += len(chunk)
        if self.lost:
            raise ConnectionResetError('connection closed by peer')

    def abort(self) -> None:
        """Close at once with a reset: no descriptor or send queue lingers."""
        if self.transport is None:
            return
        sock = self.transport.get_extra_info('socket')
        if sock is not None and sock.fileno() >= 0:
            with contextlib.suppress(OSError):
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)
                )
        self.transport.abort()
