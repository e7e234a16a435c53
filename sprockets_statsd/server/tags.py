"""Canonical tag sets: every tag dialect in, one ``name;k=v`` key out.

Strategy: a received metric can carry tags in three places, depending on
the client's dialect: Graphite (``name;k=v;k2=v2``) and InfluxDB/Telegraf
(``name,k=v,k2=v2``) put them in the name, DogStatsD puts them in a
``|#k:v,k2:v2`` field after the type.  :func:`canonical_key` reads all of
them into one mapping and writes it back in one canonical form, the tags
sorted by key, so that every dialect and every ordering of one tag set
gives one aggregate, one Graphite series and one Prometheus label set.

The rules, in the order they apply:

* a name containing ``;`` carries Graphite tags; otherwise a name
  containing ``,`` carries InfluxDB tags;
* an empty tag (``;;``, ``,,``, a lone ``,``) and a tag with an empty key
  are left out;
* a tag without a value (DogStatsD ``#canary``, or ``k=`` / ``k:``) gets
  the value ``true``, because Graphite refuses a tag without one;
* a key given twice keeps its last value, name tags coming before
  DogStatsD tags (Graphite and Prometheus do the same with their input);
* ``;`` in a key or a value, and ``=`` in a key, become ``_``: they would
  otherwise start a new tag or move the value;
* with sanitising on, keys, values and the name are each cleaned like the
  reference's ``keyNameSanitize``, then the tags are sorted by key.
"""

from __future__ import annotations

import re

from sprockets_statsd.errors import MetricParseError

__all__ = ['EMPTY_VALUE', 'canonical_key', 'sanitize_key']

#: The value of a tag that was given without one.
EMPTY_VALUE = 'true'

# JavaScript's ``\s``, which the reference uses to sanitise names.
_WHITESPACE_RUN = re.compile(
    '[\t\n\x0b\x0c\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]+'
)
_DISALLOWED = re.compile(r'[^A-Za-z0-9_.;=\-]')
_KEY_TABLE = str.maketrans({';': '_', '=': '_'})
_VALUE_TABLE = str.maketrans({';': '_'})


def sanitize_key(key: str) -> str:
    """Clean a key like the reference's ``keyNameSanitize``.

    Runs of whitespace become ``_``, ``/`` becomes ``-``, and every
    character outside ``[A-Za-z0-9_.;=-]`` is deleted.

    :param key: the received name, tags included
    :returns: the cleaned key
    """
    return _DISALLOWED.sub('', _WHITESPACE_RUN.sub('_', key).replace('/', '-'))


def _add(tags: dict[str, str], text: str, separator: str, sanitize: bool) -> None:
    """Add one ``k<separator>v`` tag to `tags`, following the module's rules."""
    key, _, value = text.partition(separator)
    key = key.translate(_KEY_TABLE)
    value = value.translate(_VALUE_TABLE)
    if sanitize:
        key = sanitize_key(key)
        value = sanitize_key(value)
    if not key:
        return
    # A later value of the same key replaces the earlier one, also in
    # the order of the final key (pop, then insert).
    tags.pop(key, None)
    tags[key] = value or EMPTY_VALUE


def canonical_key(
    name: str, dogstatsd_tags: str = '', *, sanitize: bool = True, prefix: str = ''
) -> str:
    """Build the stored key of a metric from its name and its tags.

    :param name: the received name, with Graphite or InfluxDB tags if any
    :param dogstatsd_tags: the text of the ``|#`` field, without the ``#``
    :param sanitize: clean the name and the tags (``keyNameSanitize``)
    :param prefix: prepended to the name with a ``.`` unless empty
    :returns: ``name`` followed by ``;k=v`` for every tag, sorted by key
    :raises MetricParseError: when the name is empty (or sanitises to
        nothing), or when it still holds a ``=`` after its tags were taken
        off, which happens when two name dialects are mixed
        (``name,a=b;c=d``)
    """
    if ';' in name:
        name, _, rest = name.partition(';')
        parts, separator = rest.split(';'), '='
    elif ',' in name:
        name, _, rest = name.partition(',')
        parts, separator = rest.split(','), '='
    else:
        parts, separator = [], '='
    if sanitize:
        name = sanitize_key(name)
    if not name:
        raise MetricParseError('the metric name is empty')
    if not parts and not dogstatsd_tags:
        return f'{prefix}.{name}' if prefix else name
    if parts and '=' in name:
        raise MetricParseError(f'{name!r}: tag dialects are mixed in the name')
    tags: dict[str, str] = {}
    for part in parts:
        if part:
            _add(tags, part, separator, sanitize)
    if dogstatsd_tags:
        for part in dogstatsd_tags.split(','):
            if part:
                _add(tags, part, ':', sanitize)
    suffix = ''.join(f';{key}={tags[key]}' for key in sorted(tags))
    return f'{prefix}.{name}{suffix}' if prefix else name + suffix
