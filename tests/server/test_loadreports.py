"""The load sink's frames and /N answers: what a new frame keeps ready."""

from __future__ import annotations

import asyncio
import json
import random

from sprockets_statsd.server._loadreports import LoadReports
from sprockets_statsd.server.aggregator import Aggregator
from sprockets_statsd.server.config import AggregatorConfig
from sprockets_statsd.server.frames import FrameStore, Window
from sprockets_statsd.server.http import _report
from tests.server.helpers import DEFAULT_TIMEOUT


def plain(frames: FrameStore, count: int, *, full: bool = False) -> bytes:
    """The answer for /count with every frame summed anew, oldest first."""
    window = Window(frames.window(count, full=full).frames)  # no kept sums
    last = int(frames.frame_start(frames.current_index()))
    return json.dumps(_report(window, last), separators=(',', ':')).encode()


async def fed_frame_by_frame(
    rng: random.Random, fraction_at: int | None,
) -> tuple[FrameStore, LoadReports]:
    """A load sink nobody asked, fed a flush per frame for 24 frames: whole
    counts, and fractions (a sample rate) in the frame `fraction_at`.
    Its clock is left within the last frame."""
    now = [6_000.0]
    frames = FrameStore(60.0, clock=lambda: now[0])
    reports = LoadReports(frames)
    aggregator = Aggregator(AggregatorConfig())
    for index in range(24):
        now[0] += 60
        aggregator.receive('\n'.join(
            f'c{rng.randrange(40)}:{rng.randrange(-3, 1000)}|c' for _ in range(30)).encode())
        if index == fraction_at:
            aggregator.receive(b'c3:1|c|@0.3\nc41:0.1|c')
        reports.submit(aggregator.flush(now[0]))
        await asyncio.wait_for(reports.settled(), DEFAULT_TIMEOUT)
        complete = tuple((f.index, f.flushes) for f in frames.frames()[:-1])
        assert len(complete) < 2 or frames.sums.get(complete) is not None
    now[0] += 30
    return frames, reports


async def test_sums_kept_from_the_start_give_the_answers_of_summing_anew() -> None:
    """A load sink nobody asks keeps /15's complete frames summed from its
    start (rolled on while counts are whole, summed again once a fraction
    comes in, rolled on again once it has left), its names sorted but not
    written as JSON, and no sum kept but the latest; its first /15 is the very bytes of
    every frame summed anew, oldest first."""
    rng = random.Random(13)
    for fraction_at in (None, 4, 9, 17):
        frames, reports = await fed_frame_by_frame(rng, fraction_at)
        # Nobody asked: the names are sorted ahead, but not written.
        assert not reports._layouts._kept.items()
        assert reports._layouts._ahead.items()
        # Only the sum rolled on last: those it was rolled from are dropped.
        assert len(frames.sums._heads.items()) == 1
        assert await reports.load(15) == plain(frames, 15)
        assert await reports.load(15, full=True) == plain(frames, 15, full=True)
        await asyncio.wait_for(reports.close(DEFAULT_TIMEOUT), DEFAULT_TIMEOUT)


async def test_a_first_answer_of_a_frame_adds_only_its_newest_frame_to_the_kept_sum() -> None:
    """The first /15 of a server nobody asked before uses the sum of the
    complete frames kept at the new frame, the same list of totals, not a
    sum made anew."""
    now = [6_000.0]
    frames = FrameStore(60.0, clock=lambda: now[0])
    reports = LoadReports(frames)
    aggregator = Aggregator(AggregatorConfig())
    for value in range(1, 6):
        now[0] += 60
        aggregator.receive(b'hits:%d|c\nmore.%d:1|c' % (value, value))
        reports.submit(aggregator.flush(now[0]))
        await asyncio.wait_for(reports.settled(), DEFAULT_TIMEOUT)
    complete = tuple((f.index, f.flushes) for f in frames.frames()[:-1])
    kept = frames.sums.get(complete)
    assert kept is not None
    assert frames.window(15).keep_sums() is kept
    assert await reports.load(15) == plain(frames, 15)
    assert json.loads(await reports.load(15))['Stat']['hits'] == 15
    await asyncio.wait_for(reports.close(DEFAULT_TIMEOUT), DEFAULT_TIMEOUT)
