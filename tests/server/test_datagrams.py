"""Reading queued datagrams: recvmmsg with the GIL held, and recv one at a time."""

from __future__ import annotations

import collections.abc
import ctypes
import os
import socket
import sys
import tempfile

import pytest

from sprockets_statsd.server import _datagrams
from sprockets_statsd.server.listeners import UDPListener

# Sizes of datagram a reader must return whole: empty, statsd's usual
# ones, and the largest UDP payload over IPv4.
SIZES = (0, 1, 100, 1432, 8192, 65507)


@pytest.fixture(params=[True, False], ids=['recvmmsg', 'recv'])
def batch(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture(params=[socket.AF_INET, socket.AF_INET6], ids=['ipv4', 'ipv6'])
def pair(request: pytest.FixtureRequest) -> collections.abc.Iterator[
        tuple[socket.socket, socket.socket]]:
    """A bound non-blocking UDP socket and one connected to it."""
    family = request.param
    host = '127.0.0.1' if family == socket.AF_INET else '::1'
    receiver = socket.socket(family, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    receiver.bind((host, 0))
    receiver.setblocking(False)
    sender = socket.socket(family, socket.SOCK_DGRAM)
    sender.connect(receiver.getsockname()[:2])
    with receiver, sender:
        yield receiver, sender


def test_the_platform_reader_reads_in_batches() -> None:
    """On Linux (where the server is deployed and tested) reader() gives
    the recvmmsg reader; asked not to batch, the fallback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert sys.platform.startswith('linux')
        assert isinstance(_datagrams.reader(sock), _datagrams.BatchReader)
        assert not isinstance(_datagrams.reader(sock, batch=False), _datagrams.BatchReader)


def test_every_size_arrives_whole_and_in_order(
    pair: tuple[socket.socket, socket.socket], batch: bool
) -> None:
    receiver, sender = pair
    read = _datagrams.reader(receiver, batch=batch)
    assert read(10) == []
    sent = [os.urandom(size) for size in SIZES]
    for payload in sent:
        sender.send(payload)
    assert read(len(SIZES) + 5) == sent
    assert read(10) == []


def test_a_read_takes_at_most_its_limit(
    pair: tuple[socket.socket, socket.socket], batch: bool
) -> None:
    """More datagrams than a recvmmsg call takes, read in two limits."""
    receiver, sender = pair
    read = _datagrams.reader(receiver, batch=batch)
    count = _datagrams.SLOTS * 2 + 22
    sent = [f'n{i}:1|c'.encode() for i in range(count)]
    for payload in sent:
        sender.send(payload)
    first = read(_datagrams.SLOTS + 3)
    assert first == sent[:_datagrams.SLOTS + 3]
    rest = read(count)
    assert first + rest == sent
    assert read(count) == []


def test_unix_datagrams_up_to_the_largest(batch: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'statsd.sock')
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind(path)
        receiver.setblocking(False)
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with receiver, sender:
            sent = [b'u:1|c', os.urandom(_datagrams.MAX_DATAGRAM), b'']
            for payload in sent:
                sender.sendto(payload, path)
            read = _datagrams.reader(receiver, batch=batch)
            assert read(10) == sent


def test_an_error_of_the_socket_is_raised(batch: bool) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(('127.0.0.1', 0))
    sock.setblocking(False)
    read = _datagrams.reader(sock, batch=batch)
    sock.close()
    with pytest.raises(OSError, match='Bad file descriptor'):
        read(10)


def test_recvmmsg_is_called_with_the_gil_held() -> None:
    """The batch reader's system call keeps the GIL (ctypes' PyDLL calling
    convention): had it let the GIL go, as ``recv`` does, a thread
    computing beside the event loop would take it at every call, and the
    loop would wait a switch interval for it back (see bench/README.md,
    "/metrics under load")."""
    recvmmsg = _datagrams._RECVMMSG
    assert recvmmsg is not None
    assert recvmmsg._flags_ & getattr(ctypes, '_FUNCFLAG_PYTHONAPI')  # noqa: B009


def test_the_listener_reads_one_at_a_time_when_told(batch: bool) -> None:
    """The listener takes its reader from `read_in_batches`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(('127.0.0.1', 0))

        class Nothing:
            def receive(self, packet: bytes) -> None:
                pass

        listener = UDPListener(sock, Nothing(), read_in_batches=batch)
        assert isinstance(listener._read, _datagrams.BatchReader) is batch


def test_without_recvmmsg_the_reader_reads_one_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where libc has no recvmmsg the platform reader is the fallback, and
    a batch reader cannot be made."""
    monkeypatch.setattr(_datagrams, '_RECVMMSG', None)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert not isinstance(_datagrams.reader(sock), _datagrams.BatchReader)
        with pytest.raises(OSError, match='recvmmsg'):
            _datagrams.BatchReader(sock)


def test_a_listener_counts_a_failing_socket_and_goes_on() -> None:
    """A socket that fails at every read costs one error a read, at most a
    batch of them per wake-up, and raises nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(('127.0.0.1', 0))

        class Nothing:
            def receive(self, packet: bytes) -> None:
                raise AssertionError('no packet can arrive')

        listener = UDPListener(sock, Nothing(), batch_size=8)
        os.close(sock.detach())  # the descriptor goes, the listener keeps reading it
        assert listener._drain(8)
        assert listener.errors == 8
