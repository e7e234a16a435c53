"""The repeater: targets, datagram packing, the bounded buffer, and real
UDP and TCP receivers on loopback."""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket

import pytest

from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.server import cli
from sprockets_statsd.server.config import ServerConfig
from sprockets_statsd.server.repeater import (
    DEFAULT_MAX_DATAGRAM,
    PacketBuffer,
    Repeaters,
    RepeatTarget,
    TCPRepeater,
    UDPRepeater,
    make_repeater,
    split_datagrams,
    stream_bytes,
)
from tests.helpers import DEFAULT_TIMEOUT, StatsdServer, wait_until
from tests.server.helpers import FakeCarbon, ServerProcess, running_server, send_tcp, send_udp

# --- tier 1: pure ------------------------------------------------------


def test_target_is_checked_and_named() -> None:
    """A target names udp or tcp, a host and a port from 1 to 65535, and
    prints as transport:host:port (IPv6 in brackets)."""
    assert str(RepeatTarget('udp', '10.0.0.5', 8125)) == 'udp:10.0.0.5:8125'
    assert str(RepeatTarget('tcp', '::1', 8125)) == 'tcp:[::1]:8125'
    for transport, host, port in (('sctp', 'h', 1), ('udp', '', 1), ('udp', 'h', 0),
                                  ('tcp', 'h', 65536)):
        with pytest.raises(ConfigurationError):
            RepeatTarget(transport, host, port)


def test_make_repeater_follows_the_transport() -> None:
    """udp targets get a UDPRepeater, tcp targets a TCPRepeater."""
    assert isinstance(make_repeater(RepeatTarget('udp', 'h', 1)), UDPRepeater)
    assert isinstance(make_repeater(RepeatTarget('tcp', 'h', 1)), TCPRepeater)


def test_a_packet_that_fits_is_one_datagram_untouched() -> None:
    """A packet no longer than the limit goes on byte for byte, empty lines
    and a trailing newline included."""
    packet = b'a:1|c\n\nb:2|c\n'
    assert split_datagrams(packet, len(packet)) == [packet]


def test_a_long_packet_is_cut_at_line_ends() -> None:
    """A longer packet becomes datagrams of whole lines, in order, each
    within the limit, except a line longer than the limit, sent alone."""
    lines = [f'name{i}:{i}|c'.encode() for i in range(200)]
    long_line = b'x' * 100 + b':1|c'
    packet = b'\n'.join([*lines[:100], long_line, *lines[100:]]) + b'\n\n'
    datagrams = split_datagrams(packet, 64)
    assert b'\n'.join(datagrams).split(b'\n') == [*lines[:100], long_line, *lines[100:]]
    assert [d for d in datagrams if len(d) > 64] == [long_line]
    # Packed greedily: no two neighbours would have fitted together.
    for first, second in itertools.pairwise(datagrams):
        assert len(first) + 1 + len(second) > 64


def test_stream_bytes_end_with_one_newline() -> None:
    """On a stream each packet ends with a newline, added only if missing."""
    assert stream_bytes(b'a:1|c') == b'a:1|c\n'
    assert stream_bytes(b'a:1|c\nb:1|c\n') == b'a:1|c\nb:1|c\n'


def test_packet_buffer_keeps_the_newest_within_its_bound() -> None:
    """The buffer holds at most its bound in bytes, dropping the oldest
    packets (and a packet larger than the bound itself), and gives packets
    back oldest first in chunks of about the asked size, at least one."""
    buffer = PacketBuffer(10)
    assert buffer.append(b'aaaa') == 0
    assert buffer.append(b'bbbb') == 0
    assert buffer.append(b'cccc') == 1  # aaaa goes
    assert (len(buffer), buffer.size) == (2, 8)
    assert buffer.append(b'x' * 11) == 1  # too large for any buffer
    assert (len(buffer), buffer.size) == (2, 8)
    assert buffer.take(1) == (b'bbbb', 1)
    buffer.append(b'dd')
    assert buffer.take(100) == (b'ccccdd', 2)
    assert (len(buffer), buffer.size) == (0, 0)
    buffer.append(b'e')
    assert buffer.clear() == 1
    with pytest.raises(ConfigurationError):
        PacketBuffer(0)


# --- tier 2: real receivers on loopback ---------------------------------


async def test_udp_repeater_sends_each_packet_as_received() -> None:
    """Over UDP each packet arrives as one datagram, unchanged; a packet
    longer than the datagram limit arrives as several holding its lines."""
    async with StatsdServer('udp') as receiver:
        repeater = UDPRepeater(RepeatTarget('udp', '127.0.0.1', receiver.port))
        await repeater.start()
        try:
            repeater.repeat(b'a:1|c')
            repeater.repeat(b'b:1|c\nbad line\n')
            long = b'\n'.join(f'long{i}:{i}|ms'.encode() for i in range(300))
            repeater.repeat(long)
            await wait_until(lambda: len(receiver.lines) >= 303, DEFAULT_TIMEOUT, 'lines')
        finally:
            await repeater.close(DEFAULT_TIMEOUT)
        assert receiver.datagrams[:2] == [b'a:1|c', b'b:1|c\nbad line\n']
        assert b'\n'.join(receiver.datagrams[2:]) == long
        assert all(len(d) <= DEFAULT_MAX_DATAGRAM for d in receiver.datagrams)
        assert repeater.sent == len(receiver.datagrams)
        assert repeater.sent_bytes == sum(map(len, receiver.datagrams))
        assert repeater.dropped == 0


async def test_udp_repeater_counts_what_nobody_receives(caplog: pytest.LogCaptureFixture) -> None:
    """With nothing listening on the target the kernel refuses later sends:
    they are counted as dropped and logged once, and repeat never raises."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    repeater = UDPRepeater(RepeatTarget('udp', '127.0.0.1', port))
    await repeater.start()
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(50):
                repeater.repeat(b'a:1|c')
                await asyncio.sleep(0)  # let the ICMP error come back
        assert repeater.dropped >= 1
        assert repeater.sent + repeater.dropped == 50
        warnings = [r for r in caplog.records if 'cannot send' in r.getMessage()]
        assert len(warnings) == 1
    finally:
        await repeater.close(DEFAULT_TIMEOUT)


async def test_tcp_repeater_writes_newline_terminated_packets_in_order() -> None:
    """Over TCP every packet goes on one persistent connection, in order,
    each ending with a newline."""
    async with StatsdServer('tcp') as receiver:
        repeater = TCPRepeater(RepeatTarget('tcp', '127.0.0.1', receiver.port))
        await repeater.start()
        try:
            packets = [f'n{i}:{i}|c'.encode() for i in range(1000)]
            for packet in packets:
                repeater.repeat(packet)
            repeater.repeat(b'x:1|g\ny:2|g\n')
            await receiver.wait_for_lines(1002)
        finally:
            await repeater.close(DEFAULT_TIMEOUT)
        assert receiver.lines == [*packets, b'x:1|g', b'y:2|g']
        assert receiver.connections == 1
        assert (repeater.sent, repeater.dropped) == (1001, 0)


async def test_tcp_repeater_buffers_until_the_target_listens() -> None:
    """Packets repeated while the target refuses connections wait in the
    buffer and arrive once it listens; the repeater reconnects by itself."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(('127.0.0.1', 0))  # bound, not listening: connections are refused
    port = sock.getsockname()[1]
    repeater = TCPRepeater(RepeatTarget('tcp', '127.0.0.1', port),
                           reconnect_delay=0.05, reconnect_max_delay=0.1)
    await repeater.start()
    try:
        assert not repeater.connected
        for i in range(10):
            repeater.repeat(f'early{i}:1|c'.encode())
        received: list[bytes] = []
        sock.listen()
        server = await asyncio.start_server(
            lambda r, w: _collect(r, w, received), sock=sock
        )
        async with server:
            await wait_until(lambda: b''.join(received).count(b'\n') >= 10,
                             DEFAULT_TIMEOUT, 'the buffered packets')
            assert b''.join(received) == b''.join(f'early{i}:1|c\n'.encode() for i in range(10))
            await repeater.close(DEFAULT_TIMEOUT)
    finally:
        await repeater.close(DEFAULT_TIMEOUT)
        sock.close()
    assert (repeater.sent, repeater.dropped) == (10, 0)


async def _collect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   into: list[bytes]) -> None:
    while data := await reader.read(65536):
        into.append(data)
    writer.close()


async def test_tcp_repeater_never_blocks_and_bounds_its_buffer() -> None:
    """A target that accepts but never reads fills the kernel's buffers and
    then the repeater's: further packets drop the oldest, counted, and
    repeat keeps returning at once."""
    stalled: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled.append(writer)  # never read

    server = await asyncio.start_server(accept, '127.0.0.1', 0)
    port = server.sockets[0].getsockname()[1]
    repeater = TCPRepeater(RepeatTarget('tcp', '127.0.0.1', port), buffer_bytes=64 * 1024)
    await repeater.start()
    packet = b'stalled.metric.name:1|c' * 4
    try:
        # Bounded: 64 MiB at most, far beyond what loopback buffers hold.
        for _ in range(64 * 1024 * 1024 // (1000 * len(packet))):
            for _ in range(1000):
                repeater.repeat(packet)
            await asyncio.sleep(0)
            if repeater.dropped:
                break
        assert repeater.dropped > 0
        assert repeater.buffer.size <= 64 * 1024
    finally:
        await repeater.close(0.1)
        for writer in stalled:
            writer.close()
        server.close()
        await server.wait_closed()
    assert repeater.buffer.size == 0


async def test_tcp_repeater_reconnects_after_the_target_restarts() -> None:
    """When the target closes the connection (a restart), the repeater
    connects again by itself and what it repeats afterwards arrives."""
    async with StatsdServer('tcp') as receiver:
        repeater = TCPRepeater(RepeatTarget('tcp', '127.0.0.1', receiver.port),
                               reconnect_delay=0.05, reconnect_max_delay=0.1)
        await repeater.start()
        try:
            repeater.repeat(b'before:1|c')
            await receiver.wait_for_lines(1)
            await receiver.restart()
            await wait_until(lambda: receiver.connections == 2, DEFAULT_TIMEOUT,
                             'a second connection')
            repeater.repeat(b'after:1|c')
            await receiver.wait_for_lines(2)
        finally:
            await repeater.close(DEFAULT_TIMEOUT)
        assert receiver.lines == [b'before:1|c', b'after:1|c']
        assert repeater.dropped == 0


async def test_tcp_repeater_drops_what_it_cannot_deliver_by_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Packets still buffered when the shutdown timeout ends (the target
    never listened) are dropped, counted and logged."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))  # bound, never listening
        repeater = TCPRepeater(RepeatTarget('tcp', '127.0.0.1', sock.getsockname()[1]),
                               reconnect_delay=0.05, reconnect_max_delay=0.1)
        await repeater.start()
        for i in range(5):
            repeater.repeat(f'n{i}:1|c'.encode())
        with caplog.at_level(logging.WARNING):
            await repeater.close(0.2)
    assert (repeater.sent, repeater.dropped) == (0, 5)
    assert any('5 packet(s) not delivered' in r.getMessage() for r in caplog.records)


async def test_repeaters_hand_every_packet_on_after_repeating() -> None:
    """The wrapped receiver gets every packet, repeat or not; without
    targets the receiver is used as it is."""
    got: list[bytes] = []

    class Receiver:
        def receive(self, packet: bytes) -> None:
            got.append(packet)

    receiver = Receiver()
    assert Repeaters().wrap(receiver) is receiver
    async with StatsdServer('udp') as target:
        repeaters = Repeaters.for_targets([RepeatTarget('udp', '127.0.0.1', target.port)])
        await repeaters.start()
        try:
            wrapped = repeaters.wrap(receiver)
            wrapped.receive(b'a:1|c')
            await target.wait_for_lines(1)
        finally:
            await repeaters.close(DEFAULT_TIMEOUT)
    assert got == [b'a:1|c']
    assert target.lines == [b'a:1|c']


# --- the --repeat option ------------------------------------------------


def test_repeat_option_forms() -> None:
    """--repeat takes [udp:|tcp:][host]:port, udp and localhost by default,
    repeatable on the command line and comma-separated in STATSD_REPEAT."""
    config, _ = cli.settings_from(
        ['--repeat', 'tcp:central:8125', '--repeat', '[::1]:9125', '--repeat', ':7125'], {}
    )
    assert config.repeat == (
        RepeatTarget('tcp', 'central', 8125),
        RepeatTarget('udp', '::1', 9125),
        RepeatTarget('udp', 'localhost', 7125),
    )
    config, _ = cli.settings_from([], {'STATSD_REPEAT': 'UDP:a:1, tcp:[::1]:2'})
    assert config.repeat == (RepeatTarget('udp', 'a', 1), RepeatTarget('tcp', '::1', 2))
    assert cli.settings_from([], {})[0].repeat == ()


@pytest.mark.parametrize('text', ['tcp:h:0', 'udp:', 'sctp:h:1', 'h:port', '::1:8125'])
def test_bad_repeat_targets_exit_2(capsys: pytest.CaptureFixture[str], text: str) -> None:
    """A target without a usable port, or with an unknown transport, stops
    the command line with one line naming --repeat."""
    with pytest.raises(SystemExit) as exc:
        cli.settings_from(['--repeat', text], {})
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1, err
    assert '--repeat' in err


# --- a second server of ours behind the repeater --------------------------


@pytest.mark.parametrize('transport', ['udp', 'tcp'])
async def test_a_server_repeats_everything_to_a_second_server(transport: str) -> None:
    """A server started with --repeat forwards every packet it receives
    over UDP and TCP to a second server of ours, which aggregates the same
    counts, timers and gauges; the first aggregates them as well."""
    async with FakeCarbon() as carbon_b, running_server(
        sinks=[('127.0.0.1', carbon_b.port)], flush_interval=0.2,
        aggregator={'delete_idle_stats': True},
    ) as second:
        host, port = second.udp_addresses[0][:2]
        async with FakeCarbon() as carbon_a, ServerProcess(
            '-b', '127.0.0.1:0', '-s', f'127.0.0.1:{carbon_a.port}', '-f', '0.2',
            '--delete-idle-stats', '--admin', 'off',
            '--repeat', f'{transport}:{host}:{port}',
        ) as first:
            assert f'repeating to {transport}:{host}:{port}' in ''.join(first.stderr)
            for i in range(100):
                send_udp(first.address, f'rep.c:{i % 3}|c\nrep.t:{i}|ms'.encode())
            await send_tcp(first.address, b'rep.c:1000|c\nrep.g:42|g\n')
            for carbon in (carbon_a, carbon_b):
                await carbon.wait_for(
                    lambda c: sum(c.values('stats_counts.rep.c')) == 1099
                    and sum(c.values('stats.timers.rep.t.count')) == 100
                    and 42 in c.values('stats.gauges.rep.g'),
                    'every packet aggregated',
                )
            assert sum(carbon_b.values('stats.timers.rep.t.sum')) == sum(range(100))
            status, _, stderr = await first.stop()
            assert status == 0, stderr
            # Any drop or connection failure would have been logged.
            assert 'dropped' not in stderr, stderr
            assert 'cannot' not in stderr, stderr


@pytest.mark.parametrize(('binds', 'target', 'loops'), [
    ((('', 8125),), RepeatTarget('udp', 'localhost', 8125), True),
    ((('', 8125),), RepeatTarget('tcp', '127.0.0.1', 8125), True),
    ((('10.0.0.5', 8125),), RepeatTarget('udp', '10.0.0.5', 8125), True),
    ((('127.0.0.1', 9125), ('::1', 8125)), RepeatTarget('udp', '::1', 8125), True),
    ((('', 8125),), RepeatTarget('udp', 'localhost', 9125), False),
    ((('', 8125),), RepeatTarget('udp', 'central', 8125), False),
    ((('10.0.0.5', 8125),), RepeatTarget('udp', '10.0.0.6', 8125), False),
])
def test_a_server_refuses_to_repeat_to_itself(
    binds: tuple[tuple[str, int], ...], target: RepeatTarget, loops: bool
) -> None:
    """A target on one of the server's own ports, by a loopback name or the
    bound host, is a configuration error: every packet would go round for
    ever.  Other hosts, and other ports, are fine."""
    if loops:
        with pytest.raises(ConfigurationError, match="server's own address"):
            ServerConfig(binds=binds, repeat=(target,))
    else:
        assert ServerConfig(binds=binds, repeat=(target,)).repeat == (target,)


def test_repeating_to_itself_stops_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    """-b :9125 --repeat :9125 exits 2 with one line saying why."""
    with pytest.raises(SystemExit) as exc:
        cli.settings_from(['-b', ':9125', '--repeat', ':9125'], {})
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1, err
    assert 'itself' in err
