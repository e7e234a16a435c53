"""The sprockets-statsd 1.0 import path: ``sprockets_statsd.statsd.Connector``."""

from __future__ import annotations

from sprockets_statsd.connector import AbstractConnector, Connector, Timer
from sprockets_statsd.processor import Processor
from sprockets_statsd.protocols import (
    StatsdProtocol,
    TCPProtocol,
    UDPProtocol,
    UnixStreamProtocol,
)

__all__ = [
    'AbstractConnector',
    'Connector',
    'Processor',
    'StatsdProtocol',
    'TCPProtocol',
    'Timer',
    'UDPProtocol',
    'UnixStreamProtocol',
]
