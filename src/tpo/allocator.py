"""glibc's malloc, told to keep freed memory for reuse instead of handing it back at once.

glibc returns every freed block above its mmap threshold to the operating system, and trims
the top of its heap past the trim threshold, so a process that frees and allocates the same
large tensors again and again (a training step's activations and gradients, a decoding
step's logits) takes a page fault for every 4 KiB of them each time, and the kernel zeroes
each page. Measured on this project's 2-core machine (README, Training speed): the DPO bench
spent 262 of its 889 CPU seconds in the kernel with 54 million page faults.

`keep_freed_memory` sets the mmap threshold to 1 GiB and the trim threshold to its maximum
(`mallopt`), so freed blocks stay in the heap and the next step reuses them. The peak is
the same blocks as before; what changes is that the process does not shrink after its peak
until it ends. Linux with glibc only (elsewhere it does nothing); `TPO_KEEP_FREED_MEMORY=0`
turns it off. `tpo`'s command calls it at start, and so do launched training workers and
the benchmarks.

Kept blocks fragment the heap across stages that use memory differently (decoding's caches,
then training's activations): the embedded demo peaked 16% higher with it. So the loop
hands what is free back after each stage (`release_freed_memory`, glibc's `malloc_trim`),
and keeps it within a stage, where the same tensors come back at every step.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # blocks above 1 GiB still get their own mapping
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int
ENV = "TPO_KEEP_FREED_MEMORY"


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the OS (`malloc_trim(0)`; glibc only)."""
    libc = _glibc()
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim.argtypes = (ctypes.c_size_t,)
        trim(0)


def keep_freed_memory() -> bool:
    """Whether glibc now keeps freed memory for reuse (False where it is not glibc, or
    where `TPO_KEEP_FREED_MEMORY=0`)."""
    if os.environ.get(ENV, "1").strip() in ("0", "false", "no", "off"):
        return False
    mallopt = getattr(_glibc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
