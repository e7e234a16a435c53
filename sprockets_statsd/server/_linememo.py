"""Memoised parsing of received lines: names to keys, bodies to values.

A busy fleet sends the same few names and the same few bodies
(``1|c``) over and over, so the aggregator parses each once: received
names (with their DogStatsD tags) map to stored keys, and the bodies after
the name map to parsed values.  Each memo is bounded, and cleared when
full, so that unique garbage cannot grow it.
"""

from __future__ import annotations

from sprockets_statsd.errors import MetricParseError
from sprockets_statsd.server._aggregatorconfig import AggregatorConfig
from sprockets_statsd.server._body import Body, ParsedValue, parse_body
from sprockets_statsd.server.parser import make_key

__all__ = ['LineMemo']


# Bounds of the memos: enough for the names and common values of a busy
# fleet, small enough (a few MB) that unique garbage cannot grow them.
_MAX_KEYS = 50_000
_MAX_BODIES = 20_000


class LineMemo:
    """The two memos of an aggregator, with the parses that fill them.

    The hot path looks its names up in :attr:`keys` and its bodies in
    :attr:`bodies` directly, and calls :meth:`key` or :meth:`body` only on
    a miss.  Both dictionaries are cleared in place, never replaced.

    :param config: the settings of the keys: sanitising, prefix, and
        whether to keep a container id
    """

    def __init__(self, config: AggregatorConfig) -> None:
        self._config = config
        #: Received names, then ``\n`` and the tags if any, to stored keys.
        self.keys: dict[str, str] = {}
        #: Bodies to parsed values (see :meth:`body`).
        self.bodies: dict[str, Body | ParsedValue] = {}

    def key(self, raw: str) -> str:
        """Memoised :func:`.parser.make_key`; ``''`` for a bad name.

        :param raw: the name, then ``\\n`` and the DogStatsD tags if any
        """
        name, _, tags = raw.partition('\n')
        try:
            key = make_key(
                name,
                tags,
                sanitize=self._config.key_name_sanitize,
                prefix=self._config.key_prefix,
            )
        except MetricParseError:
            key = ''
        if len(self.keys) >= _MAX_KEYS:
            self.keys.clear()
        self.keys[raw] = key
        return key

    def body(self, text: str) -> Body | ParsedValue:
        """Memoised :func:`._body.parse_body`.

        A body of one good sample and nothing else, the common case, is
        kept as that sample alone: a timer's values rarely repeat, and the
        smaller entry makes the memo cheaper to fill.
        """
        parsed: Body | ParsedValue = parse_body(
            text, keep_container_id=self._config.keep_container_id
        )
        values, tags, bad, unknown = parsed  # type: ignore[misc]
        if len(values) == 1 and not (tags or bad or unknown):
            parsed = values[0]
        if len(self.bodies) >= _MAX_BODIES:
            self.bodies.clear()
        self.bodies[text] = parsed
        return parsed
