"""The names of Graphite lines: the backend's namespaces, and clean keys.

The namespaces come from the configuration as the reference backend's
``init`` builds them.  With ``key_name_sanitize`` off the backend cleans
each key itself; since keys mostly persist from one flush to the next, the
cleaned keys are kept between flushes, in a memo shared by every render
and bounded by the size of the flush being rendered.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from sprockets_statsd.server._aggregatorconfig import AggregatorConfig
from sprockets_statsd.server.parser import sanitize_key

__all__ = ['Names', 'dotted', 'forget_cleaned_names']

# The cleaned names are dropped when there are more of them than twice the
# keys of the flush being rendered, plus this: names that are gone stop
# holding memory, and one flush's worth is rebuilt.
_SANITIZED_SLACK = 4096


# A key -> the key as sent with key_name_sanitize off, shared by every render
# (it depends on nothing else).  Threads only add entries or clear it.
_sanitized: dict[str, str] = {}


@dataclasses.dataclass(frozen=True)
class Names:
    """The namespaces of the reference backend's ``init``."""

    global_ns: tuple[str, ...]
    counter: tuple[str, ...]
    timer: tuple[str, ...]
    gauge: tuple[str, ...]
    set: tuple[str, ...]
    suffix: str
    sanitize: bool

    @classmethod
    def of(cls, config: AggregatorConfig) -> Names:
        if config.legacy_namespace:
            base: tuple[str, ...] = ('stats',)
            parts = ('', 'timers', 'gauges', 'sets')
        else:
            base = (config.global_prefix,) if config.global_prefix else ()
            parts = (
                config.prefix_counter,
                config.prefix_timer,
                config.prefix_gauge,
                config.prefix_set,
            )
        counter, timer, gauge, set_ = (base + ((p,) if p else ()) for p in parts)
        suffix = '.' + config.global_suffix if config.global_suffix else ''
        return cls(
            base, counter, timer, gauge, set_, suffix, not config.key_name_sanitize
        )

    def format(self, namespace: Sequence[str], key: str, *extra: str) -> str:
        """Join namespace, name and `extra`, then the suffix, then the tags."""
        name, semicolon, tags = key.partition(';')
        if self.sanitize:
            # With key_name_sanitize off the backend cleans the name part.
            name = sanitize_key(name)
        return (
            '.'.join((*namespace, name, *extra))
            + self.suffix
            + semicolon
            + tags
        )

    def split(self, key: str) -> tuple[str, str]:
        """The name part of `key` as sent, and what follows it: suffix, tags."""
        if self.sanitize:
            # With key_name_sanitize off the backend cleans the name part,
            # as the reference does.  It also cleans what would break the
            # line in the tags (whitespace, control characters), which the
            # reference lets through, and never leaves the name empty: one
            # well-formed line per metric, whatever was received.
            clean = _sanitized.get(key)
            if clean is None:
                name, semicolon, tags = key.partition(';')
                clean = (sanitize_key(name) or '_') + semicolon + _line_safe(tags)
                _sanitized[key] = clean
            key = clean
        name, semicolon, tags = key.partition(';')
        return name, self.suffix + semicolon + tags


# Whitespace (as the reference's name cleaning sees it) and the control
# characters: what would split or end a plaintext line.
_WHITESPACE_RUN = re.compile(r'[\s\ufeff]+')
_CONTROL = re.compile('[\x00-\x1f\x7f-\x9f]')


def _line_safe(text: str) -> str:
    """`text` with whitespace runs as ``_`` and control characters removed."""
    return _CONTROL.sub('', _WHITESPACE_RUN.sub('_', text))


def dotted(namespace: Sequence[str]) -> str:
    """A namespace as a name prefix: ``stats.timers.``, or ``''``."""
    return ''.join(part + '.' for part in namespace)


def forget_cleaned_names(num_stats: int) -> None:
    """Drop the cleaned keys if there are many more than a flush's keys.

    :param num_stats: the keys of the flush just rendered
    """
    if len(_sanitized) > 2 * num_stats + _SANITIZED_SLACK:
        _sanitized.clear()
