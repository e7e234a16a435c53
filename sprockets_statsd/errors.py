"""The exception tree shared by the clients and the server."""

from __future__ import annotations

__all__ = ['ConfigurationError', 'MetricParseError', 'StatsdError']


class StatsdError(Exception):
    """Base class of every exception this package raises on purpose."""


class ConfigurationError(StatsdError, ValueError):
    """A setting or argument cannot be used.

    Raised at construction time, never from the metric hot path.  The message
    names the argument, setting or environment variable and says what a
    valid value looks like, so that it can be fixed without reading the code.
    """


class MetricParseError(StatsdError, ValueError):
    """A line of the statsd protocol cannot be understood.

    The server counts these as ``statsd.bad_lines_seen`` and carries on; the
    exception never escapes a listener.
    """
