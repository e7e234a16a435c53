"""Deliver flushes to Graphite over persistent connections, or to a stream."""

# Every sink takes each flush without waiting and keeps what it has not
# delivered in a bounded buffer, dropping the oldest beyond the bound.
#
# The concepts live in modules of their own, re-exported here: the Sink
# interface (_sink), the bounded buffer of payloads that the Graphite and
# stream sinks share (_buffer), the Graphite TCP sink with its resending
# after a reset (_graphite_sink) over a connection that can tell what the
# receiver acknowledged (_connection), and the stream sink with its writer
# thread (_stream_sink).

from __future__ import annotations

from sprockets_statsd.server._buffer import BufferedSink, Payload, Rendered
from sprockets_statsd.server._graphite_sink import (
    DEFAULT_CONFIRM_DELAY,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_RECONNECT_DELAY,
    DEFAULT_SEND_TIMEOUT,
    GraphiteSink,
)
from sprockets_statsd.server._sink import Sink
from sprockets_statsd.server._stream_sink import StreamSink
from sprockets_statsd.server.config import DEFAULT_BUFFER_BYTES, DEFAULT_BUFFER_FLUSHES

__all__ = [
    'DEFAULT_BUFFER_BYTES',
    'DEFAULT_BUFFER_FLUSHES',
    'DEFAULT_CONFIRM_DELAY',
    'DEFAULT_CONNECT_TIMEOUT',
    'DEFAULT_RECONNECT_DELAY',
    'DEFAULT_SEND_TIMEOUT',
    'BufferedSink',
    'GraphiteSink',
    'Payload',
    'Rendered',
    'Sink',
    'StreamSink',
]
