"""The ``statsd`` settings of a Tornado application, resolved and checked.

Each setting comes from ``settings['statsd']``, else from its ``STATSD_*``
environment variable, else from its default; every value is checked when
the application starts, and an error names the setting or variable at
fault.  Nothing here imports Tornado: :mod:`sprockets_statsd.tornado`
hands the application's settings in.
"""

from __future__ import annotations

import dataclasses
import math
import socket
import typing
from collections.abc import Mapping

from sprockets_statsd._booleans import parse_boolean
from sprockets_statsd._dialects import DIALECTS, TagSet
from sprockets_statsd._ports import check_port
from sprockets_statsd.connector import AbstractConnector, Connector
from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.transports import unix_socket

__all__ = ['Settings', 'resolve']


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


@dataclasses.dataclass(frozen=True)
class Settings:
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


def resolve(
    given: object, settings: Mapping[str, typing.Any], environ: Mapping[str, str],
) -> Settings:
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
    return Settings(enabled, host, port, protocol, prefix, options)
