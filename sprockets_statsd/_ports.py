"""The one check of a port number's range, for the clients and the server."""

from __future__ import annotations

import contextlib

from sprockets_statsd.errors import ConfigurationError

__all__ = ['MAX_PORT', 'check_port']

#: The largest TCP or UDP port number (ports are 16-bit).
MAX_PORT = 65535


def check_port(value: object, what: str, *, lowest: int = 1, text: bool = True) -> int:
    """Return `value` as a port number from `lowest` to :data:`MAX_PORT`.

    :param value: an :class:`int` (a :class:`bool` is not one) or, when
        `text` is true, its decimal text
    :param what: what the value is, to start the error message with
    :param lowest: the smallest port allowed (0 where the system picks one)
    :param text: whether a string is accepted
    :raises ConfigurationError: naming `what` and the range
    """
    number: object = value
    if text and isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = int(value)
    if isinstance(number, int) and not isinstance(number, bool) and lowest <= number <= MAX_PORT:
        return number
    raise ConfigurationError(
        f'{what} must be a port number from {lowest} to {MAX_PORT}, not {value!r}'
    )
