"""Tornado mixins: an Application that owns a Connector and a RequestHandler that uses it."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import typing

from tornado import web

from sprockets_statsd._tornadosettings import resolve
from sprockets_statsd.connector import AbstractConnector, Connector
from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.timer import Timer

__all__ = ['Application', 'RequestHandler']

logger = logging.getLogger(__name__)


# Handlers of applications that do not mix in Application (or that have not
# started statsd) record into this one, so that handler code never checks.
_DISABLED = AbstractConnector()


class Application(web.Application):
    """Mix this into your :class:`tornado.web.Application` to send metrics to statsd.

    .. code-block:: python

       class App(sprockets_statsd.tornado.Application, web.Application):
           ...

    :param args: passed on to the next class
    :param settings: the application settings; the ``statsd`` key configures
        the connector (see :doc:`tornado` for every key and its default)
    :raises ~sprockets_statsd.errors.ConfigurationError: when a statsd
        setting or ``STATSD_*`` variable cannot be used, or when no prefix is
        configured; the message names the setting or variable

    The settings are read from ``settings['statsd']`` and the ``STATSD_*``
    environment variables when the application is created, and stored back
    (resolved, in a new dict) in ``self.settings['statsd']``.  Changing them
    afterwards has no effect.

    When the class it is mixed with has ``on_start_callbacks`` and
    ``on_shutdown_callbacks`` (as :class:`sprockets.http.app.Application`
    does), :meth:`start_statsd` and :meth:`stop_statsd` are added to them, so
    the connector starts and stops with the service.  Otherwise, call them
    yourself.
    """

    #: The connector that handlers record into: a
    #: :class:`~sprockets_statsd.connector.Connector`, or an
    #: :class:`~sprockets_statsd.connector.AbstractConnector` when metrics are
    #: disabled.  ``None`` before :meth:`start_statsd` and after
    #: :meth:`stop_statsd`.
    statsd_connector: AbstractConnector | None

    def __init__(self, *args: typing.Any, **settings: typing.Any) -> None:
        try:
            config = resolve(settings.get('statsd'), settings, os.environ)
        except ConfigurationError as error:
            # Under sprockets.http.run the traceback goes to stderr only; the
            # log line puts the reason where the service's logs are collected.
            logger.error('statsd is misconfigured: %s', error)
            raise
        settings['statsd'] = config.as_settings()
        super().__init__(*args, **settings)
        self._statsd_config = config
        self._statsd_stopping: asyncio.Task[None] | None = None
        self.statsd_connector = None
        on_start = getattr(self, 'on_start_callbacks', None)
        on_shutdown = getattr(self, 'on_shutdown_callbacks', None)
        if isinstance(on_start, list) and isinstance(on_shutdown, list):
            on_start.append(self.start_statsd)
            on_shutdown.append(self.stop_statsd)

    async def start_statsd(self, *args: object) -> None:
        """Create the connector and start it; return once it is running.

        :param args: ignored, so that the method can be a sprockets.http
            ``on_start`` callback (which is given the application and IOLoop)

        Does nothing if the connector is already running; waits for a
        :meth:`stop_statsd` in progress, then starts a new connector.
        """
        if self._statsd_stopping is not None:
            await asyncio.shield(self._statsd_stopping)
        if self.statsd_connector is not None:
            return
        config = self._statsd_config
        connector = config.create_connector()
        if isinstance(connector, Connector):
            logger.info('sending metrics to statsd at %s with prefix %r',
                        config.host if config.protocol in ('unix', 'unixgram')
                        else f'{config.protocol}://{config.host}:{config.port}',
                        config.prefix or '')
        else:
            logger.info('statsd metrics are disabled (%s)',
                        'no STATSD_HOST or statsd.host' if config.enabled
                        else 'STATSD_ENABLED or statsd.enabled is false')
        self.statsd_connector = connector
        await connector.start()

    async def stop_statsd(self, *args: object) -> None:
        """Flush the queued metrics, then stop and drop the connector.

        :param args: ignored, so that the method can be a sprockets.http
            ``on_shutdown`` callback (which is given the application)

        Returns once the connector has stopped (within its
        ``shutdown_timeout``).  Metrics recorded until then are still
        queued and sent.  Safe to call twice, also at the same time; does
        nothing if the connector was not started.
        """
        if self._statsd_stopping is None:
            connector = self.statsd_connector
            if connector is None:
                return
            self._statsd_stopping = asyncio.get_running_loop().create_task(
                self._stop_connector(connector)
            )
        # Shielded: a caller that is cancelled must not abandon the flush.
        await asyncio.shield(self._statsd_stopping)

    async def _stop_connector(self, connector: AbstractConnector) -> None:
        try:
            await connector.stop()
        finally:
            self.statsd_connector = None
            self._statsd_stopping = None


def _join(path: tuple[object, ...]) -> str:
    return '.'.join(segment if isinstance(segment, str) else str(segment)
                    for segment in path)


class RequestHandler(web.RequestHandler):
    """Mix this into your :class:`tornado.web.RequestHandler` to record metrics.

    .. code-block:: python

       class MyHandler(sprockets_statsd.tornado.RequestHandler, web.RequestHandler):
           ...

    Each request's duration is recorded as
    ``timers.<HandlerClass>.<METHOD>.<status>`` when it finishes.  Paths are
    given as segments that are joined with ``.``; a segment that is not a
    string is converted with ``str()``.  Nothing here raises for metric
    trouble, and everything works (doing nothing) when metrics are disabled
    or the application does not mix in :class:`Application`.
    """

    @property
    def statsd_connector(self) -> AbstractConnector:
        """The application's connector, or a null one when it has none."""
        connector = getattr(self.application, 'statsd_connector', None)
        return connector if isinstance(connector, AbstractConnector) else _DISABLED

    def record_timing(self, secs: float | datetime.timedelta, *path: object) -> None:
        """Record a duration under the timer `path`.

        :param secs: the duration in seconds (or a :class:`~datetime.timedelta`)
        :param path: the timer's path segments
        """
        self.statsd_connector.timing(_join(path), secs)

    def increase_counter(self, *path: object, amount: float = 1) -> None:
        """Add `amount` to the counter `path`.

        :param path: the counter's path segments
        :param amount: how much to add; negative to decrease
        """
        self.statsd_connector.incr(_join(path), amount)

    def execution_timer(self, *path: object) -> Timer:
        """Return a context manager that records how long its block takes.

        :param path: the timer's path segments

        .. code-block:: python

           with self.execution_timer('db', 'query'):
               rows = await self.fetch_rows()

        The duration is recorded even when the block raises.  The returned
        :class:`~sprockets_statsd.Timer` also tells the duration
        afterwards (``elapsed``, in seconds).
        """
        return Timer(lambda seconds: self.record_timing(seconds, *path))

    def on_finish(self) -> None:
        """Record the request's duration, then call the next ``on_finish``.

        The timer is ``timers.<HandlerClass>.<METHOD>.<status>`` and the
        value is :meth:`tornado.httputil.HTTPServerRequest.request_time`.
        """
        try:
            self.record_timing(self.request.request_time(), type(self).__name__,
                               self.request.method, self.get_status())
        finally:
            super().on_finish()
