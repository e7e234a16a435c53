"""The aggregator's hot path on today's statsd: DogStatsD fields and every tag dialect."""

from __future__ import annotations

from sprockets_statsd.server.parser import parse_packet
from tests.server.test_aggregator import flush_once


def test_orderings_and_dialects_aggregate_into_one_counter() -> None:
    """Every ordering and dialect of one tag set adds to one aggregate."""
    snap = flush_once(
        b'x:1|c|#b:2,a:1\nx:1|c|#a:1,b:2',
        b'x,b=2,a=1:1|c\nx;a=1;b=2:1|c',
        b'x;b=2:1|c|#a:1',
    )
    assert snap.counters['x;a=1;b=2'] == 5
    assert [k for k in snap.counters if k.startswith('x')] == ['x;a=1;b=2']


def test_container_id_dropped_or_kept() -> None:
    """The container id makes no series by default, a tag when kept."""
    packet = b'a:1|c|#env:prod|c:abc\na:1|c|#env:prod|c:def'
    assert flush_once(packet).counters['a;env=prod'] == 2
    kept = flush_once(packet, keep_container_id=True).counters
    assert kept['a;container_id=abc;env=prod'] == 1
    assert kept['a;container_id=def;env=prod'] == 1


def test_packed_values_aggregate_like_separate_lines() -> None:
    """``lat:1:2:3|d`` gives the timer three values and a count of three."""
    snap = flush_once(b'lat:1:2:3|d|@0.5')
    assert snap.timers['lat'] == (1.0, 2.0, 3.0)
    assert snap.timer_counters['lat'] == 6


def test_events_checks_and_unknown_fields_have_own_counters() -> None:
    """Each is counted in an internal counter of its own, not as bad lines."""
    snap = flush_once(
        b'_e{5,4}:title|text|#a:b\n_sc|db|0\n_sc|db|2\na:1|c|zz|yy:1\n_e{x}:y'
    )
    assert snap.counters['statsd.events_seen'] == 1
    assert snap.counters['statsd.service_checks_seen'] == 2
    assert snap.counters['statsd.unknown_fields_seen'] == 2
    assert snap.bad_lines_seen == 1
    assert snap.metrics_received == 5
    assert snap.counters['a'] == 1


def test_these_counters_appear_only_once_used() -> None:
    """Plain etsy traffic keeps the reference's output: no new counter."""
    snap = flush_once(b'a:1|c')
    assert not any(
        key.endswith(('events_seen', 'service_checks_seen', 'unknown_fields_seen'))
        for key in snap.counters
    )


def test_aggregator_and_parse_packet_agree() -> None:
    """The hot path and parse_packet count the same lines the same way."""
    packet = (
        b'a:1|c|#b:1,a:2|c:x\nlat:1:y:3|ms|#e:1\nk:1|c:20|ms\n_e{1,1}:a|b\n'
        b'_sc|s|1\nbad\nq:1|g|T\nw,a=1;b=2:1|c\nz:1|c|unknown|@0.5'
    )
    result = parse_packet(packet)
    snap = flush_once(packet)
    assert snap.bad_lines_seen == result.bad_lines
    assert snap.metrics_received == result.metrics_seen
    assert snap.counters['statsd.events_seen'] == result.events
    assert snap.counters['statsd.service_checks_seen'] == result.service_checks
    assert snap.counters['statsd.unknown_fields_seen'] == result.unknown_fields
    assert snap.counters['a;a=2;b=1'] == 1
    assert snap.counters['z'] == 2
    assert snap.timers['lat;e=1'] == (1.0, 3.0)
