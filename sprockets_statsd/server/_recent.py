"""A few recent results, kept for the next request that asks for the same."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ['Recent']

_K = TypeVar('_K')
_V = TypeVar('_V')


class Recent(Generic[_K, _V]):
    """The latest `bound` values, each under the key it was made for.

    Safe to use from threads: what is kept is replaced, never changed.
    Keys are compared with ``==`` (they may be unhashable, lists say).

    :param bound: values kept; keeping one more drops the oldest
    """

    def __init__(self, bound: int) -> None:
        self._bound = bound
        self._kept: tuple[tuple[_K, _V], ...] = ()

    def get(self, key: _K) -> _V | None:
        """The value kept under `key`, if any."""
        for kept, value in self._kept:
            if kept == key:
                return value
        return None

    def items(self) -> tuple[tuple[_K, _V], ...]:
        """Every key and value kept, the latest first."""
        return self._kept

    def keep(self, key: _K, value: _V) -> None:
        """Keep `value` under `key`, dropping the oldest beyond the bound."""
        self._kept = ((key, value), *self._kept[:self._bound - 1])

    def keep_only(self, wanted: Callable[[_K], bool]) -> None:
        """Drop the values whose key is not `wanted`."""
        self._kept = tuple(item for item in self._kept if wanted(item[0]))
