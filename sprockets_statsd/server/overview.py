"""The live overview page: HTML with inline SVG sparklines (pure rendering)."""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence

from sprockets_statsd.server.frames import Listing

__all__ = [
    'DEFAULT_REFRESH',
    'MAX_ROWS',
    'format_value',
    'matches',
    'render_overview',
    'sparkline',
]

#: Seconds between two reloads of the page.
DEFAULT_REFRESH = 10.0

#: Metrics listed at most: enough to browse, small enough that the page
#: stays light with a hundred thousand keys.  The filter finds the rest.
MAX_ROWS = 500

_WIDTH = 150
_HEIGHT = 28
_PAD = 2.0

_KIND_LABELS = {
    'counter': 'counter, sum',
    'timer': 'timer, mean ms',
    'gauge': 'gauge',
    'set': 'set, distinct',
}

# No external assets: the page must work offline and behind any proxy.
_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d232a;background:#fbfbfc}
h1{font-size:1.4em;margin:0 0 .2em}
p.meta{color:#5a6672;margin:.2em 0 1em}
form{margin:0 0 1em}
input[type=search]{font:inherit;padding:.25em .5em;width:22em}
button{font:inherit;padding:.25em .8em}
table{border-collapse:collapse;min-width:40em}
th,td{padding:.3em .8em;border-bottom:1px solid #dde2e7;text-align:left;vertical-align:middle}
th{background:#eef1f4;font-weight:600}
td.name{font-family:ui-monospace,monospace;word-break:break-all}
td.value{text-align:right;font-variant-numeric:tabular-nums}
td.kind{color:#5a6672}
svg.spark{background:#eef1f4;border-radius:2px;display:block}
svg polyline{fill:none;stroke:#2f6fb3;stroke-width:1.5}
svg circle{fill:#2f6fb3}
p.empty,p.more{color:#5a6672}
footer{margin-top:1.5em;color:#5a6672}
""".strip()

# Reload unless someone is typing in the filter box; without JavaScript
# the <noscript> meta refresh does the same job.
_SCRIPT = """
(function(){var f=document.getElementById('filter');
function tick(){if(document.activeElement===f&&f.value!==f.defaultValue){
setTimeout(tick,%d);}else{location.reload();}}
setTimeout(tick,%d);})();
""".strip()


def matches(key: str, text: str) -> bool:
    """Whether `key` passes the filter: a case-insensitive substring.

    :param key: a metric's key
    :param text: the filter; empty lets everything through
    """
    return text.casefold() in key.casefold()


def format_value(value: float | None) -> str:
    """A value for people: whole numbers exactly, others to six digits.

    :param value: the value, or ``None`` for no value
    """
    if value is None:
        return '\u2013'
    value = float(value)  # set sizes are ints
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format(value, '.6g')


def sparkline(points: Sequence[float | None]) -> str:
    """An inline SVG line of `points`, with gaps where a point is ``None``.

    :param points: one value per frame, oldest first
    :returns: an ``<svg>`` element
    """
    known = [p for p in points if p is not None and math.isfinite(p)]
    title = html.escape(', '.join(format_value(p) for p in points))
    parts = [
        f'<svg class="spark" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
        f'aria-label="one value per frame, oldest first">'
        f'<title>{title}</title>'
    ]
    if known:
        low, high = min(known), max(known)
        span = high - low
        step = (_WIDTH - 2 * _PAD) / max(len(points) - 1, 1)

        def y(value: float) -> float:
            if not span:
                return _HEIGHT / 2
            return _HEIGHT - _PAD - (value - low) / span * (_HEIGHT - 2 * _PAD)

        run: list[tuple[float, float]] = []
        for i, point in enumerate([*points, None]):
            if point is not None and math.isfinite(point):
                run.append((_PAD + i * step, y(point)))
                continue
            if len(run) == 1:
                (cx, cy), = run
                parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="1.8"/>')
            elif run:
                coords = ' '.join(f'{px:.1f},{py:.1f}' for px, py in run)
                parts.append(f'<polyline points="{coords}"/>')
            run = []
    parts.append('</svg>')
    return ''.join(parts)


def render_overview(
    listing: Listing,
    *,
    filter_text: str = '',
    frame_length: float = 60.0,
    frame_count: int = 15,
    now: float | None = None,
    refresh: float = DEFAULT_REFRESH,
) -> str:
    """The overview page of the metrics of the kept frames.

    :param listing: the metrics to show (already filtered and cut to at
        most :data:`MAX_ROWS`), from :meth:`.FrameStore.series`
    :param filter_text: the filter the listing was made with, shown in
        the form
    :param frame_length: seconds per frame, for the explanation
    :param frame_count: frames kept, for the explanation
    :param now: unix seconds of the page, for the explanation
    :param refresh: seconds until the page reloads itself
    :returns: a complete HTML document
    """
    now = time.time() if now is None else now
    shown = listing.series
    window = f'{frame_count} frames of {format_value(frame_length)} s'
    stamp = time.strftime('%H:%M:%S UTC', time.gmtime(now))
    counted = f'{listing.total} metrics'
    if filter_text:
        counted = f'{listing.matched} of {listing.total} metrics'
    delay = max(int(refresh * 1000), 100)
    out = [
        '<!DOCTYPE html>',
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<title>statsd overview</title>',
        f'<noscript><meta http-equiv="refresh" content="{max(int(refresh), 1)}"></noscript>',
        f'<style>{_STYLE}</style></head><body>',
        '<h1>statsd overview</h1>',
        f'<p class="meta">{counted} seen in the last {window}; '
        f'updated {stamp}, reloads every {format_value(refresh)} s.</p>',
        '<form method="get" action="/"><label>Filter by name '
        f'<input type="search" id="filter" name="filter" '
        f'value="{html.escape(filter_text)}" placeholder="part of a name"></label> '
        '<button type="submit">Filter</button></form>',
    ]
    if shown:
        out.append(
            '<table><thead><tr><th>Name</th><th>Type</th><th>Current</th>'
            '<th>Per frame, oldest first</th></tr></thead><tbody>'
        )
        for s in shown:
            out.append(
                f'<tr class="metric" data-kind="{s.kind}">'
                f'<td class="name">{html.escape(s.key)}</td>'
                f'<td class="kind">{_KIND_LABELS[s.kind]}</td>'
                f'<td class="value">{format_value(s.current)}</td>'
                f'<td>{sparkline(s.points)}</td></tr>'
            )
        out.append('</tbody></table>')
    elif filter_text:
        out.append('<p class="empty">No metric name contains '
                   f'\u201c{html.escape(filter_text)}\u201d.</p>')
    else:
        out.append('<p class="empty">No metrics yet: they appear after the '
                   'next flush.</p>')
    if listing.matched > len(shown):
        out.append(f'<p class="more">Showing {len(shown)} of {listing.matched}: '
                   'narrow the filter to see the others.</p>')
    out.append(
        '<footer>JSON: <a href="/1">/1</a> <a href="/5">/5</a> '
        '<a href="/15">/15</a> <a href="/1/full">/1/full</a> &middot; '
        '<a href="/metrics">Prometheus</a> &middot; <a href="/health">health</a>'
        '</footer>'
    )
    out.append(f'<script>{_SCRIPT % (delay, delay)}</script>')
    out.append('</body></html>')
    return '\n'.join(out) + '\n'
