"""Handing freed heap memory back to the operating system after a burst of work.

A pass allocates activations whose sizes change with every batch (rows x padded length). glibc's
malloc keeps what they free in its heap (its mmap threshold rises to 32 MB after the first large
frees), so a server's resident memory climbs with traffic although nothing stays alive:
benchmarks/load_test.py measured +49% over 10,000 requests. `malloc_trim` returns the free pages;
fixing the mmap threshold instead keeps memory flat but made passes ~30% slower in an experiment here
(each large tensor then page-faults fresh memory), so the batcher trims once traffic pauses (DynamicBatcher).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


def release_free_memory() -> bool:
    """Give the heap's free pages back to the OS; False where the platform cannot (nothing is done)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
