"""Handing freed heap back to the OS: glibc keeps freed pages of its arenas resident otherwise.

Used where a process drops a lot at once: a sink after its upkeep (LanceDB handles and caches),
a query process after its text tower's fp32 weights are replaced by int8 ones."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Callable


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None on other C libraries (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_heap() -> bool:
    """Return the free pages of every malloc arena to the OS (glibc malloc_trim(0)).

    Freed memory in the middle of an arena otherwise stays resident: RSS creeps up with
    fragmentation although the bytes in use do not. Returns False where there is no glibc.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
