"""Tier 1: the line framer of the stream listeners and the admin console."""

from __future__ import annotations

from sprockets_statsd.server._lines import LineFramer

MARK = b'too-long'


def test_complete_lines_pass_and_the_partial_one_waits() -> None:
    """Lines come out once their newline arrives, however the chunks fall."""
    framer = LineFramer(16, MARK)
    assert framer.feed(b'a:1|c\nb:') == b'a:1|c\n'
    assert framer.feed(b'2|c') == b''
    assert framer.feed(b'\nc:3|c\n') == b'b:2|c\nc:3|c\n'
    assert framer.end() == b''


def test_a_last_line_without_newline_comes_at_the_end() -> None:
    """end() gives the unterminated last line, once."""
    framer = LineFramer(16, MARK)
    assert framer.feed(b'a:1|c\nlast') == b'a:1|c\n'
    assert framer.end() == b'last'
    assert framer.end() == b''


def test_an_over_long_line_in_one_chunk_is_replaced() -> None:
    """A complete line over the bound becomes the marker; its neighbours stay."""
    framer = LineFramer(8, MARK)
    assert framer.feed(b'ok\n' + b'x' * 9 + b'\nfine\n') == b'ok\n' + MARK + b'\nfine\n'
    assert framer.feed(b'x' * 8 + b'\n') == b'x' * 8 + b'\n'  # the bound itself is fine


def test_an_over_long_line_still_arriving_is_marked_once_and_skipped() -> None:
    """The marker comes as soon as the partial line passes the bound, the rest
    of that line is skipped across chunks, and the next line is kept."""
    framer = LineFramer(8, MARK)
    assert framer.feed(b'ok\n' + b'y' * 9) == b'ok\n' + MARK
    assert framer.feed(b'y' * 100) == b''
    assert framer.feed(b'yyy\nnext\n') == b'next\n'
    framer.feed(b'z' * 9)
    assert framer.end() == b''  # the skipped line's end is not a line
    assert framer.feed(b'again\n') == b'again\n'


def test_a_partial_line_the_shared_bound_refuses_is_treated_as_over_long() -> None:
    """When `hold` refuses the partial line, it is marked and skipped like an
    over-long one, and what the framer holds is always what `hold` granted."""
    held = {'bytes': 0}

    def hold(before: int, after: int) -> bool:
        if held['bytes'] + after - before > 4:
            return False
        held['bytes'] += after - before
        return True

    framer = LineFramer(16, MARK, hold)
    assert framer.feed(b'a:1|c\nab') == b'a:1|c\n'
    assert held['bytes'] == 2
    assert framer.feed(b'cdef') == MARK  # six bytes would pass the shared bound
    assert held['bytes'] == 0
    assert framer.feed(b'gh\nok\n') == b'ok\n'
    framer.feed(b'xyz')
    assert held['bytes'] == 3
    framer.clear()
    assert held['bytes'] == 0
    assert framer.end() == b''
