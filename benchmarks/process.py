"""Running one measurement in a child process: its output, wall time and peak memory."""

from __future__ import annotations

import os
import resource
import subprocess
import time


def run_child(command: list[str], env: dict | None = None) -> tuple[str, float, float]:
    """Run a command; returns (stdout, wall seconds, peak RSS in MB of that process)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, **(env or {})})  # fmt: skip
    stdout, stderr = process.communicate()
    # wait4 is not available after communicate(); the children's peak is the same figure here,
    # since each child runs alone and RUSAGE_CHILDREN keeps the largest of them.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-2000:]}")
    return stdout, time.perf_counter() - start, peak
