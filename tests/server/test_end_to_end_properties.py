"""Arbitrary packets through listener, aggregator and every output.

Each example runs a real server on loopback (UDP listener, Graphite sink,
load sink, admin console), sends the packets as datagrams, flushes, and
reads every surface through :mod:`tests.server.outputs`, which fails on
anything malformed: a Graphite line that is not ``name value timestamp``,
a ``/metrics`` text prometheus_client cannot parse, JSON with NaN, an
overview page whose tags do not nest, NaN or Infinity anywhere.  Beside
the hostile lines, each packet carries good lines of known names whose
values every output must show exactly, and the server's own counts must
match what the parser says of each packet.
"""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sprockets_statsd.server._finite import saturate
from sprockets_statsd.server.parser import parse_packet
from tests.server.helpers import DEFAULT_TIMEOUT, send_udp
from tests.server.outputs import serving_everything

# Text a sender controls: protocol characters, whitespace and control
# characters, markup, quotes, non-ASCII, and numbers at the edges.
_HOSTILE_TEXT = st.text(
    alphabet=st.sampled_from(
        [*'ab.;=:|#@,-_ \t\r\x00\x7f<>&"\'/\\{}', '\u2028', '\u00e9', '\u2603']
    ),
    max_size=24,
)
_NUMBER_TEXT = st.sampled_from([
    '1', '-1', '0', '+5', '1e308', '-1e308', '1.7976931348623157e308', '5e-324',
    '1e-7', 'NaN', 'Infinity', '0x10', '', '1_0',
])
_TYPE = st.sampled_from(['c', 'ms', 'g', 's', 'h', 'd', 'x', ''])
_RATE = st.sampled_from(['', '|@1', '|@0.5', '|@5e-324', '|@1e-300', '|@2', '|@x'])


@st.composite
def _hostile_line(draw: st.DrawFn) -> str:
    """A line built from protocol pieces: good, bad or odd."""
    if draw(st.booleans()):
        return draw(_HOSTILE_TEXT)
    name = draw(_HOSTILE_TEXT)
    pieces = draw(st.lists(
        st.builds('{}|{}{}'.format, _NUMBER_TEXT, _TYPE, _RATE), min_size=1, max_size=3))
    tags = draw(st.sampled_from(['', '|#a:b', '|#x y:\t', '|#<b>:"q"']))
    return name + ':' + ':'.join(pieces) + tags


@st.composite
def _packet(draw: st.DrawFn, index: int) -> tuple[bytes, float]:
    """A datagram: hostile lines around one good counter line of a name
    no hostile line can produce; returns the datagram and the count."""
    count = draw(st.sampled_from([1.0, 2.5, 1e300]))
    lines = draw(st.lists(_hostile_line(), max_size=6))
    at = draw(st.integers(min_value=0, max_value=len(lines)))
    lines.insert(at, f'good{index}:{count!r}|c')
    return '\n'.join(lines).encode('utf-8', 'surrogatepass'), count


@st.composite
def _packets(draw: st.DrawFn) -> list[tuple[bytes, float]]:
    return [draw(_packet(i)) for i in range(draw(st.integers(1, 4)))]


async def _check(packets: list[tuple[bytes, float]], sanitize: bool) -> None:
    async with serving_everything(key_name_sanitize=sanitize) as surfaces:
        for data, _ in packets:
            send_udp(surfaces.server.udp_addresses[0], data)
        await surfaces.wait_for_packets(len(packets))
        out = await surfaces.collect()
        parsed = [parse_packet(data, sanitize=sanitize) for data, _ in packets]
        assert out.graphite_value('stats_counts.statsd.packets_received') == len(packets)
        assert out.graphite_value('stats_counts.statsd.metrics_received') == sum(
            p.metrics_seen for p in parsed)
        assert out.graphite_value('stats_counts.statsd.bad_lines_seen') == sum(
            p.bad_lines for p in parsed)
        for index, (_, count) in enumerate(packets):
            name = f'good{index}'
            assert out.graphite_value(f'stats_counts.{name}') == saturate(count)
            assert out.metric(f'{name}_total') == saturate(count)
            assert out.load[name] == saturate(count)
            assert ('counter', name) in out.overview


# Each example runs a whole server (about a second), so the shrink phase,
# which would take minutes, is left out: a failure is reported as drawn.
@settings(max_examples=25, deadline=None,
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow])
@given(packets=_packets(), sanitize=st.booleans())
def test_every_output_stays_well_formed_and_counts_every_good_line(
    packets: list[tuple[bytes, float]], sanitize: bool,
) -> None:
    """Whatever the packets hold, every output (Graphite text, /metrics as
    prometheus_client parses it, /N JSON, the overview HTML, the console's
    dumps) stays well-formed with finite numbers, each packet's good line
    shows its exact value everywhere, and the server counts the packets,
    lines and bad pieces the parser finds in them."""
    asyncio.run(asyncio.wait_for(_check(packets, sanitize), 6 * DEFAULT_TIMEOUT))
