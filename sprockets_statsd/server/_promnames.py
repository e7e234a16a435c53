"""Prometheus names and labels of statsd keys.

A key's metric name is the part before its first ``;`` with every
character other than ``[A-Za-z0-9_]`` replaced by ``_`` (and a leading
``_`` before a digit); its ``;k=v`` tags are the labels, their names
cleaned alike.  :func:`prometheus_names` does the first for many keys at
once, in C.
"""

from __future__ import annotations

import bisect
import re
import types
from collections.abc import Mapping, Sequence

__all__ = ['NO_LABELS', 'prometheus_labels', 'prometheus_name', 'prometheus_names']

_INVALID = re.compile(r'[^A-Za-z0-9_]')
# The same replacement for ASCII text, in one C call instead of a regex.
_ASCII_CLEAN = bytes(
    c if c < 128 and not _INVALID.fullmatch(chr(c)) else ord('_') for c in range(256)
)
# The same again, keeping the line feeds that separate names cleaned at once
# (no key has one: the protocol ends a line there).
_ASCII_CLEAN_LINES = bytes(c if c == ord('\n') else _ASCII_CLEAN[c] for c in range(256))
NO_LABELS: Mapping[str, str] = types.MappingProxyType({})
# Label names Prometheus gives a meaning of its own; a tag of that name is
# renamed the way Prometheus renames clashing target labels.
_RESERVED_LABELS = frozenset({'quantile', 'le'})


def _clean(text: str) -> str:
    if text.isascii():
        cleaned = text.encode().translate(_ASCII_CLEAN).decode()
    else:
        cleaned = _INVALID.sub('_', text)
    return '_' + cleaned if not cleaned or cleaned[0].isdigit() else cleaned


def prometheus_name(key: str) -> str:
    """The Prometheus metric name of a statsd key (its tags left out).

    ``api.get-user;env=prod`` becomes ``api_get_user``; ``5xx`` becomes
    ``_5xx``.

    :param key: the statsd key as aggregated
    """
    return _clean(key.partition(';')[0])


def prometheus_names(keys: Sequence[str]) -> list[str]:
    """:func:`prometheus_name` of each of `keys`, which are sorted.

    Keys without tags are cleaned in one pass over their text; in sorted
    order, the keys that start with a digit, whose names get a leading
    ``_``, are one run.
    """
    text = '\n'.join(keys)
    if (not keys or not text.isascii() or ';' in text
            or text.count('\n') != len(keys) - 1):
        return list(map(prometheus_name, keys))
    names = text.encode().translate(_ASCII_CLEAN_LINES).decode().split('\n')
    start, end = bisect.bisect_left(keys, '0'), bisect.bisect_left(keys, ':')
    names[start:end] = ['_' + name for name in names[start:end]]
    if not keys[0]:
        names[0] = '_'
    return names


def prometheus_labels(key: str) -> dict[str, str]:
    """The labels of a statsd key's ``;k=v`` tags.

    Label names are cleaned like metric names; ``quantile`` and ``le``
    become ``exported_quantile`` and ``exported_le``; a name starting with
    ``__`` (reserved) gets a ``tag`` prefix; a tag without ``=`` gets the
    value ``true``.  A later tag of the same name wins.

    :param key: the statsd key as aggregated
    """
    labels: dict[str, str] = {}
    for tag in key.split(';')[1:]:
        name, equals, value = tag.partition('=')
        if not name:
            continue
        label = _clean(name)
        if label in _RESERVED_LABELS:
            label = 'exported_' + label
        elif label.startswith('__'):
            label = 'tag' + label
        labels[label] = value if equals else 'true'
    return labels
