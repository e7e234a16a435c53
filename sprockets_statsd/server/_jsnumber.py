"""Number semantics of the reference daemon: ``Number#toString`` and ``Math.round``."""

from __future__ import annotations

import math

__all__ = ['format_js_number', 'js_round']

# ``Number#toString`` switches to exponent notation at 1e21 and below 1e-6.
_MAX_PLAIN_EXPONENT = 21
_MIN_PLAIN_EXPONENT = -6
_EXACT_INTEGER = 2.0**53


def js_round(x: float) -> int:
    """Round like JavaScript's ``Math.round``: halves go towards +infinity.

    Python's :func:`round` rounds halves to even and ``floor(x + 0.5)``
    is wrong for the largest double below one half, so compare the
    fraction instead.

    :param x: a finite number
    :returns: the nearest integer, halves rounded up
    """
    r = math.floor(x)
    return r + 1 if x - r >= 0.5 else r


def format_js_number(x: float) -> str:
    """Format a number exactly like JavaScript's ``Number.prototype.toString``.

    The reference daemon writes every value with ``Number#toString``, so
    ``5`` (not ``5.0``), ``0.375``, ``5e-8`` (not ``5e-08``), ``1e+21``
    and ``0`` for negative zero.  Both JavaScript and Python's
    :func:`repr` choose the shortest decimal that round-trips, so only
    the layout differs.

    :param x: the value to format
    :returns: the text JavaScript would produce
    """
    text = repr(float(x))  # ints (counts) are welcome too
    # Fast path, the common case: from 1e-4 to below 1e16 repr() writes
    # plain digits, the same as JavaScript apart from a trailing ".0" on
    # whole numbers; "e" marks an exponent and "n" nan or inf.
    if 'e' in text or 'n' in text:
        return _format_general(float(x))
    if text[-2:] == '.0':
        return '0' if text == '-0.0' else text[:-2]
    return text


def _format_general(x: float) -> str:
    """:func:`format_js_number` for any float, by digits and exponent."""
    if x != x:
        return 'NaN'
    if x in (math.inf, -math.inf):
        return 'Infinity' if x > 0 else '-Infinity'
    if x == 0:
        return '0'  # covers -0, which JavaScript also prints as 0
    if x.is_integer() and -_EXACT_INTEGER < x < _EXACT_INTEGER:
        # Below 2**53 the integer's own digits are the shortest round-trip
        # form.
        return str(int(x))
    sign = '-' if x < 0 else ''
    mantissa, _, exp_text = repr(abs(x)).partition('e')
    int_part, _, frac_part = mantissa.partition('.')
    digits = int_part + frac_part
    # value = 0.<digits> x 10**point
    point = len(int_part) + (int(exp_text) if exp_text else 0)
    stripped = digits.lstrip('0')
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip('0')
    k = len(digits)
    if k <= point <= _MAX_PLAIN_EXPONENT:
        return sign + digits + '0' * (point - k)
    if 0 < point <= _MAX_PLAIN_EXPONENT:
        return sign + digits[:point] + '.' + digits[point:]
    if _MIN_PLAIN_EXPONENT < point <= 0:
        return sign + '0.' + '0' * -point + digits
    exponent = point - 1
    exp_sign = '+' if exponent >= 0 else '-'
    head = digits[0] + ('.' + digits[1:] if k > 1 else '')
    return f'{sign}{head}e{exp_sign}{abs(exponent)}'
