"""UDP, TCP and Unix listeners against real sockets, with a recording receiver."""

from __future__ import annotations

import asyncio
import os
import socket
import stat

import pytest

from sprockets_statsd.server import binding, listeners
from tests.server.helpers import send_tcp, send_udp, wait_until


class Recorder:
    """Records every packet; raises for packets starting with ``boom``."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def receive(self, packet: bytes) -> None:
        if packet.startswith(b'boom'):
            raise RuntimeError('boom')
        self.packets.append(packet)

    @property
    def lines(self) -> list[bytes]:
        return [line for p in self.packets for line in p.split(b'\n') if line]


def udp_listener(recorder: Recorder, host: str = '127.0.0.1') -> listeners.UDPListener:
    udp, tcp = binding.bind_sockets(host, 0, udp_receive_buffer=1 << 20)
    for sock in tcp:
        sock.close()
    return listeners.UDPListener(udp[0], recorder, batch_size=8)


async def stream_listener(
    recorder: Recorder, max_line_length: int = 64
) -> listeners.StreamListener:
    udp, tcp = binding.bind_sockets('127.0.0.1', 0)
    for sock in udp:
        sock.close()
    listener = listeners.StreamListener(tcp[0], recorder, max_line_length=max_line_length)
    await listener.start()
    return listener


async def test_udp_datagrams_arrive_whole_and_in_order() -> None:
    """Many datagrams (more than one batch per wake-up) arrive intact, in order."""
    recorder = Recorder()
    listener = udp_listener(recorder)
    listener.start()
    try:
        # Few enough to fit the smallest receive buffer a CI host may give.
        payloads = [b'key.%d:%d|c\nother:1|ms' % (i, i) for i in range(100)]
        send_udp(listener.address, *payloads)
        await wait_until(lambda: len(recorder.packets) == 100, what='100 datagrams')
        assert recorder.packets == payloads
    finally:
        listener.close()


async def test_udp_listener_survives_a_failing_packet(caplog: pytest.LogCaptureFixture) -> None:
    """An exception from the receiver is counted and logged; later packets still arrive."""
    recorder = Recorder()
    listener = udp_listener(recorder)
    listener.start()
    try:
        send_udp(listener.address, b'boom', b'boom', b'ok:1|c')
        await wait_until(lambda: recorder.packets == [b'ok:1|c'], what='the good packet')
        assert listener.errors == 2
        # Throttled: two failures, one message.
        messages = [r for r in caplog.records if 'a packet failed' in r.getMessage()]
        assert len(messages) == 1
    finally:
        listener.close()


async def test_udp_close_hands_on_queued_datagrams() -> None:
    """Datagrams queued in the kernel when the listener closes are still handed on."""
    recorder = Recorder()
    listener = udp_listener(recorder)
    send_udp(listener.address, *(b'q:%d|c' % i for i in range(20)))
    # Loopback delivery is synchronous with sendto, so they are queued now.
    listener.close()
    assert len(recorder.packets) == 20


@pytest.mark.skipif(not socket.has_dualstack_ipv6(), reason='no dual-stack IPv6')
async def test_all_interfaces_is_dual_stack() -> None:
    """An empty host binds ``::`` dual-stack: IPv4 and IPv6 clients both arrive."""
    recorder = Recorder()
    udp, tcp = binding.bind_sockets('', 0)
    for sock in tcp:
        sock.close()
    assert udp[0].family == socket.AF_INET6
    listener = listeners.UDPListener(udp[0], recorder)
    listener.start()
    try:
        port = listener.address[1]
        send_udp(('127.0.0.1', port), b'v4:1|c')
        send_udp(('::1', port), b'v6:1|c')
        await wait_until(lambda: len(recorder.packets) == 2, what='both datagrams')
        assert sorted(recorder.packets) == [b'v4:1|c', b'v6:1|c']
    finally:
        listener.close()


async def test_udp_on_ipv6_loopback() -> None:
    """A ``::1`` bind receives IPv6 datagrams."""
    recorder = Recorder()
    listener = udp_listener(recorder, '::1')
    listener.start()
    try:
        assert listener.address[0] == '::1'
        send_udp(listener.address, b'six:1|c')
        await wait_until(lambda: recorder.packets == [b'six:1|c'], what='the datagram')
    finally:
        listener.close()


async def test_tcp_hands_on_everything_up_to_the_last_newline() -> None:
    """A chunk is cut after its last newline; the partial tail waits for the rest."""
    recorder = Recorder()
    listener = await stream_listener(recorder)
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(*listener.address[:2]), 10
        )
        writer.write(b'a:1|c\nb:2|c\nc:3')
        await wait_until(lambda: recorder.packets == [b'a:1|c\nb:2|c\n'], what='first packet')
        writer.write(b'|c\nd:4|c\n')
        await wait_until(lambda: len(recorder.packets) == 2, what='second packet')
        assert recorder.packets[1] == b'c:3|c\nd:4|c\n'
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 10)
    finally:
        await listener.close()


async def test_tcp_last_line_without_newline_counts_at_eof() -> None:
    """A client that closes after a last line without newline still delivers it."""
    recorder = Recorder()
    listener = await stream_listener(recorder)
    try:
        await send_tcp(listener.address, b'a:1|c\nlast:1|c')
        await wait_until(lambda: b'last:1|c' in recorder.lines, what='the last line')
        assert recorder.lines == [b'a:1|c', b'last:1|c']
    finally:
        await listener.close()


async def test_tcp_overlong_line_is_one_bad_line_and_connection_survives() -> None:
    """A line over the limit becomes one bad-line marker; the rest of the line is
    skipped and the connection goes on delivering."""
    recorder = Recorder()
    listener = await stream_listener(recorder, max_line_length=16)
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(*listener.address[:2]), 10
        )
        writer.write(b'ok:1|c\n' + b'x' * 40)
        await wait_until(lambda: listeners.LINE_TOO_LONG in recorder.lines, what='marker')
        writer.write(b'y' * 40)
        writer.write(b'z' * 10 + b'\nafter:1|c\n')
        await wait_until(lambda: b'after:1|c' in recorder.lines, what='the next line')
        # A complete over-long line inside one chunk is replaced too.
        writer.write(b'short:1|c\n' + b'w' * 30 + b'\nend:1|c\n')
        await wait_until(lambda: b'end:1|c' in recorder.lines, what='the end line')
        assert recorder.lines == [
            b'ok:1|c', listeners.LINE_TOO_LONG, b'after:1|c',
            b'short:1|c', listeners.LINE_TOO_LONG, b'end:1|c',
        ]
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 10)
    finally:
        await listener.close()


async def test_close_takes_in_what_clients_already_sent() -> None:
    """Lines a client sent before the stop count even if the loop had not
    read them yet; a partial last line of an open connection does not."""
    recorder = Recorder()
    listener = await stream_listener(recorder)
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(*listener.address[:2]), 10
    )
    await wait_until(lambda: len(listener.connections) == 1, what='the connection')
    # On loopback the bytes are in the server's socket when write() returns.
    writer.write(b'before:1|c\nbefore:2|c\npartial')
    await asyncio.wait_for(listener.close(), 10)
    assert recorder.lines == [b'before:1|c', b'before:2|c']
    writer.close()


async def test_tcp_connection_survives_a_failing_packet() -> None:
    """An exception from the receiver is counted; the connection keeps working."""
    recorder = Recorder()
    listener = await stream_listener(recorder)
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(*listener.address[:2]), 10
        )
        writer.write(b'boom\n')
        await wait_until(lambda: listener.errors == 1, what='the error')
        writer.write(b'fine:1|c\n')
        await wait_until(lambda: recorder.lines == [b'fine:1|c'], what='the next line')
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 10)
    finally:
        await listener.close()


async def test_close_ends_open_connections() -> None:
    """Closing the listener closes its connections and stops accepting."""
    recorder = Recorder()
    listener = await stream_listener(recorder)
    address = listener.address[:2]
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 10)
    await wait_until(lambda: len(listener.connections) == 1, what='the connection')
    await asyncio.wait_for(listener.close(), 10)
    assert await asyncio.wait_for(reader.read(), 10) == b''
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(asyncio.open_connection(*address), 10)


async def test_unix_socket(tmp_path: os.PathLike[str]) -> None:
    """A Unix stream socket replaces a stale socket file, takes its mode,
    delivers lines, and is removed on close."""
    path = os.path.join(tmp_path, 'statsd.sock')
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()
    recorder = Recorder()
    listener = listeners.StreamListener(
        binding.bind_unix_socket(path, 0o660), recorder
    )
    await listener.start()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        await send_tcp(path, b'unix:1|c\n')
        await wait_until(lambda: recorder.lines == [b'unix:1|c'], what='the line')
    finally:
        await listener.close()
    with pytest.raises(FileNotFoundError):
        os.stat(path)
