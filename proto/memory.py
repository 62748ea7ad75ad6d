"""Process memory: hand freed memory back to the system (glibc malloc).

Key stretching (OPAQUE's Argon2 at login, the profile's at-rest KDF) and
MLS ratchet trees allocate large buffers for a moment. glibc's malloc raises
its mmap threshold each time such a buffer is freed, so later large buffers
come from the heap and stay resident after they are freed: a client holds
~39 MB it no longer uses right after it logs in, where a fixed threshold
leaves ~2 MB (``bench/memory.py``). Both programs call
:func:`cap_mmap_threshold` at start-up; the node also trims after making a
decoy (:func:`trim_heap`). Elsewhere than glibc both are no-ops.

``MALLOC_MMAP_THRESHOLD_`` in the environment (glibc's own setting) wins:
then nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable

MMAP_THRESHOLD = 128 * 1024
"""Buffers this large or larger are mmapped and unmapped when freed (glibc's
starting value, kept fixed)."""

_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (glibc only: probe both)
    except (OSError, AttributeError):
        return None
    return libc


def cap_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix malloc's mmap threshold at ``threshold`` bytes (it stops adapting).

    Returns whether it was set (False: not glibc, or the environment sets it).
    """
    libc = _libc()
    if libc is None or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    mallopt: Callable[[int, int], int] = libc.mallopt
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))


def trim_heap() -> None:
    """Give the heap's free memory back to the system (glibc only)."""
    libc = _libc()
    if libc is not None:
        trim: Callable[[int], int] = libc.malloc_trim
        trim(0)
