"""The server's listening sockets, as a :class:`.ServerConfig` names them.

Every ``binds`` address gets its UDP and TCP sockets, then come the Unix
stream and datagram sockets when configured.  A socket that cannot be
bound raises an :class:`OSError` that names its address.  Listeners are
appended as they are made, so that the caller can close those already
open when a later one fails.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from sprockets_statsd.server import binding, listeners
from sprockets_statsd.server._admission import Admission

if TYPE_CHECKING:
    from sprockets_statsd.server.config import ServerConfig

__all__ = ['bind_listeners']


def bind_listeners(
    config: ServerConfig,
    receiver: listeners.PacketReceiver,
    admission: Admission,
    udp_listeners: list[listeners.UDPListener],
    stream_listeners: list[listeners.StreamListener],
) -> None:
    """Bind every listening socket of `config`, appending its listener.

    :param config: the addresses, buffer sizes and the longest line
    :param receiver: what every listener hands its packets to
    :param admission: the bounds shared by the stream listeners
    :param udp_listeners: the UDP and Unix datagram listeners, appended to
    :param stream_listeners: the TCP and Unix stream listeners, appended to
    :raises OSError: naming the address that cannot be bound; listeners
        made before it stay in the lists, not yet started
    """

    def stream(sock: socket.socket) -> listeners.StreamListener:
        return listeners.StreamListener(
            sock, receiver, max_line_length=config.max_line_length,
            admission=admission,
        )

    for host, port in config.binds:
        try:
            udp, tcp = binding.bind_sockets(
                host, port, udp_receive_buffer=config.udp_receive_buffer
            )
        except OSError as exc:
            where = binding.format_address((host or '*', port))
            raise OSError(
                exc.errno, f'cannot listen on {where}: {exc.strerror or exc}'
            ) from exc
        udp_listeners.extend(
            listeners.UDPListener(sock, receiver) for sock in udp
        )
        stream_listeners.extend(stream(sock) for sock in tcp)
    if config.unix_socket is not None:
        try:
            sock = binding.bind_unix_socket(
                config.unix_socket, config.unix_socket_mode
            )
        except OSError as exc:
            raise OSError(
                exc.errno,
                f'cannot listen on {config.unix_socket}: {exc.strerror or exc}',
            ) from exc
        stream_listeners.append(stream(sock))
    if config.unix_datagram is not None:
        try:
            sock = binding.bind_unix_datagram_socket(
                config.unix_datagram,
                config.unix_datagram_mode,
                receive_buffer=config.udp_receive_buffer,
            )
        except OSError as exc:
            raise OSError(
                exc.errno,
                f'cannot listen on {config.unix_datagram}: {exc.strerror or exc}',
            ) from exc
        udp_listeners.append(listeners.UDPListener(sock, receiver))
