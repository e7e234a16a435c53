"""Packing newline-separated statsd payloads into datagrams of bounded size.

Strategy: the common case is a batch whose payloads are one line each.  It
is joined once and cut at newlines with :meth:`bytes.rfind`, so Python code
runs once per datagram, not once per payload.  A batch that holds a payload
of several lines (a negative gauge is sent as ``0`` then the value, and both
must reach the server together) is packed by payload boundaries instead,
found with :func:`itertools.accumulate` and :mod:`bisect`.
"""

from __future__ import annotations

import bisect
import itertools
import operator

__all__ = ['MAX_UNIX_DATAGRAM_SIZE', 'datagrams', 'payload_counts']

#: The default (and usual) largest datagram on a Unix datagram socket.  No
#: network path limits it, but the receiver reads each datagram into a
#: buffer of its own size and truncates the rest: the DogStatsD agent's
#: default buffer is 8 KiB (``dogstatsd_buffer_size``), and datadogpy packs
#: Unix datagrams to 8192 bytes for that reason.
MAX_UNIX_DATAGRAM_SIZE = 8192


def datagrams(payloads: list[bytes], limit: int) -> list[bytes]:
    """Return `payloads` joined with newlines into datagrams of at most `limit` bytes.

    Order is kept and no payload is split; a payload larger than `limit`
    becomes a datagram of its own.  An empty list gives no datagram.
    """
    if not payloads:
        return []
    data = b'\n'.join(payloads)
    if len(data) <= limit:
        return [data]
    if data.count(b'\n') == len(payloads) - 1:
        return _cut(data, limit)
    return _pack(payloads, limit)


def _cut(data: bytes, limit: int) -> list[bytes]:
    """Cut `data` (one payload per line) at newlines."""
    result = []
    start, size = 0, len(data)
    while size - start > limit:
        end = data.rfind(b'\n', start, start + limit + 1)
        if end < 0:  # one line larger than a datagram goes alone
            end = data.find(b'\n', start)
            if end < 0:
                break
        result.append(data[start:end])
        start = end + 1
    result.append(data[start:])
    return result


def _pack(payloads: list[bytes], limit: int) -> list[bytes]:
    """Pack payloads that may contain newlines, never splitting one."""
    # ends[i] is the size of payloads[0..i] joined with newlines, plus one.
    ends = list(itertools.accumulate(map(operator.add, map(len, payloads),
                                         itertools.repeat(1))))
    result = []
    count = len(payloads)
    start = base = 0
    while start < count:
        stop = bisect.bisect_right(ends, base + limit + 1, start)
        if stop == start:  # a payload larger than a datagram goes alone
            stop = start + 1
        result.append(b'\n'.join(payloads[start:stop]))
        base = ends[stop - 1]
        start = stop
    return result


def payload_counts(payloads: list[bytes], packed: list[bytes]) -> list[int]:
    """How many of `payloads` each datagram of ``datagrams(payloads, ...)`` holds.

    Lets a sender count a refused datagram as the payloads it carried.
    """
    if len(packed) == 1:
        return [len(payloads)]
    counts = [datagram.count(b'\n') + 1 for datagram in packed]
    if sum(counts) == len(payloads):  # one line per payload: lines are payloads
        return counts
    counts = []
    index = 0
    for datagram in packed:  # a payload of several lines: walk the payloads
        size, count = -1, 0
        while index < len(payloads) and size < len(datagram):
            size += len(payloads[index]) + 1
            index += 1
            count += 1
        counts.append(count)
    return counts
