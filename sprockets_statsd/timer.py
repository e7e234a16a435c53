"""Timer: measures a duration and reports it in seconds, as a context manager or decorator."""

from __future__ import annotations

import functools
import inspect
import time
import typing
from collections.abc import Callable

__all__ = ['Timer']

_F = typing.TypeVar('_F', bound=Callable[..., typing.Any])


class Timer:
    """Measures a duration with a monotonic clock and reports it in seconds.

    :param report: called with the elapsed seconds when the timer stops
    :param clock: the clock, :func:`time.perf_counter` unless a test injects one

    Use it as a context manager (the block is timed), as a decorator of a
    plain or ``async`` function (every call is timed separately, so one
    decorated function is safe to call from many threads and tasks at
    once), or through :meth:`start` / :meth:`stop` / :meth:`send`.

    The object form keeps state, so a single :class:`Timer` must not be
    started from two threads at once; the decorator form keeps none.
    """

    def __init__(
        self,
        report: Callable[[float], None],
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._report = report
        self._clock = clock
        self._start: float | None = None
        self._sent = False
        #: The last measured duration in seconds, ``None`` before the first stop.
        self.elapsed: float | None = None

    @property
    def ms(self) -> float | None:
        """The last measured duration in milliseconds (``None`` if none yet)."""
        return None if self.elapsed is None else self.elapsed * 1000.0

    def start(self) -> Timer:
        """Start (or restart) timing and return the timer."""
        self.elapsed = None
        self._sent = False
        self._start = self._clock()
        return self

    def stop(self, send: bool = True) -> Timer:
        """Stop timing and, unless `send` is false, report the duration.

        :raises RuntimeError: if the timer was not started
        """
        if self._start is None:
            raise RuntimeError('timer.stop() called before timer.start()')
        self.elapsed = self._clock() - self._start
        self._start = None
        if send:
            self.send()
        return self

    def send(self) -> None:
        """Report the measured duration.

        :raises RuntimeError: if nothing was measured yet, or it was already sent
        """
        if self.elapsed is None:
            raise RuntimeError('timer.send() called with no measurement')
        if self._sent:
            raise RuntimeError('timer.send() called twice for one measurement')
        self._sent = True
        self._report(self.elapsed)

    def __enter__(self) -> Timer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __call__(self, func: _F) -> _F:
        """Decorate `func` so that each call is timed on its own."""
        report, clock = self._report, self._clock

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def timed_coroutine(*args: typing.Any, **kwargs: typing.Any) -> typing.Any:
                start = clock()
                try:
                    return await func(*args, **kwargs)
                finally:
                    report(clock() - start)

            return typing.cast(_F, timed_coroutine)

        @functools.wraps(func)
        def timed(*args: typing.Any, **kwargs: typing.Any) -> typing.Any:
            start = clock()
            try:
                return func(*args, **kwargs)
            finally:
                report(clock() - start)

        return typing.cast(_F, timed)
