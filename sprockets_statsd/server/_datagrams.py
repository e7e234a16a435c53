"""Read many queued datagrams in one system call, without giving up the GIL.

Strategy: ``socket.recv`` lets go of the GIL around its system call, as
every blocking call in CPython does.  While another thread computes (a
``/metrics`` or ``/N`` answer, a Graphite rendering), the event loop then
waits for the GIL again after *every* datagram, up to the interpreter's
switch interval (5 ms): it takes in a few hundred datagrams a second, and
at 100k lines/s the kernel's queue overflows in a fraction of a second.
On Linux, :class:`BatchReader` calls ``recvmmsg(2)`` through :mod:`ctypes`
with the GIL held (``MSG_DONTWAIT``, so the call never blocks): one call
takes up to :data:`SLOTS` datagrams, and the loop keeps the GIL for the
whole batch.  Elsewhere (or where libc lacks ``recvmmsg``) :func:`reader`
falls back to ``recv`` one datagram at a time.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import sys
import typing
from collections.abc import Callable

__all__ = [
    'MAX_DATAGRAM', 'SLOTS', 'BatchReader', 'IOVec', 'MMsgHdr', 'MsgHdr', 'Reader', 'reader',
]

#: The largest UDP payload (IPv6 without jumbograms): nothing is truncated.
MAX_DATAGRAM = 65535

#: Datagrams per ``recvmmsg`` call.  Each has a buffer of
#: :data:`MAX_DATAGRAM` bytes, so a listener holds 4 MiB of address space,
#: of which only the pages datagrams land in are ever touched (one page
#: per slot for statsd's small datagrams); a larger batch takes several
#: calls, each as cheap per datagram.
SLOTS = 64

#: A reader: up to `limit` queued datagrams, ``[]`` when none waits;
#: raises :class:`OSError` on an error of the socket.
Reader = Callable[[int], 'list[bytes]']

_AGAIN = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})


class IOVec(ctypes.Structure):
    """Linux's ``struct iovec``."""

    _fields_ = (('iov_base', ctypes.c_void_p), ('iov_len', ctypes.c_size_t))


class MsgHdr(ctypes.Structure):
    """Linux's ``struct msghdr``."""

    _fields_ = (
        ('msg_name', ctypes.c_void_p),
        ('msg_namelen', ctypes.c_uint32),
        ('msg_iov', ctypes.POINTER(IOVec)),
        ('msg_iovlen', ctypes.c_size_t),
        ('msg_control', ctypes.c_void_p),
        ('msg_controllen', ctypes.c_size_t),
        ('msg_flags', ctypes.c_int),
    )


class MMsgHdr(ctypes.Structure):
    """Linux's ``struct mmsghdr``, what ``recvmmsg`` and ``sendmmsg`` take."""

    _fields_ = (('msg_hdr', MsgHdr), ('msg_len', ctypes.c_uint))


def _libc_recvmmsg() -> typing.Any:
    """libc's ``recvmmsg``, called with the GIL held, or None."""
    if not sys.platform.startswith('linux'):
        return None
    try:
        # PyDLL: the call keeps the GIL, which is the point (see above).
        function = ctypes.PyDLL(None, use_errno=True).recvmmsg
    except (AttributeError, OSError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.POINTER(MMsgHdr), ctypes.c_uint,
                         ctypes.c_int, ctypes.c_void_p)
    function.restype = ctypes.c_int
    return function


_RECVMMSG = _libc_recvmmsg()


class BatchReader:
    """Read a socket's queued datagrams with ``recvmmsg``, the GIL held.

    :param sock: a non-blocking datagram socket; the reader does not own it
    :raises OSError: when ``recvmmsg`` is not available here
    """

    def __init__(self, sock: socket.socket) -> None:
        if _RECVMMSG is None:
            raise OSError(errno.ENOSYS, 'recvmmsg is not available here')
        self._recvmmsg = _RECVMMSG
        self._sock = sock
        # Anonymous memory: the kernel maps a page only once a datagram
        # lands in it, where a ctypes buffer would be zeroed, all 4 MiB.
        self._buffer = mmap.mmap(-1, SLOTS * MAX_DATAGRAM)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self._buffer))
        self._vectors = (IOVec * SLOTS)(
            *(IOVec(base + slot * MAX_DATAGRAM, MAX_DATAGRAM) for slot in range(SLOTS)))
        self._messages = (MMsgHdr * SLOTS)()
        for slot, message in enumerate(self._messages):
            message.msg_hdr.msg_iov = ctypes.pointer(self._vectors[slot])
            message.msg_hdr.msg_iovlen = 1
        # Each message's length, read as one column of unsigned ints (in C)
        # rather than through a ctypes attribute per datagram.
        stride, offset = ctypes.sizeof(MMsgHdr), MMsgHdr.msg_len.offset
        width = ctypes.sizeof(ctypes.c_uint)
        self._lengths = memoryview(self._messages).cast('B').cast('I')[
            offset // width::stride // width]
        self._bytes = memoryview(self._buffer)
        self._starts = range(0, SLOTS * MAX_DATAGRAM, MAX_DATAGRAM)

    def __call__(self, limit: int) -> list[bytes]:
        """Up to `limit` queued datagrams, in order; ``[]`` when none waits."""
        packets: list[bytes] = []
        view, starts = self._bytes, self._starts
        while len(packets) < limit:
            wanted = min(SLOTS, limit - len(packets))
            count = self._recvmmsg(self._sock.fileno(), self._messages, wanted,
                                   socket.MSG_DONTWAIT, None)
            if count < 0:
                code = ctypes.get_errno()
                if code in _AGAIN or packets:
                    break  # an error is raised by the next call, if it lasts
                raise OSError(code, os.strerror(code))
            packets += [view[start:start + length].tobytes()
                        for start, length in zip(starts[:count], self._lengths[:count].tolist(),
                                                     strict=True)]
            if count < wanted:
                break  # the queue is empty
        return packets


def _each(sock: socket.socket) -> Reader:
    """A reader that calls ``recv`` once per datagram."""
    recv = sock.recv

    def read(limit: int) -> list[bytes]:
        packets: list[bytes] = []
        try:
            while len(packets) < limit:
                packets.append(recv(MAX_DATAGRAM))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            if not packets:
                raise
        return packets

    return read


def reader(sock: socket.socket, *, batch: bool = True) -> Reader:
    """The fastest reader of `sock`'s datagrams this platform has.

    :param sock: a non-blocking datagram socket (UDP or Unix)
    :param batch: use ``recvmmsg`` where there is one; False reads one
        datagram per call, as the fallback does
    """
    if batch and _RECVMMSG is not None:
        return BatchReader(sock)
    return _each(sock)
