"""glibc's handling of freed memory: keep it for reuse (the ``napari-retina`` command), or hand it back now.

Attribution and prediction on a CPU allocate and free tens of megabytes of
temporaries per batch. With glibc's defaults, each free returns the memory to
the system (munmap, or trimming the heap's top), and the next batch faults the
same amount back in page by page: 2.5 million minor page faults for 1,000
attributed and 20,000 predicted frames, which made attribution 1.23× and
prediction 1.43× slower on a 2-core CPU (BENCHMARKS.md, "Page faults").
:func:`hold_freed_memory` raises glibc's mmap threshold to 256 MiB (larger
blocks, e.g. whole movies or map stacks, still get their own mapping and go
back to the system when freed) and its trim threshold to 512 MiB (at most that
much freed heap is kept for reuse).

This is a process-wide choice, so only the command-line entry point makes it;
the library and the napari plugin, which run in someone else's process, do
not. Scripts can make the same choice with the environment variables
``MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=536870912``.

:func:`release_freed_memory` does the opposite, once: a batch worker calls it
after each block so that freed heap does not pile up between blocks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: blocks of this size (bytes) or more get their own mapping, returned to the system when freed
MMAP_THRESHOLD = 256 * 2**20
#: freed memory at the top of the heap kept for reuse (bytes)
TRIM_THRESHOLD = 512 * 2**20
# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``gnu_get_libc_version``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - raises AttributeError on other C libraries (musl)
    except (OSError, AttributeError):
        return None
    return libc


def hold_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (module docstring); whether both were set (False off glibc)."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) & bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def release_freed_memory() -> None:
    """Hand the freed heap back to the system now (glibc's ``malloc_trim``); nothing off glibc."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
