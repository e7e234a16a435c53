"""Every output of a running server, collected and checked for well-formedness.

:func:`serving_everything` runs a server with a Graphite sink (a
:class:`FakeCarbon`), the load sink's HTTP endpoints and the admin console,
flushing only when told.  :meth:`Surfaces.collect` flushes and gathers the
Graphite lines of that flush, ``/metrics`` parsed with prometheus_client's
parser, ``/15`` JSON, the overview page and the console's dumps; each is
checked to be well-formed on the way, and no number on any of them may be
NaN or infinite.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html.parser
import json
import math
import re
import typing
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from sprockets_statsd.server.app import Server
from tests.server.helpers import (
    DEFAULT_TIMEOUT,
    FakeCarbon,
    Point,
    parse_points,
    running_server,
    wait_until,
)

__all__ = ['Outputs', 'Surfaces', 'serving_everything']

# Number#toString output: what a Graphite value must look like.
_JS_NUMBER = re.compile(r'-?(?:0|[1-9]\d*)(?:\.\d+)?(?:e[+-]\d+)?$')
# One ``key: value`` of the console's dumps (util.inspect style).
_CONSOLE_VALUE = re.compile(r"(?:'(?:\\.|[^'\\])*'|[A-Za-z_$][\w$]*): ([^,\s]+)")
_VOID = frozenset({'meta', 'input', 'br', 'link', 'img', 'hr'})
# The load sink's frame length, seconds: a week, far longer than a test.
_ONE_FRAME = 7 * 24 * 3600.0


@dataclasses.dataclass
class Outputs:
    """What every surface showed after one flush.

    :param graphite: the flush's Graphite points
    :param metrics: ``/metrics`` samples: (name, labels, value)
    :param load: ``/15``'s ``Stat`` object
    :param overview: the overview page's rows: (kind, name) -> current
        value text
    :param console: the console's ``counters`` and ``gauges`` replies
    """

    graphite: list[Point]
    metrics: list[tuple[str, dict[str, str], float]]
    load: dict[str, typing.Any]
    overview: dict[tuple[str, str], str]
    console: str

    def graphite_value(self, name: str) -> float:
        """The value of the Graphite point `name` (exactly one)."""
        (value,) = [p.value for p in self.graphite if p.name == name]
        return value

    def metric(self, name: str, **labels: str) -> float:
        """The value of the ``/metrics`` sample `name` with `labels`."""
        (value,) = [v for n, ls, v in self.metrics if n == name and ls == labels]
        return value


def _reject_constant(text: str) -> typing.NoReturn:
    raise AssertionError(f'JSON holds {text}')


class _Page(html.parser.HTMLParser):
    """Checks that tags nest and collects the overview's rows."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.rows: dict[tuple[str, str], str] = {}
        self._kind = ''
        self._cell: str | None = None
        self._name = ''
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _VOID:
            self.stack.append(tag)
        if tag == 'tr':
            self._kind = dict(attrs).get('data-kind') or ''
        if tag == 'td':
            self._cell = dict(attrs).get('class') or ''
            self._text = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        assert self.stack, f'</{tag}> closes nothing'
        assert self.stack[-1] == tag, f'</{tag}> closes {self.stack}'
        self.stack.pop()
        if tag == 'td':
            text = ''.join(self._text)
            if self._cell == 'name':
                self._name = text
            elif self._cell == 'value':
                row = (self._kind, self._name)
                assert row not in self.rows, f'{row!r} shown twice'
                self.rows[row] = text
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._text.append(data)


def _check_number(value: float, where: str) -> None:
    assert math.isfinite(value), f'{where}: {value}'


class Surfaces:
    """A running server, its Graphite receiver, and how to read them."""

    def __init__(self, server: Server, carbon: FakeCarbon) -> None:
        self.server = server
        self.carbon = carbon
        self._flushes = 0

    async def wait_for_packets(self, count: int) -> None:
        """Wait until the aggregator has taken in `count` packets."""
        key = f'{self.server.config.aggregator.prefix_stats}.packets_received'
        await wait_until(
            lambda: self.server.aggregator.current_counters()[key] >= count,
            what=f'{count} packets',
        )

    async def collect(self) -> Outputs:
        """Flush now and read every surface; fail if any is malformed."""
        lines_before = len(self.carbon.lines)
        self.server.flush()
        self._flushes += 1
        await self.carbon.wait_for_flushes(self._flushes)
        for line in self.carbon.lines[lines_before:]:
            text = line.decode('utf-8')
            assert text.isprintable(), repr(text)
            fields = text.split(' ')
            assert len(fields) == 3, repr(text)
            assert all(fields), repr(text)
            assert _JS_NUMBER.match(fields[1]), repr(text)
            assert fields[2].isdigit(), repr(text)
        graphite = parse_points(self.carbon.lines[lines_before:])
        for point in graphite:
            _check_number(point.value, point.name)

        metrics = []
        text = (await self._get('/metrics')).decode('utf-8')
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                _check_number(sample.value, sample.name)
                metrics.append((sample.name, dict(sample.labels), sample.value))

        load = json.loads(await self._get('/15'), parse_constant=_reject_constant)
        for name, value in load['Stat'].items():
            assert isinstance(value, (int, float)), (name, value)

        page = _Page()
        page.feed((await self._get('/')).decode('utf-8'))
        page.close()
        assert page.stack == [], f'unclosed {page.stack}'
        for name, shown in page.rows.items():
            assert shown == '\u2013' or math.isfinite(float(shown)), (name, shown)

        console = await self._console(b'counters\ngauges\nquit\n')
        assert console.count('END\n\n') == 2, console
        for value in _CONSOLE_VALUE.findall(console):
            _check_number(float(value), f'console: {console}')
        return Outputs(graphite, metrics, load['Stat'], page.rows, console)

    async def _get(self, path: str) -> bytes:
        host, port = self.server.http_addresses[0][:2]

        def get() -> bytes:
            url = f'http://{host}:{port}{path}'
            with urllib.request.urlopen(url, timeout=DEFAULT_TIMEOUT) as reply:
                assert reply.status == 200, (path, reply.status)
                return typing.cast(bytes, reply.read())

        return await asyncio.to_thread(get)

    async def _console(self, commands: bytes) -> str:
        host, port = self.server.admin_addresses[0][:2]
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), DEFAULT_TIMEOUT)
        try:
            writer.write(commands)
            reply = await asyncio.wait_for(reader.read(), DEFAULT_TIMEOUT)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await asyncio.wait_for(writer.wait_closed(), DEFAULT_TIMEOUT)
        return reply.decode('utf-8')


@contextlib.asynccontextmanager
async def serving_everything(
    **aggregator: typing.Any,
) -> typing.AsyncIterator[Surfaces]:
    """A server with every output on loopback, flushing only when told.

    :param aggregator: :class:`.AggregatorConfig` fields
    """
    async with FakeCarbon() as carbon, running_server(
        sinks=[(carbon.host, carbon.port)],
        load_sinks=(('127.0.0.1', 0),),
        admin=('127.0.0.1', 0),
        flush_interval=3600,
        # One frame for the whole test (frames are aligned to the epoch, so
        # with a minute's frames a test that runs across a minute would see
        # its flushes in two frames, and the overview the last one only).
        frame_length=_ONE_FRAME,
        aggregator=aggregator,
    ) as server:
        yield Surfaces(server, carbon)
