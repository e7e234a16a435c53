"""The overview page's HTML and sparklines, rendered without a server."""

from __future__ import annotations

import html.parser
import re
import typing

import pytest

from sprockets_statsd.server.frames import Listing, Series
from sprockets_statsd.server.overview import (
    MAX_ROWS,
    format_value,
    matches,
    render_overview,
    sparkline,
)

_VOID = {'meta', 'input', 'br', 'img', 'link', 'hr', 'circle', 'polyline'}


class Structure(html.parser.HTMLParser):
    """Checks that every element is closed in order; collects text and
    element names."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack, tag
        assert self.stack[-1] == tag, (self.stack, tag)
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Structure:
    structure = Structure()
    structure.feed(page)
    structure.close()
    assert structure.stack == []
    return structure


def series(key: str, *points: float | None, kind: str = 'counter') -> Series:
    padded = (None,) * (15 - len(points)) + points
    return Series(kind, key, padded)


def render(
    every: list[Series], filter_text: str = '', limit: int = MAX_ROWS, **settings: typing.Any
) -> str:
    """The page, with the listing made as the HTTP handler makes it."""
    chosen = [s for s in every if matches(s.key, filter_text)]
    listing = Listing(chosen[:limit], len(chosen), len(every))
    return render_overview(listing, filter_text=filter_text, **settings)


def test_page_lists_each_metric_with_value_and_sparkline() -> None:
    """Each metric is a row with its kind, current value and an SVG."""
    page = render(
        [series('api.hits', 1, 2, 3), series('lat', 12.5, kind='timer')],
        now=0,
    )
    structure = parse(page)
    rows = [a for t, a in structure.tags if t == 'tr' and a.get('class') == 'metric']
    assert [r['data-kind'] for r in rows] == ['counter', 'timer']
    text = ''.join(structure.text)
    assert 'api.hits' in text
    assert 'timer, mean ms' in text
    assert '12.5' in text
    assert sum(1 for t, _ in structure.tags if t == 'svg') == 2
    assert page.startswith('<!DOCTYPE html>')
    assert '2 metrics seen in the last 15 frames of 60 s' in page
    assert 'updated 00:00:00 UTC' in page


def test_page_has_no_external_assets_and_refreshes_itself() -> None:
    """Everything is inline: no src= or stylesheet links; the page reloads
    itself by script, or by meta refresh without script."""
    page = render([series('x', 1)], refresh=7)
    assert not re.search(r'\bsrc=|<link\b|https?://', page)
    assert '<noscript><meta http-equiv="refresh" content="7"></noscript>' in page
    assert 'location.reload()' in page
    assert 'setTimeout(tick,7000)' in page


def test_filter_keeps_matching_names_in_any_case() -> None:
    """The filter is a case-insensitive substring of the name, and the form
    shows it again."""
    page = render(
        [series('API.hits', 1), series('db.query', 2)], filter_text='api'
    )
    assert 'API.hits' in page
    assert 'db.query' not in page
    assert 'value="api"' in page
    assert '1 of 2 metrics seen' in page
    assert matches('Some.Name', 'e.n')
    assert not matches('some', 'other')


def test_names_and_the_filter_are_escaped() -> None:
    """Names and the filter cannot inject markup."""
    page = render(
        [series('<script>x</script>;tag="1"', 1)], filter_text='<script>'
    )
    parse(page)
    assert '<script>x</script>' not in page
    assert '&lt;script&gt;x&lt;/script&gt;' in page
    assert 'value="&lt;script&gt;"' in page


def test_many_metrics_are_cut_with_a_note() -> None:
    """Past max_rows the page says how many are hidden."""
    page = render([series(f'm{i:03}', i) for i in range(12)], limit=5)
    assert page.count('class="metric"') == 5
    assert 'Showing 5 of 12' in page


def test_empty_states_explain_themselves() -> None:
    """No metrics yet, or none matching the filter, each get a sentence."""
    assert 'No metrics yet' in render([])
    page = render([series('a', 1)], filter_text='zzz')
    assert 'No metric name contains' in page
    parse(page)


def test_sparkline_breaks_at_gaps_and_marks_lone_points() -> None:
    """Runs of values are polylines, a lone value a dot, gaps are gaps."""
    svg = sparkline([1, 2, None, 5, None, None, 3, 4, 6])
    assert svg.count('<polyline') == 2
    assert svg.count('<circle') == 1
    assert '<title>1, 2, \u2013, 5, \u2013, \u2013, 3, 4, 6</title>' in svg


def test_sparkline_scales_to_its_box() -> None:
    """The lowest value is at the bottom, the highest at the top."""
    svg = sparkline([0, 10])
    coords = re.search(r'points="([^"]+)"', svg)
    assert coords is not None
    (x0, y0), (x1, y1) = (map(float, p.split(',')) for p in coords[1].split())
    assert x0 < x1
    assert y0 > y1
    assert y0 == pytest.approx(26)
    assert y1 == pytest.approx(2)


def test_flat_and_empty_sparklines() -> None:
    """A constant series is a line across the middle; no values, no line."""
    flat = sparkline([3, 3, 3])
    assert '14.0' in flat
    assert '<polyline' not in sparkline([None, None])
    assert '<circle' not in sparkline([None, None])
    assert '<polyline' not in sparkline([float('nan')])


@pytest.mark.parametrize(('value', 'text'), [
    (None, '\u2013'),
    (3.0, '3'),
    (-12.0, '-12'),
    (0.125, '0.125'),
    (2 / 3, '0.666667'),
    (1e20, '1e+20'),
])
def test_values_are_written_for_people(value: float | None, text: str) -> None:
    """Whole numbers without a fraction, others to six digits."""
    assert format_value(value) == text
