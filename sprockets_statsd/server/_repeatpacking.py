"""How a repeater packs packets for its target (pure: no socket).

A UDP repeater sends a packet that fits as it arrived and cuts a longer
one at line ends into datagrams that fit; a TCP repeater ends each packet
with a newline and keeps it in a bounded FIFO, measured in bytes, that
drops the oldest packets when a slow or absent target lets it fill.
"""

from __future__ import annotations

import collections

from sprockets_statsd.errors import ConfigurationError

__all__ = ['PacketBuffer', 'split_datagrams', 'stream_bytes']


def split_datagrams(packet: bytes, limit: int) -> list[bytes]:
    """Cut `packet` at line ends into datagrams of at most `limit` bytes.

    A packet that fits is returned whole; otherwise whole lines are packed
    greedily, and a line longer than `limit` becomes a datagram of its own.
    Empty lines are left out.

    :param packet: one received packet, lines separated by ``\\n``
    :param limit: the largest datagram wanted, in bytes
    """
    if len(packet) <= limit:
        return [packet]
    datagrams: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for line in packet.split(b'\n'):
        if not line:
            continue
        if current and size + 1 + len(line) > limit:
            datagrams.append(b'\n'.join(current))
            current, size = [], 0
        size += len(line) + (1 if current else 0)
        current.append(line)
    if current:
        datagrams.append(b'\n'.join(current))
    return datagrams


def stream_bytes(packet: bytes) -> bytes:
    """`packet` as it goes on a stream: ending with a newline, so that the
    next packet starts a line of its own."""
    return packet if packet.endswith(b'\n') else packet + b'\n'


class PacketBuffer:
    """A bounded FIFO of packets, measured in bytes.

    :param max_bytes: the most bytes held; when an append exceeds it the
        oldest packets are dropped (a packet larger than the whole bound is
        dropped itself)
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ConfigurationError(f'max_bytes={max_bytes!r}: use a whole number >= 1')
        self.max_bytes = max_bytes
        self._packets: collections.deque[bytes] = collections.deque()
        #: Bytes held.
        self.size = 0

    def __len__(self) -> int:
        """Packets held."""
        return len(self._packets)

    def append(self, packet: bytes) -> int:
        """Keep `packet`; return how many packets were dropped to fit it."""
        if len(packet) > self.max_bytes:
            return 1
        self._packets.append(packet)
        self.size += len(packet)
        dropped = 0
        while self.size > self.max_bytes:
            self.size -= len(self._packets.popleft())
            dropped += 1
        return dropped

    def take(self, limit: int) -> tuple[bytes, int]:
        """Remove the oldest packets, about `limit` bytes (at least one).

        :returns: their bytes joined, and how many packets they were
        """
        taken: list[bytes] = []
        size = 0
        packets = self._packets
        while packets and (not taken or size + len(packets[0]) <= limit):
            packet = packets.popleft()
            taken.append(packet)
            size += len(packet)
        self.size -= size
        return b''.join(taken), len(taken)

    def clear(self) -> int:
        """Drop everything; return how many packets were dropped."""
        count = len(self._packets)
        self._packets.clear()
        self.size = 0
        return count
