"""Tier 1: packing payloads into datagrams (sprockets_statsd._packing)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sprockets_statsd._packing import datagrams, payload_counts

line = st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b'\n', b'_'))
payload = st.one_of(line, st.tuples(line, line).map(b'\n'.join))


def test_empty_batch_gives_no_datagram() -> None:
    """Nothing to send means no datagram at all."""
    assert datagrams([], 512) == []


def test_small_batch_is_one_datagram() -> None:
    """A batch that fits is one newline-joined datagram."""
    assert datagrams([b'a:1|c', b'b:2|c'], 512) == [b'a:1|c\nb:2|c']


def test_oversized_line_goes_alone() -> None:
    """A line longer than the limit is a datagram of its own, between the others."""
    assert datagrams([b'a', b'x' * 10, b'b'], 4) == [b'a', b'x' * 10, b'b']


def test_two_line_payload_is_never_split() -> None:
    """A negative gauge pair stays in one datagram even where a cut would fit better."""
    pair = b'g:0|g\ng:-1|g'
    assert datagrams([b'aaaaaa', pair], 12) == [b'aaaaaa', pair]


@settings(max_examples=300)
@given(st.lists(payload, max_size=60), st.integers(min_value=1, max_value=200))
def test_packing_keeps_order_bounds_and_payloads(payloads: list[bytes], limit: int) -> None:
    """Datagrams keep every payload whole and in order, within the limit unless alone."""
    result = datagrams(payloads, limit)
    assert b'\n'.join(result) == b'\n'.join(payloads)
    # Rebuild the payloads datagram by datagram: boundaries fall between payloads.
    remaining = list(payloads)
    for datagram in result:
        taken = []
        while remaining and b'\n'.join([*taken, remaining[0]]) != datagram:
            taken.append(remaining.pop(0))
            assert len(b'\n'.join(taken)) < len(datagram)
        assert remaining, 'a datagram did not end on a payload boundary'
        taken.append(remaining.pop(0))
        assert len(datagram) <= limit or len(taken) == 1
    assert not remaining


@settings(max_examples=300)
@given(st.lists(payload, max_size=60), st.integers(min_value=1, max_value=200))
def test_payload_counts_say_which_payloads_each_datagram_holds(
        payloads: list[bytes], limit: int) -> None:
    """Each datagram is exactly the next `count` payloads joined, for every datagram."""
    packed = datagrams(payloads, limit)
    counts = payload_counts(payloads, packed)
    assert len(counts) == len(packed)
    start = 0
    for datagram, count in zip(packed, counts, strict=True):
        assert datagram == b'\n'.join(payloads[start:start + count])
        start += count
    assert start == len(payloads)
