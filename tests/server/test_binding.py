"""Binding the server's sockets: shared ports, receive buffers, Unix socket files."""

from __future__ import annotations

import logging
import os
import socket

import pytest

from sprockets_statsd.server import binding


def test_udp_and_tcp_share_the_port_chosen_for_port_zero() -> None:
    """With port 0, UDP and TCP are bound to one port."""
    udp, tcp = binding.bind_sockets('127.0.0.1', 0)
    try:
        assert udp[0].getsockname()[1] == tcp[0].getsockname()[1] != 0
    finally:
        for sock in udp + tcp:
            sock.close()


def test_receive_buffer_size_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """The effective SO_RCVBUF is read back and logged."""
    caplog.set_level(logging.INFO, logger=binding.__name__)
    udp, tcp = binding.bind_sockets('127.0.0.1', 0, udp_receive_buffer=256 * 1024)
    try:
        effective = udp[0].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert effective >= 256 * 1024 or 'raise net.core.rmem_max' in caplog.text
        assert 'UDP receive buffer is' in caplog.text
    finally:
        for sock in udp + tcp:
            sock.close()


def test_unix_socket_refuses_to_replace_a_regular_file(tmp_path: os.PathLike[str]) -> None:
    """A path that is a regular file is not removed; binding fails instead."""
    path = os.path.join(tmp_path, 'not-a-socket')
    with open(path, 'w') as f:
        f.write('keep me')
    with pytest.raises(OSError, match='in use'):
        binding.bind_unix_socket(path)
    with open(path) as f:
        assert f.read() == 'keep me'


def test_format_address() -> None:
    """Addresses print as host:port, [v6]:port, or a path."""
    assert binding.format_address(('127.0.0.1', 8125)) == '127.0.0.1:8125'
    assert binding.format_address(('::', 8125, 0, 0)) == '[::]:8125'
    assert binding.format_address('/run/statsd.sock') == '/run/statsd.sock'
