"""Give the C heap's free pages back to the system after a burst of work (glibc only).

Applying a commit or planning devices allocates and frees many short-lived buffers (documents,
rows, statuses) among objects that live on (the catalog, the fleet). glibc keeps the pages of
freed buffers in its heap unless they are at its top, so after planning a fleet the controller
held about 2 KiB a device of free memory (measured: 43 MiB of 270 at 20,000 devices).
`malloc_trim` returns those pages, in about 2 ms at that size. Where the C library has no
`malloc_trim` (musl, macOS), this does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any


def _find_trim() -> Callable[[int], Any] | None:
    try:
        process = ctypes.CDLL(None)  # the symbols of the running process, its C library's too
    except OSError:
        return None
    trim: Callable[[int], Any] | None = getattr(process, "malloc_trim", None)
    return trim


_TRIM = _find_trim()


def release_free_memory() -> None:
    """Return the C heap's free pages to the system, where the C library can."""
    if _TRIM is not None:
        _TRIM(0)
