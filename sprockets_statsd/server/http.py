"""The load sink's HTTP endpoints, served by Tornado on the server's event loop.

``/N`` and ``/N/full`` (gstatsd's load sink, JSON), ``/`` (the overview
page), ``/metrics`` (Prometheus) and ``/health``.  Every handler runs on
the event loop that also receives and flushes, so a reply never sees a
half-merged flush; the Prometheus text and the ``/N`` reports are rendered
in a thread, from state that each flush replaces whole, and each flush is
merged into the frames in a thread too, into a copy that the loop swaps in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import typing

import tornado.httpserver
import tornado.httputil
import tornado.web
from prometheus_client import CollectorRegistry

from sprockets_statsd.server._loadjson import number
from sprockets_statsd.server._loadreports import MAX_WAITING_MERGES, LoadReports
from sprockets_statsd.server._window import Window
from sprockets_statsd.server.aggregator import Snapshot
from sprockets_statsd.server.binding import ListeningSockets, format_address
from sprockets_statsd.server.config import DEFAULT_LOAD_HOST, DEFAULT_LOAD_PORT
from sprockets_statsd.server.frames import FrameStore
from sprockets_statsd.server.overview import DEFAULT_REFRESH, MAX_ROWS, matches, render_overview
from sprockets_statsd.server.prometheus import CONTENT_TYPE, StatsdCollector
from sprockets_statsd.server.sinks import Sink
from sprockets_statsd.server.status import ServerStatus

__all__ = [
    'DEFAULT_LOAD_HOST',
    'DEFAULT_LOAD_PORT',
    'MAX_WAITING_MERGES',
    'QueryService',
    'load_report',
]

logger = logging.getLogger(__name__)

# Requests are tiny GETs: a few KB of headers, no body to speak of.
_MAX_HEADER_SIZE = 16 * 1024
# What Tornado itself reads before it gives up and closes the connection
# without a reply; between the two bounds a request gets a 414 or 431.
_HARD_HEADER_SIZE = 64 * 1024
_MAX_BODY_SIZE = 64 * 1024
_IDLE_TIMEOUT = 60.0
# A filter longer than any sensible name is cut, not refused.
_MAX_FILTER = 256
# Bytes of the /metrics body handed to the connection at a time.
_WRITE_CHUNK = 256 * 1024


def load_report(frames: FrameStore, count: int, *, full: bool = False) -> dict[str, typing.Any]:
    """gstatsd's load sink answer for ``/count`` (or ``/count/full``).

    :param frames: the frame store
    :param count: frames to aggregate, 1 to the frame count
    :param full: only complete frames, the current one left out
    :returns: ``{"last_frame_time": <start of the current frame>,
        "Stat": {name: value}}``
    :raises ValueError: when `count` is out of range
    """
    return _report(
        frames.window(count, full=full),
        math.floor(frames.frame_start(frames.current_index())),
    )


def _report(window: Window, last_frame_time: int) -> dict[str, typing.Any]:
    stat = window.stat()
    return {
        'last_frame_time': last_frame_time,
        'Stat': {name: number(stat[name]) for name in sorted(stat)},
    }


class _Handler(tornado.web.RequestHandler):
    """Shared by every endpoint: no caching, the service at hand."""

    service: QueryService

    def initialize(self, service: QueryService) -> None:
        self.service = service

    def set_default_headers(self) -> None:
        self.set_header('Cache-Control', 'no-store')


class _LoadHandler(_Handler):
    async def get(self, count: str, full: str | None = None) -> None:
        frames = self.service.frames
        self.set_header('Content-Type', 'application/json')
        try:
            body = await self.service.load(int(count), full=bool(full))
        except ValueError:
            self.set_status(400)
            self.finish(json.dumps(
                {'error': f'N must be from 1 to {frames.frame_count}'}, separators=(',', ':')))
            return
        await _send(self, body)


async def _send(handler: tornado.web.RequestHandler, body: bytes) -> None:
    """Finish with `body`, handed to the connection in pieces."""
    handler.set_header('Content-Length', len(body))
    # In pieces: Tornado would otherwise join its buffer into one more
    # copy of a body that may be tens of MB, once per request.
    view = memoryview(body)
    for start in range(0, len(body), _WRITE_CHUNK):
        handler.write(bytes(view[start:start + _WRITE_CHUNK]))
        await handler.flush()
    await handler.finish()


class _OverviewHandler(_Handler):
    async def get(self) -> None:
        await self.service.settled()
        frames = self.service.frames
        text = self.get_argument('filter', '')[:_MAX_FILTER]
        page = render_overview(
            frames.series(lambda key: matches(key, text), MAX_ROWS),
            filter_text=text,
            frame_length=frames.frame_length,
            frame_count=frames.frame_count,
            refresh=self.service.refresh,
        )
        self.set_header('Content-Type', 'text/html; charset=utf-8')
        self.finish(page)


class _MetricsHandler(_Handler):
    async def get(self) -> None:
        body = await self.service.exposition()
        self.set_header('Content-Type', CONTENT_TYPE)
        await _send(self, body)


class _HealthHandler(_Handler):
    def get(self) -> None:
        status = self.service.status
        self.set_header('Content-Type', 'text/plain; charset=utf-8')
        if not status.healthy:
            self.set_status(503)
        self.finish(status.health + '\n')


class _Refusal(tornado.web.RequestHandler):
    """Answers a request that is too large with its status and no body."""

    def initialize(self, status: int) -> None:
        self._refusal = status

    def prepare(self) -> None:
        self.set_status(self._refusal)
        self.set_header('Content-Type', 'text/plain; charset=utf-8')
        self.finish(f'{self._refusal} {self._reason}\n')  # Tornado's reason phrase


class _Application(tornado.web.Application):
    """Refuses requests beyond the header bound with a status, not a hang-up.

    Tornado closes the connection without a word when a request's head
    exceeds its own limit; that limit is set higher, and requests between
    :data:`_MAX_HEADER_SIZE` and it get ``414 URI Too Long`` (a long query
    string) or ``431 Request Header Fields Too Large``.
    """

    def find_handler(
        self, request: tornado.httputil.HTTPServerRequest, **kwargs: typing.Any
    ) -> tornado.web._HandlerDelegate:
        if len(request.uri or '') > _MAX_HEADER_SIZE:
            return self.get_handler_delegate(request, _Refusal, {'status': 414})
        size = sum(len(k) + len(v) + 4 for k, v in request.headers.get_all())
        if size > _MAX_HEADER_SIZE:
            return self.get_handler_delegate(request, _Refusal, {'status': 431})
        return super().find_handler(request, **kwargs)


def _log_request(handler: tornado.web.RequestHandler) -> None:
    # Tornado logs every request at INFO; queries are routine, so DEBUG.
    request = handler.request
    logger.debug(
        '%d %s %s %.1f ms',
        handler.get_status(),
        request.method,
        request.uri,
        request.request_time() * 1000,
    )


class QueryService(ListeningSockets, Sink):
    """The load sink: takes in every flush and serves it over HTTP.

    Its endpoints are served on one or more addresses, bound before
    :meth:`start`.

    :param frames: the one-minute frames, fed by the server's flushes
    :param collector: the Prometheus collector, fed likewise
    :param status: the server's health and statistics
    :param refresh: seconds between reloads of the overview page
    """

    def __init__(
        self,
        frames: FrameStore,
        collector: StatsdCollector,
        status: ServerStatus,
        *,
        refresh: float = DEFAULT_REFRESH,
    ) -> None:
        self.frames = frames
        self.collector = collector
        self.status = status
        self.refresh = refresh
        # One registry per server: the global one would mix servers that
        # share a process (tests, embedding) and the client library's own.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        spec = {'service': self}
        self.application = _Application(
            [
                (r'/', _OverviewHandler, spec),
                (r'/([0-9]{1,6})', _LoadHandler, spec),
                (r'/([0-9]{1,6})/(full)', _LoadHandler, spec),
                (r'/metrics', _MetricsHandler, spec),
                (r'/health', _HealthHandler, spec),
            ],
            log_function=_log_request,
        )
        super().__init__()
        self._server: tornado.httpserver.HTTPServer | None = None
        self._exposition: tuple[int, bytes] | None = None
        self._rendering: tuple[int, asyncio.Future[bytes]] | None = None
        self._totals: asyncio.Future[object] | None = None
        #: The frames' flushes and /N answers.
        self.reports = LoadReports(frames)

    @property
    def flushes_left_out(self) -> int:
        """Flushes left out of the frames because :data:`MAX_WAITING_MERGES`
        were still waiting to be merged."""
        return self.reports.flushes_left_out

    async def exposition(self) -> bytes:
        """The Prometheus text of the latest flush.

        Rendered in a worker thread, since a hundred thousand keys take
        a second of pure Python that must not stall receiving (the
        collector's state is immutable per flush, so the thread reads a
        consistent one), and once per flush: scrapes in between, and
        scrapes that arrive while it is being rendered, share it.
        """
        generation = self.collector.generation
        cached = self._exposition
        if cached is not None and cached[0] == generation:
            return cached[1]
        rendering = self._rendering
        if rendering is None or rendering[0] != generation:
            future = asyncio.get_running_loop().run_in_executor(
                None, self.collector.exposition
            )
            rendering = self._rendering = (generation, future)
        # Shielded: a scraper that goes away must not cancel the others'.
        body = await asyncio.shield(rendering[1])
        if self._rendering is rendering:
            self._rendering = None
        # Filed under the generation seen before rendering: if a flush came
        # in meanwhile, the next scrape renders again.
        if self._exposition is None or self._exposition[0] < generation:
            self._exposition = (generation, body)
        return body

    async def load(self, count: int, *, full: bool = False) -> bytes:
        """The JSON of :func:`load_report`, once per flush and frame
        (:meth:`.LoadReports.load`): computed in a worker thread, shared by
        the requests for it.

        :raises ValueError: when `count` is out of range
        """
        return await self.reports.load(count, full=full)

    @property
    def name(self) -> str:
        """``load sink http://host:port/`` for each bound address."""
        return ', '.join(f'load sink http://{format_address(a)}/' for a in self.addresses)

    def submit(self, snapshot: Snapshot) -> None:
        """Merge one flush into the frames and the Prometheus collector.

        The frames take it in a worker thread (:meth:`.LoadReports.submit`);
        the collector's running totals are merged in a worker thread as
        well.  Never raises: a flush that cannot be merged is logged, and
        the server and the other sinks carry on.

        :param snapshot: the flush, from :meth:`.Aggregator.flush`
        """
        try:
            self.collector.add(snapshot)
        except Exception:
            logger.exception('the load sink could not take in a flush')
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # no event loop to keep free: merged by a scrape
            loop = None
        # The collector's totals are merged in a worker thread too (as
        # long), one merge at a time; a scrape merges what still waits.
        if loop is not None and (self._totals is None or self._totals.done()):
            self._totals = loop.run_in_executor(None, self.collector.merge)
        self.reports.submit(snapshot)

    async def settled(self) -> None:
        """Wait until every flush submitted so far is in the frames."""
        await self.reports.settled()

    async def close(self, timeout: float) -> None:
        """Stop serving, once the flushes submitted are in the frames.

        :param timeout: seconds to wait for the flushes still being merged
        """
        await self.reports.close(timeout)
        await self.stop()

    def start(self) -> None:
        """Serve the bound sockets on the running event loop."""
        self._server = tornado.httpserver.HTTPServer(
            self.application,
            max_header_size=_HARD_HEADER_SIZE,
            max_body_size=_MAX_BODY_SIZE,
            idle_connection_timeout=_IDLE_TIMEOUT,
        )
        self._server.add_sockets(self._sockets)

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is None:
            for sock in self._sockets:
                sock.close()
            return
        server, self._server = self._server, None
        server.stop()
        await server.close_all_connections()
