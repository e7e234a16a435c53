"""The processor's queue: bounded, with a bulk interface for the hot path.

:class:`PayloadQueue` is an :class:`asyncio.Queue` of formatted payloads
whose :meth:`~PayloadQueue.offer` never raises to say "full" and whose
:meth:`~PayloadQueue.take` empties a batch at once, while ``task_done``
and ``join`` keep their meaning whichever way payloads come and go.
"""

from __future__ import annotations

import asyncio
import collections

__all__ = ['DEFAULT_MAX_QUEUE_SIZE', 'PayloadQueue']

#: Default bound of the queue.  A payload is about 100 bytes, so the queue
#: holds at most ~1 MiB; that covers a 10 second outage of a service sending
#: 1,000 metrics a second, and beyond that dropping (and counting) is better
#: than growing without bound.
DEFAULT_MAX_QUEUE_SIZE = 10_000


class PayloadQueue(asyncio.Queue[bytes]):
    """An :class:`asyncio.Queue` of payloads with a cheap bulk interface for the processor.

    :meth:`offer` and :meth:`take` exist because the metric hot path runs
    hundreds of thousands of times a second: ``put_nowait`` makes five
    method calls and raises to say "full", ``offer`` makes none and
    returns a flag.  Everything else is :class:`asyncio.Queue`'s, with
    one change of bookkeeping so that :meth:`task_done` and :meth:`join`
    stay true whichever way payloads come and go: a payload is unfinished
    from the moment it is queued (by any method) until :meth:`task_done`
    is called for it after it was removed (by any method).  The processor
    calls :meth:`task_done` for every payload it takes, once it has handed
    it on, so ``await queue.join()`` waits until everything queued so far
    was sent, kept for the next connection, or dropped and counted.

    :meth:`offer` and :meth:`take` rely on attributes that
    :class:`asyncio.Queue` has kept since Python 3.4 (``_queue``,
    ``_getters``, ``_putters``, ``_wakeup_next``, ``_finished``); the
    test suite exercises them on every supported version.
    """

    _maxsize: int
    _queue: collections.deque[bytes]
    _getters: collections.deque[asyncio.Future[None]]
    _putters: collections.deque[asyncio.Future[None]]
    _finished: asyncio.Event

    # Payloads removed but not yet marked done.  The unfinished ones are
    # these plus those still queued, so queuing costs no bookkeeping at all.
    _taken = 0

    def offer(self, payload: bytes) -> bool:
        """Append `payload` unless the queue is full; never blocks or raises."""
        queue = self._queue
        if len(queue) >= self._maxsize:
            return False
        queue.append(payload)
        if self._getters:
            self._wakeup_next(self._getters)  # type: ignore[attr-defined]
        return True

    def take(self, limit: int) -> list[bytes]:
        """Remove and return up to `limit` payloads without waiting.

        Call :meth:`task_done` for them (``task_done(len(payloads))``)
        once they are handled.
        """
        queue = self._queue
        if len(queue) <= limit:
            items = list(queue)
            queue.clear()
        else:
            popleft = queue.popleft
            items = [popleft() for _ in range(limit)]
        self._taken += len(items)
        putters = self._putters
        for _ in range(min(len(items), len(putters))):
            self._wakeup_next(putters)  # type: ignore[attr-defined]
        return items

    def _get(self) -> bytes:
        # Behind get() and get_nowait().
        self._taken += 1
        return self._queue.popleft()

    def task_done(self, count: int = 1) -> None:
        """Mark `count` removed payloads as handled.

        :raises ValueError: when more payloads are marked than were removed
        """
        if count > self._taken:
            raise ValueError('task_done() called too many times')
        self._taken -= count
        if not self._taken and not self._queue:
            self._finished.set()

    async def join(self) -> None:
        """Wait until every payload queued so far was removed and marked done."""
        while self._taken or self._queue:
            self._finished.clear()
            await self._finished.wait()

    @property
    def unfinished(self) -> int:
        """Payloads queued or removed and not yet marked done."""
        return self._taken + len(self._queue)
