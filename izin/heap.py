"""Keep the C heap from going back to the kernel after every page of rows.

glibc's malloc returns the top of its heap to the kernel as soon as more than 128 KiB of it is
free, and takes it back on the next page of rows: a million page faults for a few million
exported records, more than half of the export's time (measured: audit export of 3.7M records,
29 s of which 12 s in the kernel; 16 s and 0.4 s with the settings below). Keeping up to
TRIM_THRESHOLD free at the top costs at most that much memory, never more per row; but glibc
keeps it in each of its arenas (one per thread that allocates), so this is for the single-threaded
streaming commands (`audit export`, `audit verify`), not for the threaded workers. Elsewhere than
glibc (musl, macOS) nothing changes.
"""

from __future__ import annotations

import ctypes

#: free memory at the heap's top kept rather than given back (glibc's default: 128 KiB, dynamic)
TRIM_THRESHOLD = 32 << 20
#: extra memory taken whenever the heap grows, so the next pages need no system call
TOP_PAD = 4 << 20
# mallopt's parameter numbers (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD = -1, -2


def keep_heap() -> bool:
    """Set this process's malloc to keep its freed heap; False where there is no glibc mallopt."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(_M_TOP_PAD, TOP_PAD))
