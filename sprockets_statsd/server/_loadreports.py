"""The load sink's frames and its ``/N`` answers, made off the event loop.

Strategy: each flush is merged into a copy of the current frame in a worker
thread, one flush after the other, and the event loop only swaps the copy
in.  An answer is rendered in a worker thread too, once per flush and
frame, and shared by every request for it until then.  What answers share
from one frame to the next is made in the thread when a frame begins, so
that no answer has to: from the server's start, the sum of ``/15``'s
complete frames (rolled on from the last frame's, a tenth of a second at
500k counters) and its names sorted; once some ``/N`` has been asked for,
the sums of the windows asked for in the last frame and the JSON text of
``/15``'s names too (tens of MB that a server nobody queries never holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math

from sprockets_statsd._throttle import Throttle
from sprockets_statsd.server._countersums import MAX_KEPT_SUMS, KeptSums
from sprockets_statsd.server._loadjson import Layouts, prepare, render
from sprockets_statsd.server._memory import released
from sprockets_statsd.server._window import Window
from sprockets_statsd.server.aggregator import Snapshot
from sprockets_statsd.server.frames import FrameStore

__all__ = ['MAX_WAITING_MERGES', 'LoadReports']

logger = logging.getLogger(__name__)

# Load reports (distinct N and /full) kept per flush: each may be tens of
# MB with hundreds of thousands of keys, and a dashboard asks for one or two.
_MAX_REPORTS = 4
#: Flushes waiting to be merged into the frames beyond which a flush is left
#: out of them (counted and logged): each holds a flush's mappings, tens of
#: MB with hundreds of thousands of keys, and the merges keep up unless the
#: machine is overloaded or flushes come every fraction of a second.
MAX_WAITING_MERGES = 4


def _prepare(
    sums: KeptSums, default: Window, asked: list[Window], layouts: Layouts, queried: bool,
) -> None:
    """What the answers of a new frame share, made ahead of them.

    :param sums: where the sums are kept; those the windows have left,
        rolled on now, are dropped
    :param default: ``/15``, whose complete frames' sum and sorted names
        are always kept
    :param asked: the other windows asked for in the last frame
    :param layouts: where ``/15``'s names are laid out
    :param queried: whether any ``/N`` has been asked for: only then is
        the text of ``/15``'s names written ahead too
    """
    for window in asked:
        window.keep_sums()
    prepare(default, layouts, texts=queried)
    held = [window.frames[0].index for window in (default, *asked) if window.frames]
    if held:
        sums.forget_before(min(held))


class LoadReports:
    """The frames fed by every flush and the ``/N`` answers made of them.

    Feed and ask it on the event loop; the work is done in worker threads.

    :param frames: the frames, fed by :meth:`submit`
    """

    def __init__(self, frames: FrameStore) -> None:
        self.frames = frames
        # Answers of the current flush and frame, done or under way.
        self._reports: dict[tuple[int, bool, int, int], asyncio.Future[bytes]] = {}
        self._layouts = Layouts()
        # The windows asked for since the current frame began, oldest first,
        # and whether any /N has been asked for at all.
        self._asked: dict[tuple[int, bool], None] = {}
        self._queried = False
        # The latest flush being merged into the frames (or merged).
        self._merging: asyncio.Task[None] | None = None
        self._waiting = 0
        #: Flushes left out of the frames because MAX_WAITING_MERGES were
        #: still waiting to be merged.
        self.flushes_left_out = 0
        self._throttle = Throttle(logger)

    async def load(self, count: int, *, full: bool = False) -> bytes:
        """The JSON of :func:`.load_report`, once per flush and frame.

        Computed in a worker thread from views of the frames taken now
        (hundreds of thousands of keys take a second), and shared: every
        request for the same `count` and `full` until the next flush, or
        until the clock enters a new frame, gets the same bytes.

        :raises ValueError: when `count` is out of range
        """
        await self.settled()
        frames = self.frames
        current = frames.current_index()
        key = (count, full, frames.generation, current)
        future = self._reports.get(key)
        if future is None:
            window = frames.window(count, full=full)  # ValueError: out of range
            self._queried = True
            self._asked[count, full] = None
            if len(self._asked) > MAX_KEPT_SUMS:
                del self._asked[next(iter(self._asked))]  # the oldest
            if any(k[2:] != key[2:] for k in self._reports):
                self._reports.clear()  # a new flush or frame: start over
            while len(self._reports) >= _MAX_REPORTS:
                del self._reports[next(iter(self._reports))]  # the oldest
            future = self._reports[key] = asyncio.get_running_loop().run_in_executor(
                None, released, render, window, math.floor(frames.frame_start(current)),
                self._layouts)
        try:
            # Shielded: a client that goes away must not cancel the others'.
            return await asyncio.shield(future)
        except Exception:
            if self._reports.get(key) is future:
                del self._reports[key]  # let the next request try again
            raise

    def submit(self, snapshot: Snapshot) -> None:
        """Merge one flush into the frames, in a worker thread.

        A copy of the current frame with the flush merged in (hundreds of
        thousands of counters take a few hundred ms), one flush after the
        other; the event loop only swaps the copy in.  Without a running
        event loop, merged here.  Never raises: a flush that cannot be
        merged is logged, and the server and the other sinks carry on.

        :param snapshot: the flush, from :meth:`.Aggregator.flush`
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop to keep free: merge it here
            try:
                self.frames.add(snapshot)
            except Exception:
                logger.exception('the load sink could not take in a flush')
            return
        if self._waiting >= MAX_WAITING_MERGES:
            self.flushes_left_out += 1
            self._throttle.warning(
                'behind', 'the load sink is %d flushes behind: a flush is left out of '
                'its frames (%d so far); flush less often (-f) or hold fewer names',
                self._waiting, self.flushes_left_out)
            return
        index = self.frames.current_index()
        self._waiting += 1
        self._merging = loop.create_task(self._merge(snapshot, index, self._merging))

    async def _merge(
        self, snapshot: Snapshot, index: int, previous: asyncio.Task[None] | None,
    ) -> None:
        try:
            if previous is not None:
                await previous  # never raises but CancelledError, which ends this too
            frames, newest = self.frames, self.frames.newest()
            loop = asyncio.get_running_loop()
            try:
                frame = await loop.run_in_executor(
                    None, released, frames.merged, snapshot, index, newest)
            except Exception:
                logger.exception('the load sink could not take in a flush')
                return
            frames.commit(frame)
        finally:
            self._waiting -= 1
        if newest is not None and frame.index > newest.index:
            # A new frame: the windows asked for in the last one now have
            # other complete frames, whose sums take long; made now, in
            # the thread, rather than by the next answer.  So is the sum
            # of /N at the frame count (/15), asked for or not, from the
            # server's start: rolled on from the last frame's, a tenth of
            # a second of CPU per frame at 500k counters, holding ~35 MB;
            # and its names are sorted (~8 MB).  Their text (~40 MB) is
            # written too once some /N has been asked for, so that its
            # next answer costs only the answer.
            default = (frames.frame_count, False)
            asked = [key for key in self._asked if key != default][1 - MAX_KEPT_SUMS:]
            windows = [frames.window(count, full=full) for count, full in asked]
            self._asked.clear()
            try:
                await loop.run_in_executor(
                    None, released, _prepare, frames.sums, frames.window(frames.frame_count),
                    windows, self._layouts, self._queried)
            except Exception:
                logger.exception('the load sink could not sum its frames')

    async def settled(self) -> None:
        """Wait until every flush submitted so far is in the frames."""
        if self._merging is not None:
            # Shielded: a client that goes away must not cancel the merge.
            await asyncio.shield(self._merging)

    async def close(self, timeout: float) -> None:
        """Wait for the flushes submitted to be in the frames, up to `timeout`.

        :param timeout: seconds to wait for the flushes still being merged
        """
        if self._merging is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._merging), timeout)
