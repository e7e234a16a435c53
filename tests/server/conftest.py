"""Fixtures shared by the server tests."""

from __future__ import annotations

import logging
import typing

import pytest


@pytest.fixture
def root_logging() -> typing.Iterator[logging.Logger]:
    """The root logger, with its handlers and level restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
