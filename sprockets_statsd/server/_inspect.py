"""Objects written the way Node's ``util.inspect`` writes them, for the admin console.

The reference's console dumps its metric dictionaries with
``util.inspect``; tools that scrape the console expect that look:
``{ 'api.hits': 3, glork: 1 }`` on one line when it fits in 80 columns,
else one key per line, and arrays longer than 100 items cut short with
``... N more items``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from sprockets_statsd.server._jsnumber import format_js_number

__all__ = ['inspect_object']

#: Node's ``breakLength``: wider objects go one entry per line.
BREAK_LENGTH = 80

#: Node's ``maxArrayLength``: the items shown of an array or a set.
MAX_ITEMS = 100

_IDENTIFIER = re.compile(r'[A-Za-z_$][A-Za-z0-9_$]*')
_ESCAPES = {'\\': '\\\\', "'": "\\'", '\n': '\\n', '\r': '\\r', '\t': '\\t'}

Value = float | list[float] | set[str] | frozenset[str]


def _string(text: str) -> str:
    escaped = ''.join(
        _ESCAPES.get(c) or (f'\\x{ord(c):02X}' if ord(c) < 0x20 else c) for c in text
    )
    return f"'{escaped}'"


def _key(key: str) -> str:
    return key if _IDENTIFIER.fullmatch(key) else _string(key)


def _wrap(items: list[str], opening: str, closing: str, indent: int) -> str:
    """Items on one line if they fit, else filled lines at `indent` + 2."""
    if not items:
        return opening.rstrip() + closing.lstrip()
    single = opening + ', '.join(items) + closing
    if indent + len(single) <= BREAK_LENGTH:
        return single
    pad = ' ' * (indent + 2)
    lines: list[str] = []
    line = ''
    for item in items:
        candidate = f'{line} {item},' if line else f'{item},'
        if line and len(pad) + len(candidate) > BREAK_LENGTH:
            lines.append(pad + line)
            candidate = f'{item},'
        line = candidate
    lines.append(pad + line.rstrip(','))
    return opening.rstrip() + '\n' + '\n'.join(lines) + '\n' + ' ' * indent + closing.lstrip()


def _items(values: Iterable[str], total: int) -> list[str]:
    shown = list(values)[:MAX_ITEMS]
    if total > MAX_ITEMS:
        shown.append(f'... {total - MAX_ITEMS} more item{"s" if total - MAX_ITEMS > 1 else ""}')
    return shown


def _value(value: Value, indent: int) -> str:
    if isinstance(value, list):
        items = _items((format_js_number(v) for v in value[:MAX_ITEMS]), len(value))
        return _wrap(items, '[ ', ' ]', indent)
    if isinstance(value, (set, frozenset)):
        members = sorted(value)[:MAX_ITEMS]
        items = _items((_string(m) for m in members), len(value))
        return _wrap(items, f'Set({len(value)}) {{ ', ' }', indent)
    return format_js_number(value)


def inspect_object(mapping: Mapping[str, Value]) -> str:
    """Write `mapping` as Node's ``util.inspect`` writes a plain object.

    Numbers as JavaScript prints them, lists as arrays, sets as ``Set``
    objects with their members sorted.

    :param mapping: key -> number, list of numbers or set of strings
    """
    if not mapping:
        return '{}'
    entries = [f'{_key(k)}: {_value(v, 2)}' for k, v in mapping.items()]
    single = '{ ' + ', '.join(entries) + ' }'
    if len(single) <= BREAK_LENGTH and '\n' not in single:
        return single
    return '{\n' + ',\n'.join('  ' + e for e in entries) + '\n}'
