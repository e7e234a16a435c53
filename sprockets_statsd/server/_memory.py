"""Give memory freed by a large flush back to the operating system."""

# Strategy: a flush of a million names allocates and frees tens of MB in
# pieces of a few hundred KB (rendered chunks), in threads.  glibc keeps
# what such pieces leave free inside its heaps, so the server's RSS would
# grow by a flush's worth and stay there; malloc_trim(0) returns the free
# pages.  It costs a few milliseconds, once per flush, and exists only
# with glibc: elsewhere this does nothing.

from __future__ import annotations

import ctypes
import ctypes.util
import typing

__all__ = ['release_free_memory', 'released']

_T = typing.TypeVar('_T')


def _find_trim() -> typing.Callable[[int], int] | None:
    name = ctypes.util.find_library('c')
    if name is None:
        return None
    try:
        trim: typing.Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_trim = _find_trim()


def release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc; else nothing)."""
    if _trim is not None:
        _trim(0)


def released(work: typing.Callable[..., _T], *args: object) -> _T:
    """`work` done, then the memory it freed given back to the system.

    For worker threads: a render, a merge or a new frame's sums allocate
    and free tens of MB, which glibc would otherwise keep in its heaps (at
    500k counters a server stays ~60-110 MiB larger than what it holds).
    """
    try:
        return work(*args)
    finally:
        release_free_memory()
