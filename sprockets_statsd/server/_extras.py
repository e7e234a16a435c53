"""The server's optional dependencies, and the one line that names the extra to install.

Receiving, aggregating and flushing need only the standard library.  The load
sink's HTTP endpoints need Tornado and prometheus_client, and detaching with
``--daemonize`` needs python-daemon: the ``server`` extra installs all three.
Asking for one of these surfaces without it is a :class:`ConfigurationError`
that says what to install, never an import traceback.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

from sprockets_statsd.errors import ConfigurationError

__all__ = ['INSTALL', 'needs_extra', 'require']

#: The command that installs every optional dependency of the server.
INSTALL = "pip install 'sprockets-statsd[server]'"

# Top-level module -> the distribution the server extra installs it with.
_DISTRIBUTIONS = {
    'tornado': 'tornado',
    'prometheus_client': 'prometheus_client',
    'daemon': 'python-daemon',
}


@contextlib.contextmanager
def needs_extra(surface: str) -> Iterator[None]:
    """Turn the import of a missing optional dependency into a one-line error.

    Other import errors (a module of this package that is really missing,
    say) go through unchanged.

    :param surface: what needs the imports inside, to start the message with
    :raises ConfigurationError: ``<surface> needs <distribution>, which the
        server extra installs: pip install 'sprockets-statsd[server]'``
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        distribution = _DISTRIBUTIONS.get((exc.name or '').partition('.')[0])
        if distribution is None:
            raise
        raise ConfigurationError(
            f'{surface} needs {distribution}, which the server extra installs: {INSTALL}'
        ) from None


def require(surface: str, module: str) -> None:
    """Import `module` now, to fail early when `surface` cannot work.

    :param surface: what needs the module, for the message
    :param module: the module to import (it may need optional dependencies)
    :raises ConfigurationError: as :func:`needs_extra` says
    """
    with needs_extra(surface):
        importlib.import_module(module)
