"""glibc's allocator, tuned once on `import diffumnist`, before the first large tensor.

`tune_malloc()` stops glibc from handing the sampler's large activation buffers back to the
operating system after every step only to fault them in again (benchmarks/allocator.py
measures it). Apart from runtime.py because it needs no torch: importing the package stays
light, and the tuning still comes first.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

# glibc <malloc.h>: mallopt parameters, and the values tune_malloc sets.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20  # the largest value glibc accepts on 64-bit machines
TRIM_THRESHOLD_BYTES = 2**30
# Setting any of these means the user tunes glibc's malloc already; tune_malloc leaves it.
MALLOC_ENV_VARS = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


@functools.lru_cache(maxsize=1)
def tune_malloc() -> bool:
    """Make glibc keep freed activation buffers for reuse instead of returning them to the OS.

    By default glibc serves each allocation above its (adaptive) mmap threshold with a fresh
    mmap and unmaps it on free, and trims the heap top above 128 KiB, so every sampling
    step's tens-of-MiB activations are page-faulted in anew. Raising the mmap threshold to
    its maximum (32 MiB) and the trim threshold to 1 GiB keeps them in the heap. Returns
    True when applied; a no-op (False) where the C library is not glibc, where the user
    tunes malloc through its environment variables, or with DIFFUMNIST_TUNE_MALLOC=0.
    """
    if os.environ.get("DIFFUMNIST_TUNE_MALLOC", "1") == "0":
        return False
    if platform.system() != "Linux" or any(var in os.environ for var in MALLOC_ENV_VARS):
        return False
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded into this process
    except OSError:
        return False
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return False  # not glibc (musl, for one, has neither)
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
