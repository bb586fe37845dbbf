"""Keep large CPU tensors on the heap instead of fresh ``mmap`` pages (glibc only; process-wide).

glibc ``malloc`` serves every allocation above 32 MB (the ceiling of its dynamic mmap threshold) with a new ``mmap``
and returns it with ``munmap`` when freed. A training step at batch 1024 and T = 100 allocates and frees dozens of
such tensors (each (B, T, D) float32 activation and gradient is 52 MB), so every step page-faults and zero-fills
them again: measured as 14.0 s of system time in a 27 s run and **1,452 → 2,373 samples/s** for ``dhan`` at T = 100
on 2 threads (757 → 1,408 at T = 200), for 12 % (T = 100) and 33 % (T = 200) more peak memory (docs/benchmarks.md).
This is the problem PyTorch's CPU tuning guide answers with jemalloc or tcmalloc via ``LD_PRELOAD``;
:func:`tune_malloc` gets the same effect without a preload, by ``mallopt``: no allocation is served by ``mmap``
(``M_MMAP_MAX = 0``), and freed memory at the top of the heap is returned to the system only beyond 2 GiB
(``M_TRIM_THRESHOLD``). The process then keeps its peak heap (plus some fragmentation: freed blocks are reused once
neighbours coalesce), which a training or scoring process reaches again on the next step anyway.

The ``dhan`` commands that run models call it at start-up; a script using the library can call it itself. It does
nothing (and returns False) off glibc, e.g. on macOS or musl, or when the environment sets ``DHAN_MALLOC_TUNING=0``.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes an int: 2 GiB is the largest value


def tune_malloc() -> bool:
    """Serve large allocations from the heap (see the module docstring). True if glibc accepted both settings."""
    if os.environ.get("DHAN_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (present on glibc only; musl's mallopt is a no-op)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1)
