"""Keeping freed memory for reuse, so that a training step does not fault its pages in afresh.

glibc's malloc hands every block over its mmap threshold (128 KB to 32 MB, adjusted as it
goes) straight from the kernel and returns it on free. A training step allocates and frees
the same large tensors every time (a 1x768 LSTM at batch 64 x 100: gates, activations,
gradients, oneDNN's workspace, tens of MB each), so every step the kernel maps them again and
zero-fills each 4 KB page on its first touch: ~45,000 page faults a step, measured at ~30% of
the step's time on a 2-core VM (benchmarks/NOTES.md). Raising the thresholds keeps the freed
blocks in malloc's heap, where the next step finds them already mapped.

The cost: memory a run has freed stays with the process until it is given back
(``release_freed_memory``), which the trainer does where the sizes it allocates change for good:
after auto_size has timed each shape. The 1x768 default's 10-minute run on Tiny Shakespeare
(sampled every 0.1 s; benchmarks/NOTES.md, "The allocator"): with glibc's own thresholds it
peaked at 1.08 GB while auto_size timed its shapes and trained in ~0.8 GB; with these, the
timing of 1x1024 in two precisions peaks at 1.3-1.45 GB, and the first minute of training
holds ~0.86 GB (1.32 GB all run before the trainer gave the timed shapes' memory back).
jemalloc or tcmalloc (LD_PRELOAD) do the same and more; this needs nothing installed.
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
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return False
    # Trim first: the mmap threshold alone would still let free() give the heap's top back.
    return bool(mallopt(M_TRIM_THRESHOLD, KEEP_BELOW) and mallopt(M_MMAP_THRESHOLD, KEEP_BELOW))


def release_freed_memory() -> None:
    """Give the freed memory malloc keeps back to the system (glibc's malloc_trim; elsewhere
    nothing: other allocators return memory their own way).

    For a point after which the process allocates other sizes: the blocks it keeps would not
    all be reused, and would stay resident beside the new ones. The next allocations of the
    sizes given back fault their pages in again, once.
    """
    trim = _glibc_function("malloc_trim")
    if trim is not None:
        trim(0)


def _user_chose_thresholds(environment: Mapping[str, str]) -> bool:
    tunables = environment.get("GLIBC_TUNABLES", "")
    return (
        "mmap_threshold" in tunables
        or "trim_threshold" in tunables
        or "MALLOC_MMAP_THRESHOLD_" in environment
        or "MALLOC_TRIM_THRESHOLD_" in environment
    )


# The argument types of the glibc functions used (both return an int).
ARGUMENTS = {"mallopt": [ctypes.c_int, ctypes.c_int], "malloc_trim": [ctypes.c_size_t]}


@functools.cache
def _glibc_function(name: str):
    """glibc's function `name` (mallopt or malloc_trim), or None where the C library is
    another one."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.gnu_get_libc_version  # only glibc has it  # noqa: B018
        function = getattr(libc, name)
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = ARGUMENTS[name]
    function.restype = ctypes.c_int
    return function
