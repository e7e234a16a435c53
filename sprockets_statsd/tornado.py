"""Tornado mixins: an Application that owns a Connector and a RequestHandler that uses it."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import math
import os
import socket
import typing
from collections.abc import Mapping

from tornado import web

from sprockets_statsd._booleans import parse_boolean
from sprockets_statsd._dialects import DIALECTS, TagSet
from sprockets_statsd._ports import check_port
from sprockets_statsd.connector import AbstractConnector, Connector
from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.timer import Timer
from sprockets_statsd.transports import unix_socket

__all__ = ['Application', 'RequestHandler']

logger = logging.getLogger(__name__)


# The Connector tells a Unix socket by its host and ignores ip_protocol then.
_IP_PROTOCOLS = {'tcp': socket.IPPROTO_TCP, 'udp': socket.IPPROTO_UDP,
                 'unix': socket.IPPROTO_TCP, 'unixgram': socket.IPPROTO_UDP}

# Optional settings handed to the Connector, with the type each must have.
# ``reconnect_sleep`` is the Processor's own name for ``reconnect_timeout``;
# it is accepted because 1.0 passed unknown keys through to the Processor.
_NUMBER_OPTIONS: Mapping[str, type] = {
    'reconnect_timeout': float,
    'reconnect_sleep': float,
    'wait_timeout': float,
    'shutdown_timeout': float,
    'max_queue_size': int,
    'max_udp_size': int,
}
_KNOWN_SETTINGS = ('enabled', 'host', 'port', 'prefix', 'protocol', *_NUMBER_OPTIONS,
                   'tag_dialect', 'tags')

# Handlers of applications that do not mix in Application (or that have not
# started statsd) record into this one, so that handler code never checks.
_DISABLED = AbstractConnector()


@dataclasses.dataclass(frozen=True)
class _Config:
    """The statsd settings of one application, resolved and checked."""

    enabled: bool
    host: str | None
    port: int
    protocol: str
    prefix: str | None
    options: Mapping[str, typing.Any]

    def as_settings(self) -> dict[str, typing.Any]:
        """The resolved values, as they appear in ``settings['statsd']``."""
        return {'enabled': self.enabled, 'host': self.host, 'port': self.port,
                'protocol': self.protocol, 'prefix': self.prefix, **self.options}

    def create_connector(self) -> AbstractConnector:
        """A new Connector, or a null connector when metrics are off."""
        if not self.enabled or self.host is None:
            return AbstractConnector()
        options = dict(self.options)
        if 'reconnect_timeout' in options:
            options['reconnect_sleep'] = options.pop('reconnect_timeout')
        return Connector(self.host, self.port, prefix=self.prefix or '',
                         ip_protocol=_IP_PROTOCOLS[self.protocol], **options)


def _lookup(
    given: Mapping[str, typing.Any], key: str, environ: Mapping[str, str], variable: str,
    default: object,
) -> tuple[typing.Any, str]:
    """Return a value and the name of its source: the setting, the variable or the default.

    A setting whose value is ``None`` counts as not set, so that
    ``{'host': os.environ.get('STATSD_HOST')}`` behaves as expected.
    """
    if given.get(key) is not None:
        return given[key], f'statsd.{key}'
    if variable in environ:
        return environ[variable], variable
    return default, f'statsd.{key}'


def _parse_enabled(value: object, source: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        try:
            return int(value) != 0
        except ValueError:
            # Any other text (a false word, or none) means off, as in 1.0.
            return parse_boolean(value) is True
    raise ConfigurationError(
        f'{source} must be a bool, an int or a string such as "yes" or "0", '
        f'not {value!r}'
    )


def _parse_number(key: str, value: object, kind: type) -> float | int:
    """Check one of the numeric Connector options (a positive int or float)."""
    number: float | int | None = None
    if isinstance(value, bool):
        pass
    elif kind is int:
        if isinstance(value, int):
            number = value
    elif isinstance(value, (int, float)) and math.isfinite(value):
        number = value
    if number is None or number <= 0:
        noun = 'integer' if kind is int else 'number of seconds'
        raise ConfigurationError(f'statsd.{key} must be a positive {noun}, not {value!r}')
    return number


def _parse_prefix(
    given: Mapping[str, typing.Any], settings: Mapping[str, typing.Any],
    environ: Mapping[str, str],
) -> str | None:
    if 'prefix' in given:
        prefix = given['prefix']
        if prefix is not None and not isinstance(prefix, str):
            raise ConfigurationError(
                f'statsd.prefix must be a string, or None for no prefix, not {prefix!r}'
            )
        return prefix or None
    if environ.get('STATSD_PREFIX'):
        return environ['STATSD_PREFIX']
    service, environment = settings.get('service'), settings.get('environment')
    if service and environment:
        return f'applications.{service}.{environment}'
    raise ConfigurationError(
        'statsd.prefix is not set: set STATSD_PREFIX, the statsd.prefix setting, or '
        'the service and environment application settings; to send metrics without '
        'a prefix, set statsd.prefix to None explicitly'
    )


def _parse_tags(given: Mapping[str, typing.Any]) -> dict[str, typing.Any]:
    dialect, tags = given.get('tag_dialect'), given.get('tags')
    if dialect is not None and dialect not in DIALECTS:
        raise ConfigurationError(
            f'statsd.tag_dialect must be one of {", ".join(DIALECTS)} or None, '
            f'not {dialect!r}'
        )
    if tags is not None and not isinstance(tags, Mapping):
        raise ConfigurationError(f'statsd.tags must be a mapping, not {tags!r}')
    if tags and dialect is None:
        raise ConfigurationError('statsd.tags needs statsd.tag_dialect to be set')
    try:
        TagSet(dialect, tags)
    except ConfigurationError as error:
        raise ConfigurationError(f'statsd.tags: {error}') from None
    return {key: value for key, value in (('tag_dialect', dialect), ('tags', tags))
            if value is not None}


def _resolve(
    given: object, settings: Mapping[str, typing.Any], environ: Mapping[str, str],
) -> _Config:
    """Combine the ``statsd`` settings with the environment and check every value.

    :raises ConfigurationError: naming the setting or variable at fault
    """
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise ConfigurationError(f'the statsd setting must be a dict, not {given!r}')
    for key in given:
        if key not in _KNOWN_SETTINGS:
            raise ConfigurationError(
                f'statsd.{key} is not a known setting; use one of {", ".join(_KNOWN_SETTINGS)}'
            )
    if given.get('reconnect_timeout') is not None and given.get('reconnect_sleep') is not None:
        raise ConfigurationError(
            'statsd.reconnect_sleep is another name for statsd.reconnect_timeout: set one'
        )

    enabled = _parse_enabled(*_lookup(given, 'enabled', environ, 'STATSD_ENABLED', True))
    port = check_port(*_lookup(given, 'port', environ, 'STATSD_PORT', 8125))

    protocol, source = _lookup(given, 'protocol', environ, 'STATSD_PROTOCOL', 'tcp')
    if not isinstance(protocol, str) or protocol.strip().lower() not in _IP_PROTOCOLS:
        raise ConfigurationError(f'{source} must be "tcp", "udp" or "unix", not {protocol!r}')
    protocol = protocol.strip().lower()

    host, source = _lookup(given, 'host', environ, 'STATSD_HOST', None)
    if host is not None and not isinstance(host, str):
        raise ConfigurationError(f'{source} must be a host name, an address or a socket '
                                 f'path, not {host!r}')
    host = (host or '').strip() or None
    unix = unix_socket(host) if host is not None else None
    if host is not None and (protocol in ('unix', 'unixgram') or unix is not None):
        # The Connector recognises a Unix socket by its host, so a path
        # decides the transport: unix:/path (or a bare path) a stream,
        # unixgram:/path a datagram socket.  Only UDP and a stream disagree.
        kind, path = unix if unix is not None else (protocol, host)
        if protocol == 'unixgram' and not host.startswith('unix:'):
            kind = 'unixgram'
        if protocol == 'udp' and kind == 'unix':
            raise ConfigurationError(
                f'{source} {host!r} is a Unix socket path, which needs protocol unix (or '
                f'tcp), not udp'
            )
        protocol = kind
        host = f'{kind}:{path}'

    options: dict[str, typing.Any] = {
        key: _parse_number(key, given[key], kind)
        for key, kind in _NUMBER_OPTIONS.items() if given.get(key) is not None
    }
    options.update(_parse_tags(given))
    prefix = _parse_prefix(given, settings, environ)
    return _Config(enabled, host, port, protocol, prefix, options)


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
            config = _resolve(settings.get('statsd'), settings, os.environ)
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
