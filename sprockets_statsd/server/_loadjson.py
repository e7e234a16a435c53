"""The load sink's JSON answer, rendered with the text of each name kept.

Strategy: ``/N`` answers ``{"last_frame_time":T,"Stat":{name:value,…}}``
with the names sorted and whole numbers written without ``.0``.  With
hundreds of thousands of counters, sorting the names and writing them as
JSON cost more than the values do, and both depend only on which names
there are, which seldom changes from one flush to the next: a
:class:`.Layout` keeps them (see :mod:`._layout`).  Each answer for the
same names then only writes the values, in C (``float.__repr__`` without a
trailing ``.0``), and writes the rare values whose JSON is not that
(``-0.0``, huge whole numbers, non-finite values) one by one, as
:func:`number` says.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence

from sprockets_statsd.server._layout import MAX_LAYOUTS, Layout, Layouts
from sprockets_statsd.server._window import Window

__all__ = ['MAX_LAYOUTS', 'Layout', 'Layouts', 'number', 'prepare', 'render']

# Whole numbers below this are exact in a double and written as integers.
_EXACT = 2.0**53
# Entries written at a time: the pieces of a chunk are short-lived, so the
# memory a report needs beyond its result stays a few MB.
_CHUNK = 65_536


def number(value: float) -> float | int | None:
    """JSON for a value: whole numbers without ``.0``, no NaN or infinity.

    :param value: a float, or an int (a set's size)
    """
    value = float(value)
    if not math.isfinite(value):
        return None
    if value.is_integer() and abs(value) < _EXACT:
        return int(value)
    return value


def prepare(window: Window, layouts: Layouts, *, texts: bool = True) -> None:
    """Make and keep what the answers for `window` share; for a worker thread.

    The sum of its complete frames (see :meth:`.Window.keep_sums`) and the
    layout of its names, so that a first answer later in the same frame
    only adds the newest frame and writes the values.

    :param window: the frames to report
    :param layouts: where the layout is kept
    :param texts: lay the names out with their JSON text; if false, only
        sort them (:meth:`.Layouts.sort_ahead`), and the first answer
        writes their text
    """
    keys, _ = window.counter_totals()
    if texts:
        layouts.get(keys, list(window.other_stat()))
    else:
        layouts.sort_ahead(keys, list(window.other_stat()))


def render(window: Window, last_frame_time: int, layouts: Layouts) -> bytes:
    """The load report of `window` as compact JSON; for a worker thread.

    The same bytes as ``json.dumps`` with ``separators=(',', ':')`` of
    ``{"last_frame_time": …, "Stat": {name: number(value) …}}``, names
    sorted.

    :param window: the frames to report
    :param last_frame_time: the start of the current frame
    :param layouts: layouts kept from earlier reports, and for later ones
    """
    keys, totals = window.counter_totals()
    others = window.other_stat()
    layout = layouts.get(keys, list(others))
    values = totals + list(others.values())
    chunks = []
    for start in range(0, len(layout.places), _CHUNK):
        shown = list(map(values.__getitem__, layout.places[start:start + _CHUNK]))
        # Name, value, comma, ... placed by slices and joined once: half
        # the cost of joining each name's text and value first.
        pieces = [','] * (3 * len(shown) - 1)
        pieces[0::3] = layout.texts[start:start + _CHUNK]
        pieces[1::3] = _value_texts(shown)
        chunks.append(''.join(pieces))
    return ''.join(
        ['{"last_frame_time":', str(last_frame_time), ',"Stat":{', ','.join(chunks), '}}']
    ).encode('ascii')


def _value_texts(values: Sequence[float]) -> list[str]:
    """The JSON of :func:`number` for each value."""
    texts = list(map(str.removesuffix, map(repr, values), itertools.repeat('.0')))
    whole = sum(values)
    # Finite, every whole number exact, and no -0.0 (whose sign was lost).
    if (whole - whole == 0 and max(map(abs, values), default=0.0) < _EXACT
            and '-0' not in texts):
        return texts
    for i, value in enumerate(values):
        if not -_EXACT < value < _EXACT or texts[i] == '-0':
            texts[i] = json.dumps(number(value))
    return texts
