"""An asyncio statsd server with etsy statsd's semantics and Graphite sinks."""

from __future__ import annotations

from sprockets_statsd.server._aggregatorconfig import AggregatorConfig
from sprockets_statsd.server.aggregator import Aggregator
from sprockets_statsd.server.app import Server
from sprockets_statsd.server.config import ServerConfig

__all__ = ['Aggregator', 'AggregatorConfig', 'Server', 'ServerConfig']
