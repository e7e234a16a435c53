"""Sphinx configuration for the sprockets_statsd documentation."""

from __future__ import annotations

import sprockets_statsd

project = 'sprockets_statsd'
copyright = '2026, sprockets_statsd maintainers'
release = sprockets_statsd.__version__
version = '.'.join(release.split('.')[:2])

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.viewcode',
]
autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
autodoc_preserve_defaults = True
nitpicky = True
# The documentation is built without network access, so references into
# other projects' documentation (the standard library, Tornado) cannot be
# resolved through intersphinx; they are rendered as plain names instead.
nitpick_ignore_regex = [
    (r'py:.*', r'(asyncio|socket|datetime|decimal|logging|typing|collections|'
               r'types|concurrent|threading|time|random|tornado|sprockets\.http|'
               r'prometheus_client|argparse|signal|os|pathlib|ssl)(\..*)?'),
    (r'py:.*', r'(Callable|Mapping|Sequence|Iterable|Awaitable|Coroutine|Any|'
               r'Tags|_F|T|Self)'),
    (r'envvar', r'.*'),
]
html_theme = 'alabaster'
html_static_path: list[str] = []
exclude_patterns = ['_build']
