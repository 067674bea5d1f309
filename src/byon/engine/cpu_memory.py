"""glibc malloc settings for CPU training: keep freed memory for the next step instead of handing it back.

A training step on CPU allocates and frees the same activations every step, many of them megabytes (at the
fmnist-cpu shapes a ViT block's MLP output is 26 MB). glibc serves such blocks with mmap, or from the heap top
that it trims back to the kernel once enough is free, so every step faults the same pages in again: 10^5 minor
page faults a step and 5-15 % of the CPU time in the kernel (BYOL, benchmarks/lightly-byol-cpu.md). With mmap
off for malloc and the heap trimmed only above 2 GB free, the pages stay mapped from one step to the next;
the numbers computed are the same, the process's resident memory stays at its peak.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # a C int: the largest value mallopt takes

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's M_MMAP_MAX = 0 and M_TRIM_THRESHOLD = 2 GB in this process (once); True when in effect. A
    no-op (False) off Linux/glibc, or when the user set any MALLOC_* variable (their settings win)."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    if any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _applied


__all__ = ["keep_freed_memory"]
