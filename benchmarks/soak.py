"""Soak: a long run compressed into minutes of tiny steps and checkpoints; memory must not grow.

    python -m benchmarks.soak [--seconds 180] [--checkpoint-every 5] [--eval-every 50]

Runs `charrnn train --max-time SECONDS` on a tiny model as a subprocess: thousands of steps,
a last.pt every few steps and an evaluation (and perhaps a best.pt) every few dozen, what an
hour-long run on a real model amounts to in saves and evaluations. It samples the process's
resident memory (VmRSS) and open file descriptors from /proc five times a second, and
compares the peak memory of the first fifth of the run (after a warm-up) with the peak of
the last fifth. Exits 1 if memory grew by more than --tolerance-mb or descriptors leaked.
Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks import workspace
from charrnn import checkpoint as ckpt
from charrnn.files import TEMPORARY_MARK

SAMPLE_SECONDS = 0.2


def resident_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None  # the process just ended
    return None


def open_descriptors(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--tolerance-mb", type=float, default=10.0)
    options = parser.parse_args()

    work, corpus = workspace.fresh("soak", 200_000)
    run = work / "run"
    command = [
        sys.executable, "-m", "charrnn", "train", "--config", "tiny", "--threads", "1",
        "--corpus", str(corpus), "--out", str(run), "--max-steps", "0",
        "--max-time", str(options.seconds), "--eval-every", str(options.eval_every),
        "--eval-chars", "2000", "--checkpoint-every", str(options.checkpoint_every),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    started = time.monotonic()
    samples: list[tuple[float, float, int]] = []  # (seconds, resident MB, descriptors)
    while process.poll() is None:
        memory, descriptors = resident_mb(process.pid), open_descriptors(process.pid)
        if memory is not None and descriptors is not None:
            samples.append((time.monotonic() - started, memory, descriptors))
        time.sleep(SAMPLE_SECONDS)
    _, stderr = process.communicate()
    if process.returncode != 0:
        sys.exit(f"the run failed (exit {process.returncode}):\n{stderr.decode()[-2000:]}")

    # Training starts after imports and reading the corpus: measure from the first metrics.
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = ckpt.load(run / "last.pt")["progress"]["step"]
    end = samples[-1][0]
    warm = end - options.seconds * 0.95  # the first ~5% of the budget is warm-up
    fifth = (end - warm) / 5
    first = [s for s in samples if warm <= s[0] < warm + fifth]
    last = [s for s in samples if s[0] >= end - fifth]
    start_peak, end_peak = max(s[1] for s in first), max(s[1] for s in last)
    start_fds, end_fds = max(s[2] for s in first), max(s[2] for s in last)
    growth = end_peak - start_peak
    print(f"budget                   --max-time {options.seconds:.0f} s")
    print(f"steps                    {steps:,} ({steps / options.seconds:,.0f} per second)")
    print(f"checkpoints written      {steps // options.checkpoint_every:,} last.pt saves")
    print(f"evaluations              {len(lines):,}")
    print(f"memory samples           {len(samples):,}, every {SAMPLE_SECONDS} s")
    print(f"peak RSS, first fifth    {start_peak:.1f} MB")
    print(f"peak RSS, last fifth     {end_peak:.1f} MB")
    print(f"growth                   {growth:+.1f} MB (tolerance {options.tolerance_mb} MB)")
    print(f"open descriptors         {start_fds} -> {end_fds}")
    print(f"temporaries left         {len(list(run.glob(f'.*{TEMPORARY_MARK}*')))}")
    if growth > options.tolerance_mb or end_fds > start_fds:
        sys.exit("memory or descriptors grew")


if __name__ == "__main__":
    main()
