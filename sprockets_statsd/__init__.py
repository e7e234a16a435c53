"""Send statsd metrics from asyncio and synchronous code, and receive them."""

from __future__ import annotations

import importlib
import typing

from sprockets_statsd.client import (
    Pipeline,
    StatsClient,
    TCPStatsClient,
    UnixDatagramStatsClient,
    UnixSocketStatsClient,
)
from sprockets_statsd.errors import ConfigurationError, StatsdError
from sprockets_statsd.timer import Timer

if typing.TYPE_CHECKING:
    from sprockets_statsd.connector import AbstractConnector, Connector
    from sprockets_statsd.processor import Processor
    from sprockets_statsd.protocols import (
        StatsdProtocol,
        TCPProtocol,
        UDPProtocol,
        UnixDatagramProtocol,
        UnixStreamProtocol,
    )

__version__ = '2.0.0.dev0'
version = __version__

__all__ = [
    'AbstractConnector',
    'ConfigurationError',
    'Connector',
    'Pipeline',
    'Processor',
    'StatsClient',
    'StatsdError',
    'StatsdProtocol',
    'TCPProtocol',
    'TCPStatsClient',
    'Timer',
    'UDPProtocol',
    'UnixDatagramProtocol',
    'UnixDatagramStatsClient',
    'UnixSocketStatsClient',
    'UnixStreamProtocol',
    '__version__',
    'version',
]

# The asyncio side is imported on first use, so that a program that only
# uses the synchronous clients never imports asyncio.
_LAZY = {
    'AbstractConnector': 'sprockets_statsd.connector',
    'Connector': 'sprockets_statsd.connector',
    'Processor': 'sprockets_statsd.processor',
    'StatsdProtocol': 'sprockets_statsd.protocols',
    'TCPProtocol': 'sprockets_statsd.protocols',
    'UDPProtocol': 'sprockets_statsd.protocols',
    'UnixDatagramProtocol': 'sprockets_statsd.protocols',
    'UnixStreamProtocol': 'sprockets_statsd.protocols',
}


def __getattr__(name: str) -> typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
