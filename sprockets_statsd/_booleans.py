"""The words environment variables accept for true and false, for the clients and the server."""

from __future__ import annotations

__all__ = ['FALSE_WORDS', 'TRUE_WORDS', 'parse_boolean']

#: Spellings of "true" (compared after stripping and lower-casing); ``t`` is
#: sprockets-statsd 1.0's, for ``STATSD_ENABLED``.
TRUE_WORDS = frozenset({'1', 'true', 't', 'yes', 'on'})
#: Spellings of "false".
FALSE_WORDS = frozenset({'0', 'false', 'f', 'no', 'off'})


def parse_boolean(text: str) -> bool | None:
    """Return what `text` says, or ``None`` when it is not one of the words."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None
