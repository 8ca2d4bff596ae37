"""Running one measurement in a child process: its output, wall time and peak memory."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time

POLL_SECONDS = 0.1


def run_child(command: list[str], env: dict | None = None) -> tuple[str, float, float]:
    """Run a command; returns (stdout, wall seconds, peak RSS in MB of that process).

    The peak is the kernel's high-water mark of the child's own memory (VmHWM), read while it
    runs: exact up to the last reading, POLL_SECONDS before it exits. The rusage figures cannot
    give it: a child's ru_maxrss starts from its parent's peak at the fork (Linux copies the
    high-water mark of the memory it replaces at exec), and this process's own evaluations
    reach gigabytes.
    """
    start = time.perf_counter()
    peak_kb = 0
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdout=out, stderr=err,
                                   env={**os.environ, **(env or {})})  # fmt: skip
        while process.poll() is None:
            peak_kb = max(peak_kb, _high_water_kb(process.pid))
            time.sleep(POLL_SECONDS)
        out.seek(0)
        err.seek(0)
        stdout, stderr = (f.read().decode(errors="replace") for f in (out, err))
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-2000:]}")
    return stdout, time.perf_counter() - start, peak_kb / 1024


def _high_water_kb(pid: int) -> int:
    """The process's peak resident memory so far in KB (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
