"""Tier 1: the one port-range check of the clients and the server."""

from __future__ import annotations

import pytest

from sprockets_statsd._ports import MAX_PORT, check_port
from sprockets_statsd.errors import ConfigurationError


@pytest.mark.parametrize(('value', 'expected'), [(1, 1), (8125, 8125), (MAX_PORT, MAX_PORT),
                                                 ('8125', 8125)])
def test_ports_in_range_are_returned_as_ints(value: object, expected: int) -> None:
    """Ports from 1 to 65535, as ints or decimal text, come back as ints."""
    assert check_port(value, 'port') == expected


@pytest.mark.parametrize('value', [0, -1, MAX_PORT + 1, True, 8125.0, None, 'http', ''])
def test_other_values_are_refused_naming_the_range(value: object) -> None:
    """Anything else raises ConfigurationError naming the setting, the range and the value."""
    with pytest.raises(ConfigurationError) as raised:
        check_port(value, 'statsd.port')
    assert str(raised.value) == f'statsd.port must be a port number from 1 to 65535, not {value!r}'


def test_lowest_and_text_switches() -> None:
    """`lowest` admits port 0 where the system picks one; text=False refuses strings."""
    assert check_port(0, 'bind', lowest=0) == 0
    with pytest.raises(ConfigurationError, match='from 0 to 65535'):
        check_port(-1, 'bind', lowest=0)
    with pytest.raises(ConfigurationError, match="not '8125'"):
        check_port('8125', 'bind', text=False)
