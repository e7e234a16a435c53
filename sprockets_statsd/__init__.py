"""Send statsd metrics from asyncio and synchronous code, and receive them."""

from __future__ import annotations

from sprockets_statsd.client import (
    Pipeline,
    StatsClient,
    TCPStatsClient,
    UnixSocketStatsClient,
)
from sprockets_statsd.connector import AbstractConnector, Connector, Timer
from sprockets_statsd.errors import ConfigurationError, StatsdError
from sprockets_statsd.processor import Processor
from sprockets_statsd.protocols import (
    StatsdProtocol,
    TCPProtocol,
    UDPProtocol,
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
    'UnixSocketStatsClient',
    'UnixStreamProtocol',
    '__version__',
    'version',
]
