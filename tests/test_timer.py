"""Tests of Timer: the object API, the decorator, and where it can be imported from."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

import sprockets_statsd
import sprockets_statsd.connector
import sprockets_statsd.statsd
from sprockets_statsd.timer import Timer


def test_timer_keeps_its_old_import_paths() -> None:
    """Timer moved to its own module; the 1.0 and 2.0 import paths give the same class."""
    assert sprockets_statsd.connector.Timer is Timer
    assert sprockets_statsd.statsd.Timer is Timer
    assert sprockets_statsd.Timer is Timer


def test_synchronous_client_does_not_import_asyncio() -> None:
    """Importing and using the synchronous client leaves asyncio unimported."""
    code = (
        'import sys\n'
        'from sprockets_statsd.client import StatsClient\n'
        'from sprockets_statsd import Timer\n'
        'client = StatsClient("127.0.0.1", 9)\n'
        'client.incr("x"); client.gauge("g", 1)\n'
        'with client.timer("t"): pass\n'
        'client.close()\n'
        'print(sorted(m for m in sys.modules if m.split(".")[0] == "asyncio"))\n'
    )
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == '[]'


def test_the_asyncio_names_are_still_attributes_of_the_package() -> None:
    """Connector and friends are imported on first use, not at import time."""
    assert sprockets_statsd.Connector is sprockets_statsd.connector.Connector
    with pytest.raises(AttributeError, match='no_such_name'):
        _ = sprockets_statsd.no_such_name  # type: ignore[attr-defined]


def test_timer_object_api() -> None:
    """start/stop/send follow pystatsd's rules and report seconds."""
    ticks = iter([1.0, 1.25, 2.0, 2.5])
    reported: list[float] = []
    timer = Timer(reported.append, clock=lambda: next(ticks))
    with pytest.raises(RuntimeError):
        timer.stop()
    with pytest.raises(RuntimeError):
        timer.send()
    assert timer.ms is None
    timer.start().stop()
    assert reported == [0.25]
    assert timer.ms == 250.0
    with pytest.raises(RuntimeError):
        timer.send()
    timer.start().stop(send=False)
    assert reported == [0.25]
    timer.send()
    assert reported == [0.25, 0.5]


def test_timer_decorator_is_thread_safe() -> None:
    """Each call of a decorated function is timed on its own, from many threads."""
    reported: list[float] = []
    lock = threading.Lock()

    def report(seconds: float) -> None:
        with lock:
            reported.append(seconds)

    @Timer(report)
    def work() -> None:
        pass

    threads = [threading.Thread(target=lambda: [work() for _ in range(50)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(reported) == 400
    assert all(s >= 0 for s in reported)
