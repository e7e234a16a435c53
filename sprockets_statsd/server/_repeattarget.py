"""Where a repeater sends: a transport, a host and a port, checked.

Kept apart from the repeaters themselves so that the configuration can
name and check targets without importing the sockets and the event loop
that send to them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from sprockets_statsd._ports import check_port
from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.server.binding import format_address

__all__ = ['TCP', 'TRANSPORTS', 'UDP', 'RepeatTarget']

UDP = 'udp'
TCP = 'tcp'
#: Names and wildcard addresses that reach this host whatever it binds.
_LOOPBACK = frozenset({'localhost', '127.0.0.1', '::1', '0.0.0.0', '::'})
#: The transports a target can name; the first is the default.
TRANSPORTS = (UDP, TCP)


@dataclasses.dataclass(frozen=True)
class RepeatTarget:
    """Where a repeater sends: ``udp`` or ``tcp``, a host and a port.

    :param transport: ``'udp'`` or ``'tcp'``
    :param host: a name or address
    :param port: 1 to 65535
    :raises ConfigurationError: when a value cannot be used
    """

    transport: str
    host: str
    port: int

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ConfigurationError(
                f'repeat: transport {self.transport!r} must be udp or tcp'
            )
        if not isinstance(self.host, str) or not self.host:
            raise ConfigurationError(f'repeat: give a host, not {self.host!r}')
        check_port(self.port, f'repeat: the port of {self.host!r}', text=False)

    def is_bound_by(self, binds: Iterable[tuple[str, int]]) -> bool:
        """Whether this target is plainly one of the server's own `binds`
        (the same port, on a loopback name or the bound host), so that
        repeating to it would send every packet round for ever.

        Only what needs no name resolution is recognised.

        :param binds: ``(host, port)`` of the server's UDP and TCP listeners
        """
        return any(
            port == self.port and (self.host in _LOOPBACK or self.host == host)
            for host, port in binds
        )

    def __str__(self) -> str:
        return f'{self.transport}:{format_address((self.host, self.port))}'
