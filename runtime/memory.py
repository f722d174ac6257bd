"""Giving memory back to the system: the C heap's free pages, and the pages of a weight file the engine has
already copied into its own layout. Both are Linux (glibc) calls; elsewhere they do nothing. docs/memory.md."""
from __future__ import annotations

import ctypes
import sys
from pathlib import Path

_MADV_DONTNEED = 4


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def trim_heap() -> None:
    """Return the C heap's free pages to the system (glibc's malloc_trim). glibc keeps freed memory for reuse, so
    what an engine frees after loading or after a large batch stays in RSS until this is called."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
        trim(0)


def drop_file_pages(path: Path) -> int:
    """Unmap the resident pages of this process's read-only mappings of `path` (the data stays on disk and in the
    page cache; a later read faults it back in). Returns the bytes of mappings advised."""
    madvise = getattr(_LIBC, "madvise", None)
    if madvise is None:
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    target = str(Path(path).resolve())
    advised = 0
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        fields = line.split(maxsplit=5)
        # Only mappings nobody can write: their pages are exactly the file's, so dropping them loses nothing.
        if len(fields) < 6 or fields[5] != target or "w" in fields[1]:
            continue
        start, end = (int(value, 16) for value in fields[0].split("-"))
        if madvise(start, end - start, _MADV_DONTNEED) == 0:
            advised += end - start
    return advised
