"""What a statsd host names: a Unix socket (stream or datagram) or a network host.

Shared by the asynchronous transports and the synchronous clients' ``from_env``,
so it imports nothing of asyncio.
"""

from __future__ import annotations

from sprockets_statsd.errors import ConfigurationError

__all__ = ['unix_socket']


def unix_socket(host: str) -> tuple[str, str] | None:
    """Return ``(kind, path)`` when `host` names a Unix socket, else ``None``.

    `kind` is ``'unix'`` (stream: ``unix:/path`` or an absolute path) or
    ``'unixgram'`` (datagram: ``unixgram:/path``).

    :raises ~sprockets_statsd.errors.ConfigurationError: for a prefix
        without a path
    """
    for prefix, kind in (('unixgram:', 'unixgram'), ('unix:', 'unix')):
        if host.startswith(prefix):
            path = host[len(prefix):]
            if not path:
                raise ConfigurationError(f'host {prefix} needs a path: {prefix}/path/to.sock')
            return kind, path
    if host.startswith('/'):
        return 'unix', host
    return None
