"""Keeping freed memory for reuse, so that a training step does not fault its pages in afresh.

glibc's malloc hands every block over its mmap threshold (128 KB to 32 MB, adjusted as it
goes) straight from the kernel and returns it on free. A training step allocates and frees
the same large tensors every time (a 1x768 LSTM at batch 64 x 100: gates, activations,
gradients, oneDNN's workspace, tens of MB each), so every step the kernel maps them again and
zero-fills each 4 KB page on its first touch: ~45,000 page faults a step, measured at ~30% of
the step's time on a 2-core VM (benchmarks/NOTES.md). Raising the thresholds keeps the freed
blocks in malloc's heap, where the next step finds them already mapped.

The cost: memory a run has freed stays with the process, and blocks the training steps freed
cannot always serve the evaluations' other sizes: a 10-minute run of the 1x768 default peaked
at 1.5 GB against 1.0 GB before. jemalloc or tcmalloc (LD_PRELOAD) do the same and more; this
needs nothing installed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Mapping

# mallopt's parameter numbers (malloc.h) and the size under which blocks are kept: anything a
# CPU model this tool trains allocates at once stays well under it.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BELOW = 1 << 30


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks under 1 GiB for reuse. Returns whether it now does.

    Does nothing (False) where the C library is not glibc (macOS, Windows, musl) and where the
    user set malloc's thresholds themselves (``GLIBC_TUNABLES`` or ``MALLOC_*_THRESHOLD_``).
    Process-wide and idempotent: the command line calls it once as it starts.
    """
    if _user_chose_thresholds(os.environ):
        return False
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    # Trim first: the mmap threshold alone would still let free() give the heap's top back.
    return bool(mallopt(M_TRIM_THRESHOLD, KEEP_BELOW) and mallopt(M_MMAP_THRESHOLD, KEEP_BELOW))


def _user_chose_thresholds(environment: Mapping[str, str]) -> bool:
    tunables = environment.get("GLIBC_TUNABLES", "")
    return (
        "mmap_threshold" in tunables
        or "trim_threshold" in tunables
        or "MALLOC_MMAP_THRESHOLD_" in environment
        or "MALLOC_TRIM_THRESHOLD_" in environment
    )


def _glibc_mallopt():
    """glibc's mallopt, or None where the C library is another one."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # only glibc has it  # noqa: B018
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt
