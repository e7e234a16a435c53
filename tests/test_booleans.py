"""One set of words for true and false in every environment variable that takes one."""

from __future__ import annotations

import socket

import pytest

from sprockets_statsd._booleans import FALSE_WORDS, TRUE_WORDS, parse_boolean
from sprockets_statsd._tornadosettings import _parse_enabled
from sprockets_statsd.client import from_env
from sprockets_statsd.server import cli

WORDS = [(word, True) for word in sorted(TRUE_WORDS)] + [
    (word, False) for word in sorted(FALSE_WORDS)]


@pytest.mark.parametrize(('word', 'meaning'), WORDS)
def test_every_reader_takes_every_word(word: str, meaning: bool) -> None:
    """STATSD_IPV6, STATSD_ENABLED and the server's switches read each word alike."""
    for spelling in (word, word.upper(), f' {word} '):
        assert parse_boolean(spelling) is meaning
        assert _parse_enabled(spelling, 'STATSD_ENABLED') is meaning
        config, _ = cli.settings_from([], {'STATSD_LEGACY_NAMESPACE': spelling})
        assert config.aggregator.legacy_namespace is meaning
        client = from_env({'STATSD_HOST': '::1' if meaning else '127.0.0.1',
                           'STATSD_IPV6': spelling})
        try:
            assert client._sock.family == (socket.AF_INET6 if meaning else socket.AF_INET)
        finally:
            client.close()


def test_other_text_is_no_word() -> None:
    """Text outside both sets is refused where a switch is strict."""
    assert parse_boolean('maybe') is None
    assert parse_boolean('') is None
    with pytest.raises(SystemExit):
        cli.settings_from([], {'STATSD_LEGACY_NAMESPACE': 'maybe'})
