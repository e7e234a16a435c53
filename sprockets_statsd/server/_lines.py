"""Cut a byte stream into lines, none longer than a bound (sans-I/O).

The statsd stream listeners (TCP and Unix) and the admin console read
newline-terminated lines from connections that can send anything: one
framer serves both.  A line longer than the bound would pin memory until it
ends, if it ever does; it is replaced by a marker line, once, and the rest
of it is skipped as it arrives.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ['LineFramer']


class LineFramer:
    """Turns the chunks of one connection into complete lines.

    :param max_line_length: the longest line, in bytes, without its newline
    :param too_long: the line that stands in for a longer one (without a
        newline)
    :param hold: asked ``hold(held, wanted)`` before the partial last line
        goes from `held` to `wanted` bytes; when it says no, the line is
        treated as an over-long one (a bound shared by connections)
    """

    def __init__(
        self,
        max_line_length: int,
        too_long: bytes,
        hold: Callable[[int, int], bool] | None = None,
    ) -> None:
        self.max_line_length = max_line_length
        self._too_long = too_long
        self._hold = hold
        self._tail = b''
        self._discarding = False

    def _keep(self, tail: bytes) -> bool:
        """Hold `tail` as the partial line, if `hold` allows."""
        if self._hold is not None and not self._hold(len(self._tail), len(tail)):
            return False
        self._tail = tail
        return True

    def feed(self, data: bytes) -> bytes:
        """Take a chunk as it arrived; return the lines it completes.

        :param data: the bytes received
        :returns: complete lines, each ending with ``\\n``, except that the
            marker standing in for a line still arriving ends the result
            without one; ``b''`` for none.  The partial last line waits for
            the next chunk.
        """
        if self._discarding:
            # The rest of an over-long line, already stood in for.
            newline = data.find(b'\n')
            if newline < 0:
                return b''
            self._discarding = False
            data = data[newline + 1 :]
        buffer = self._tail + data if self._tail else data
        end = buffer.rfind(b'\n') + 1
        lines, tail = buffer[:end], buffer[end:]
        maximum = self.max_line_length
        # Only a chunk longer than the bound can hold an over-long line, so
        # the common small chunk skips the split.
        if len(lines) > maximum and max(map(len, lines.split(b'\n'))) > maximum:
            lines = b'\n'.join(
                self._too_long if len(line) > maximum else line
                for line in lines.split(b'\n')
            )
        if len(tail) > maximum or not self._keep(tail):
            # Stood in for now, so that the marker arrives with the lines
            # before it; the rest of the line is skipped as it arrives.
            lines += self._too_long
            self._discarding = True
            self._keep(b'')
        return lines

    def clear(self) -> None:
        """Forget the partial last line (after a failure, or a lost connection)."""
        self._keep(b'')

    def end(self) -> bytes:
        """The connection ended: return its last line if it had no newline.

        :returns: the line without a newline, or ``b''`` when there is none
            (or when it was an over-long one being skipped)
        """
        tail = self._tail
        self._keep(b'')
        if self._discarding:
            self._discarding = False
            return b''
        return tail
