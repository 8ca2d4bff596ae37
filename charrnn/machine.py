"""Facts about the machine that do not need torch: how many cores this process may use, and
how much memory it has.

What cannot fit is refused before it is allocated: a checkpoint may describe a model of at
most half the machine's memory; a generation, one pass of eval and the batches
inspect-batches shows may take at most half the memory free now. Refusing up front turns what
would be an out-of-memory kill (or minutes of swapping) into one line.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the platform tells)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


UNKNOWN = 1 << 50  # where the machine cannot say (no sysconf): nothing is refused for memory


def total_bytes() -> int:
    """Physical memory of the machine."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return UNKNOWN


def available_bytes() -> int:
    """Memory free for a new allocation now (Linux's MemAvailable: free plus reclaimable)."""
    try:
        with open("/proc/meminfo", "rb") as meminfo:
            for line in meminfo:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return total_bytes()


def size_text(count: float) -> str:
    """A number of bytes for a reader: 512 bytes, 3.2 MB, 1.5 TB."""
    for unit, size in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if count >= size:
            return f"{count / size:.1f} {unit}" if count < 1e21 else f"{count:.1e} bytes"
    return f"{int(count):,} bytes"


def beyond_half(needed: float, free: bool) -> str | None:
    """None when `needed` bytes fit in half the machine's memory (`free`: of what is free now),
    else the reason, in words, for an error message."""
    have = available_bytes() if free else total_bytes()
    if needed <= have / 2:
        return None
    which = "free memory" if free else "memory"
    return f"about {size_text(needed)}, more than half this machine's {which} ({size_text(have)})"
