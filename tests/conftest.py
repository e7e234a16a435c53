"""Fixtures shared by the client tests: a UDP receiver and clients aimed at it."""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator

import pytest

from sprockets_statsd.client import StatsClient
from tests.helpers import UDPReceiver


@pytest.fixture
def receiver() -> Iterator[UDPReceiver]:
    """A UDP socket on 127.0.0.1, read synchronously by the test."""
    server = UDPReceiver()
    yield server
    server.close()


@pytest.fixture
def make_client(receiver: UDPReceiver) -> Iterator[Callable[..., StatsClient]]:
    """Build StatsClients that send to `receiver`; closed after the test."""
    made: list[StatsClient] = []

    def make(**options: typing.Any) -> StatsClient:
        client = StatsClient('127.0.0.1', receiver.port, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
