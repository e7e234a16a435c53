"""A fake Graphite plaintext receiver for the server benchmark, run in a thread.

Strategy: both daemons flush ``name value timestamp`` lines to it over TCP
(ours on one long-lived connection, etsy statsd on a new connection per
flush).  It keeps a running sum of the values of every name under one
prefix (``stats_counts.load.`` by default), which is how the benchmark
counts the counter increments a daemon really received, and a record of
every flush, keyed by the flush's timestamp: when its first and last bytes
arrived, its lines and bytes, and the daemon's own ``statsd.*`` metrics.
Only lines under the prefix and internal lines are parsed one by one; the
rest are only counted, so a flush of 100k names costs the receiver a few
hundredths of a second.
"""

from __future__ import annotations

import dataclasses
import selectors
import socket
import threading
import time
from collections.abc import Callable

__all__ = ['CarbonReceiver', 'Flush', 'wait_for']

_INTERNAL = (b'stats.statsd.', b'statsd.', b'stats_counts.statsd.')
_BAD_LINES = b'stats_counts.statsd.bad_lines_seen '
_SEND_STATS = b'.graphiteStats.'


@dataclasses.dataclass
class Flush:
    """What arrived for one flush timestamp."""

    timestamp: int
    first: float  # time.monotonic() of the first chunk holding its lines
    last: float  # ... and of the last
    lines: int = 0
    bytes: int = 0
    internal: dict[str, float] = dataclasses.field(default_factory=dict)


class CarbonReceiver:
    """Accept Graphite plaintext connections on 127.0.0.1 and tally them.

    :param prefix: names whose values are summed into :attr:`total`
    """

    def __init__(self, prefix: bytes = b'stats_counts.load.') -> None:
        self._prefix = prefix
        self._lock = threading.Lock()
        self._listener = socket.create_server(('127.0.0.1', 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._tails: dict[socket.socket, bytes] = {}
        # The timestamp of the flush each connection is delivering.
        self._current: dict[socket.socket, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='carbon', daemon=True)
        self._total = 0.0
        self._bad_lines = 0.0
        self._flushes: dict[int, Flush] = {}
        self.connections = 0

    def start(self) -> None:
        """Start receiving in a daemon thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop the thread (within a second) and close every socket."""
        self._stop.set()
        self._thread.join(5.0)
        for sock in list(self._tails):
            sock.close()
        self._listener.close()
        self._selector.close()

    @property
    def total(self) -> float:
        """The sum of every value received under the prefix."""
        with self._lock:
            return self._total

    @property
    def bad_lines(self) -> float:
        """The sum of the daemon's own ``bad_lines_seen`` counts."""
        with self._lock:
            return self._bad_lines

    def flushes(self) -> list[Flush]:
        """The flushes seen so far, oldest first (copies)."""
        with self._lock:
            return [dataclasses.replace(f, internal=dict(f.internal))
                    for f in sorted(self._flushes.values(), key=lambda f: f.timestamp)]

    def flush_count(self) -> int:
        """How many distinct flush timestamps arrived."""
        with self._lock:
            return len(self._flushes)

    def reset(self) -> None:
        """Forget everything (between daemons)."""
        with self._lock:
            self._total = 0.0
            self._bad_lines = 0.0
            self._flushes.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                if key.data is None:
                    self._accept()
                else:
                    self._read(key.fileobj)  # type: ignore[arg-type]

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        self._tails[sock] = b''
        self._selector.register(sock, selectors.EVENT_READ, 'conn')
        self.connections += 1

    def _read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b''
        if not data:
            self._selector.unregister(sock)
            tail = self._tails.pop(sock)
            if tail:
                self._take(sock, [tail], len(tail))
            self._current.pop(sock, None)
            sock.close()
            return
        buffer = self._tails[sock] + data
        end = buffer.rfind(b'\n') + 1
        self._tails[sock] = buffer[end:]
        if end:
            self._take(sock, buffer[: end - 1].split(b'\n'), end)

    def _take(self, sock: socket.socket, lines: list[bytes], size: int) -> None:
        now = time.monotonic()
        prefix = self._prefix
        total = sum(float(line.split(b' ', 2)[1]) for line in lines if line.startswith(prefix))
        internal = [line for line in lines if line.startswith(_INTERNAL)]
        bad = sum(float(line.split(b' ', 2)[1]) for line in internal
                  if line.startswith(_BAD_LINES))
        # etsy statsd stamps its graphiteStats lines with the time it
        # connected, not the flush's: they belong to the connection's flush.
        metrics = [line for line in lines if _SEND_STATS not in line] or lines
        first_ts = _timestamp(metrics[0])
        last_ts = _timestamp(metrics[-1])
        with self._lock:
            self._total += total
            self._bad_lines += bad
            if first_ts == last_ts:
                self._note(first_ts, now, len(lines), size)
            else:
                # A chunk that straddles two flushes: attribute line by line.
                for line in metrics:
                    self._note(_timestamp(line), now, 1, len(line) + 1)
            current = self._current[sock] = last_ts
            for line in internal:
                name, value, ts = line.split(b' ', 2)
                flush = self._flushes.get(current if _SEND_STATS in name else int(ts))
                if flush is not None:
                    flush.internal[name.decode()] = float(value)

    def _note(self, timestamp: int, now: float, lines: int, size: int) -> None:
        flush = self._flushes.get(timestamp)
        if flush is None:
            flush = self._flushes[timestamp] = Flush(timestamp, now, now)
        flush.last = now
        flush.lines += lines
        flush.bytes += size


def _timestamp(line: bytes) -> int:
    try:
        return int(line.rsplit(b' ', 1)[1])
    except (IndexError, ValueError):
        return 0


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `condition` until it is true or `timeout` seconds pass.

    :returns: whether the condition became true
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()
