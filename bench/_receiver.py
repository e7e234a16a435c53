"""A loopback statsd line counter in its own process, and the handle that drives it.

Strategy: the counter must never be the bottleneck and must never lose
data silently, so it runs in a separate process (its own core and its own
GIL) with a receive buffer as large as the kernel allows, and it counts
lines with ``bytes.count`` (C speed) rather than parsing them.  A line is a
non-empty run of bytes ended by ``\\n`` on a stream, or by ``\\n`` or the end
of the datagram for UDP; empty lines are not counted, and a stream that
ends in the middle of a line reports that fragment as ``partial``.

The parent drives it over a :func:`multiprocessing.Pipe`:

* ``('arm', expected)`` resets the counters; the reply is ``('armed',)``.
* ``('finish', grace, deadline)`` means the sender is done: the counter
  carries on until it has seen `expected` lines, or no data arrived for
  `grace` seconds, or `deadline` seconds passed; the reply is
  ``('result', {...})`` with ``lines``, ``last`` (the
  :func:`time.monotonic` of the last data that completed a line, comparable
  across processes on Linux), ``partial``, ``datagrams``, ``bytes`` and
  ``connections``.
* ``('quit',)`` ends the process.

Every wait is bounded: an idle counter wakes at least once a second and
exits when its parent goes away.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import selectors
import shutil
import socket
import sys
import tempfile
import time
import typing
from multiprocessing.connection import Connection

__all__ = ['RECEIVE_BUFFER', 'Receiver', 'count_datagram_lines', 'count_stream_lines', 'serve']

#: Requested receive buffer (bytes).  At ~1 µs per metric a sender fills
#: 32 MiB of small datagrams in a few hundred milliseconds, which covers
#: any scheduling hiccup of the counting process.
RECEIVE_BUFFER = 32 * 1024 * 1024

# How long the counter goes on after a client is done and no more data
# arrives, and the longest it waits in all.  Loopback delivers within
# microseconds, so the grace only matters when lines were lost.
RECEIVE_GRACE = 0.5
RECEIVE_DEADLINE = 10.0

# Python does not export SO_RCVBUFFORCE (Linux: 33), which lets root go
# past net.core.rmem_max.
_SO_RCVBUFFORCE = getattr(socket, 'SO_RCVBUFFORCE', 33 if sys.platform == 'linux' else None)

# Datagrams read per wake-up before the control pipe is looked at again.
_DATAGRAMS_PER_WAKE = 4096
_CHUNK = 1024 * 1024


def count_datagram_lines(data: bytes) -> int:
    """Count the non-empty lines in one datagram."""
    if b'\n\n' not in data and not data.startswith(b'\n'):
        return data.count(b'\n') + (0 if data.endswith(b'\n') or not data else 1)
    return sum(1 for piece in data.split(b'\n') if piece)


def count_stream_lines(data: bytes, open_line: bool) -> tuple[int, bool]:
    """Count the non-empty lines that `data` completes on a stream.

    :param data: the next bytes of the stream
    :param open_line: whether the bytes before `data` ended inside a line
    :returns: the lines completed and whether `data` ends inside a line
    """
    newlines = data.count(b'\n')
    if not newlines:
        return 0, open_line or bool(data)
    ends_open = not data.endswith(b'\n')
    if b'\n\n' not in data:
        # Only the first newline can end an empty line: when nothing came
        # before it, neither in this chunk nor in the previous one.
        empty = 1 if data.startswith(b'\n') and not open_line else 0
        return newlines - empty, ends_open
    pieces = data.split(b'\n')
    lines = 1 if pieces[0] or open_line else 0
    lines += sum(1 for piece in pieces[1:-1] if piece)
    return lines, ends_open


def _buffer_size(sock: socket.socket) -> int:
    """Ask for a large receive buffer, forcing it past rmem_max as root."""
    force = _SO_RCVBUFFORCE
    if force is not None and hasattr(os, 'geteuid') and os.geteuid() == 0:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, force, RECEIVE_BUFFER)
            return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


class _Counter:
    """The counts of one armed run."""

    def __init__(self) -> None:
        self.expected = 0
        self.lines = 0
        self.partial = 0
        self.datagrams = 0
        self.bytes = 0
        self.connections = 0
        self.last = 0.0
        self.last_data = 0.0

    def result(self) -> dict[str, typing.Any]:
        return {
            'lines': self.lines,
            'last': self.last,
            'partial': self.partial,
            'datagrams': self.datagrams,
            'bytes': self.bytes,
            'connections': self.connections,
        }


def serve(kind: str, control: Connection) -> None:
    """Count lines arriving on a loopback socket until told to quit.

    :param kind: ``'udp'``, ``'tcp'`` or ``'unixgram'`` (a Unix datagram
        socket in a temporary directory)
    :param control: the child end of the pipe; the first message sent on it
        is ``('port', port, receive_buffer_bytes)``, where the port of a Unix
        socket is its path
    """
    directory = None
    if kind == 'unixgram':
        directory = tempfile.mkdtemp(prefix='bench-dgram-')
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        rcvbuf = _buffer_size(sock)
        address: typing.Any = os.path.join(directory, 'statsd.sock')
        sock.bind(address)
    else:
        family_type = socket.SOCK_DGRAM if kind == 'udp' else socket.SOCK_STREAM
        sock = socket.socket(socket.AF_INET, family_type)
        rcvbuf = _buffer_size(sock)  # accepted TCP sockets inherit it
        sock.bind(('127.0.0.1', 0))
        address = sock.getsockname()[1]
    if kind == 'tcp':
        sock.listen(16)
    sock.setblocking(False)
    control.send(('port', address, rcvbuf))
    try:
        _count(kind, control, sock)
    finally:
        sock.close()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def _count(kind: str, control: Connection, sock: socket.socket) -> None:
    """The counting loop of :func:`serve`."""

    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ, 'control')
    selector.register(sock, selectors.EVENT_READ, 'listen' if kind == 'tcp' else 'datagrams')
    streams: dict[socket.socket, bool] = {}  # connection -> ends inside a line
    counter = _Counter()
    finishing: tuple[float, float] | None = None  # (idle grace, hard deadline)
    monotonic = time.monotonic
    recv_buffer = bytearray(_CHUNK)

    while True:
        for key, _ in selector.select(0.02 if finishing else 1.0):
            role = key.data
            if role == 'control':
                try:
                    message = control.recv()
                except EOFError:  # the parent is gone
                    return
                if message[0] == 'quit':
                    return
                if message[0] == 'arm':
                    counter = _Counter()
                    counter.expected = message[1]
                    finishing = None
                    control.send(('armed',))
                elif message[0] == 'finish':
                    now = monotonic()
                    counter.last_data = max(counter.last_data, now)
                    finishing = (message[1], now + message[2])
            elif role == 'datagrams':
                for _ in range(_DATAGRAMS_PER_WAKE):
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        break
                    counter.datagrams += 1
                    counter.bytes += len(data)
                    lines = count_datagram_lines(data)
                    if lines:
                        counter.lines += lines
                        counter.last = counter.last_data = monotonic()
            elif role == 'listen':
                with contextlib.suppress(BlockingIOError):
                    connection, _ = sock.accept()
                    connection.setblocking(False)
                    streams[connection] = False
                    counter.connections += 1
                    selector.register(connection, selectors.EVENT_READ, 'stream')
            else:
                connection = key.fileobj
                assert isinstance(connection, socket.socket)
                try:
                    size = connection.recv_into(recv_buffer)
                except BlockingIOError:
                    continue
                except OSError:
                    size = 0
                if not size:
                    if streams.pop(connection):
                        counter.partial += 1
                    selector.unregister(connection)
                    connection.close()
                    continue
                counter.bytes += size
                lines, streams[connection] = count_stream_lines(
                    bytes(recv_buffer[:size]), streams[connection]
                )
                if lines:
                    counter.lines += lines
                    counter.last = counter.last_data = monotonic()
        if finishing is not None:
            now = monotonic()
            grace, deadline = finishing
            if (counter.lines >= counter.expected
                    or now - counter.last_data > grace or now > deadline):
                control.send(('result', counter.result()))
                finishing = None


class Receiver:
    """The parent's handle on a line counter running in its own process.

    :param kind: ``'udp'``, ``'tcp'`` or ``'unixgram'``; :attr:`port` is
        the socket's path for ``'unixgram'``
    """

    def __init__(self, kind: str) -> None:
        context = multiprocessing.get_context('spawn')
        self._control, child = context.Pipe()
        self.process = context.Process(
            target=serve, args=(kind, child), daemon=True
        )
        self.process.start()
        child.close()
        _, self.port, self.rcvbuf = self._reply('port', 30.0)

    def _reply(self, expected: str, timeout: float) -> tuple[typing.Any, ...]:
        if not self._control.poll(timeout):
            raise RuntimeError(f'receiver gave no {expected!r} within {timeout}s')
        message = self._control.recv()
        if message[0] != expected:
            raise RuntimeError(f'receiver sent {message!r}, expected {expected!r}')
        return typing.cast(tuple[typing.Any, ...], message)

    def arm(self, expected: int) -> None:
        """Reset the counters for a run that sends `expected` lines."""
        self._control.send(('arm', expected))
        self._reply('armed', 10.0)

    def finish(self) -> dict[str, typing.Any]:
        """Wait (bounded) until every line arrived or the data stopped."""
        self._control.send(('finish', RECEIVE_GRACE, RECEIVE_DEADLINE))
        return typing.cast(
            dict[str, typing.Any], self._reply('result', RECEIVE_DEADLINE + 10.0)[1]
        )

    def close(self) -> None:
        """Stop the counting process."""
        with contextlib.suppress(OSError):
            self._control.send(('quit',))
        self.process.join(5.0)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5.0)
