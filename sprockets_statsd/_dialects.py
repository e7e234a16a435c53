"""Tag dialects: what a name and a tag can carry in each, and :class:`TagSet`.

Each dialect has its translation tables: one for names (the protocol's
characters, and the one that starts the dialect's tags) and one for tag
keys and values.  :class:`TagSet` renders a client's tags with them, its
constant tags joined once.
"""

from __future__ import annotations

from collections.abc import Mapping

from sprockets_statsd.errors import ConfigurationError

__all__ = [
    'DIALECTS',
    'NAME_TABLE',
    'NAME_TABLES',
    'PROTOCOL_CHARACTERS',
    'TAG_TABLES',
    'TagSet',
]

#: Tag dialects understood by :class:`TagSet`.
DIALECTS = ('dogstatsd', 'influxdb', 'graphite')

# Characters that end a name, a value or a line in the statsd protocol.  They
# are replaced rather than rejected: renaming one metric is better than losing
# it, and the replacement is deterministic so the series stays stable.
PROTOCOL_CHARACTERS = ':|@#\n\r\x00'
NAME_TABLE = str.maketrans(dict.fromkeys(PROTOCOL_CHARACTERS, '_'))

# Per-dialect characters that cannot appear in a tag key or value.  Each is
# replaced with ``_`` (see docs/tags.rst for the rule and the reasons).
_TAG_FORBIDDEN: Mapping[str, str] = {
    # DogStatsD separates tags with ',' and a key from its value with ':'.
    'dogstatsd': PROTOCOL_CHARACTERS + ',',
    # Telegraf's statsd input splits tags on ',' and '=' and does not
    # unescape; a space ends the measurement in the line protocol.
    'influxdb': PROTOCOL_CHARACTERS + ',= ',
    # Graphite tags are ';'-separated 'key=value' pairs; '~' and '!' and '^'
    # are operators in tag queries.
    'graphite': PROTOCOL_CHARACTERS + ';=~!^ ',
}
# A name must not contain the character that starts the tags of its dialect.
NAME_TABLES = {
    None: NAME_TABLE,
    'dogstatsd': NAME_TABLE,
    'influxdb': str.maketrans(dict.fromkeys(PROTOCOL_CHARACTERS + ',', '_')),
    'graphite': str.maketrans(dict.fromkeys(PROTOCOL_CHARACTERS + ';', '_')),
}
TAG_TABLES = {
    dialect: str.maketrans(dict.fromkeys(chars, '_'))
    for dialect, chars in _TAG_FORBIDDEN.items()
}


class TagSet:
    """Renders tags in one dialect, with constant tags joined once.

    :param dialect: ``None`` (tags are a :class:`ConfigurationError`),
        ``'dogstatsd'``, ``'influxdb'`` or ``'graphite'``
    :param constant_tags: tags added to every metric
    :raises ConfigurationError: for an unknown dialect, or constant tags
        without a dialect

    Keys and values are converted with :func:`str` and every character the
    dialect cannot carry is replaced with ``_``.  An empty key is rejected
    when given as a constant tag and dropped (with the metric kept) when
    given per call.
    """

    __slots__ = ('_constant', '_table', 'dialect', 'head_sep', 'tail_sep')

    def __init__(
        self,
        dialect: str | None = None,
        constant_tags: Mapping[str, object] | None = None,
    ) -> None:
        if dialect is not None and dialect not in DIALECTS:
            raise ConfigurationError(
                f'tag_dialect must be one of {", ".join(DIALECTS)} or None, '
                f'not {dialect!r}'
            )
        if constant_tags and dialect is None:
            raise ConfigurationError(
                'constant tags need a tag dialect: pass tag_dialect='
                '"dogstatsd", "influxdb" or "graphite"'
            )
        self.dialect = dialect
        self._table = TAG_TABLES.get(dialect or '', {})
        # The separator before the first tag and between tags.
        self.head_sep, self.tail_sep = {
            None: ('', ''),
            'dogstatsd': ('|#', ','),
            'influxdb': (',', ','),
            'graphite': (';', ';'),
        }[dialect]
        for key in constant_tags or {}:
            if not str(key):
                raise ConfigurationError('constant tag keys must not be empty')
        self._constant = self._join(constant_tags or {})

    @property
    def constant(self) -> str:
        """The constant tags, joined and escaped, without a leading separator."""
        return self._constant

    def _join(self, tags: Mapping[str, object]) -> str:
        pair = '=' if self.dialect != 'dogstatsd' else ':'
        parts = []
        for key, value in tags.items():
            key_text = str(key).translate(self._table)
            if not key_text:
                continue
            if value is None and self.dialect == 'dogstatsd':
                parts.append(key_text)
            else:
                parts.append(f'{key_text}{pair}{str(value).translate(self._table)}')
        return self.tail_sep.join(parts)

    def render(self, tags: Mapping[str, object] | None) -> str:
        """Return constant plus per-call tags with the leading separator.

        :raises ConfigurationError: when tags are given and there is no dialect
        """
        if not tags:
            return self.head_sep + self._constant if self._constant else ''
        if self.dialect is None:
            raise ConfigurationError(
                'tags were given but the client has no tag dialect: pass '
                'tag_dialect="dogstatsd", "influxdb" or "graphite"'
            )
        extra = self._join(tags)
        joined = self.tail_sep.join(part for part in (self._constant, extra) if part)
        return self.head_sep + joined if joined else ''
