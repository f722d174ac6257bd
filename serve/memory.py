"""Memory the allocator keeps after a large request goes back to the system."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's malloc_trim, or None on other C libraries (musl, macOS, Windows), where this does nothing."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def give_back_memory() -> None:
    """Return the free pages of every malloc arena to the system (glibc keeps them for reuse otherwise)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
