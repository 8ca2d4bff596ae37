"""Kill `charrnn train` with SIGKILL again and again, at random moments, and count survivors.

    python -m benchmarks.kill [--kills 25] [--seed 1] [--checkpoint-every 5]

The CI test (tests/test_kill.py) kills a run a dozen times at fixed kinds of moments; this
draws each moment at random (startup, training, mid-save, just after a save: see
tests/killing.py) for as many kills as asked, then lets the run finish and compares its
weights with a run never interrupted. A kill "survives" when last.pt and best.pt load after
it, at most --checkpoint-every steps were lost, and the next resume works. Linux or macOS.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from benchmarks import workspace
from charrnn import checkpoint as ckpt
from charrnn.cli import app
from tests.killing import MOMENTS, finish, kill_once, temporaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=25)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--checkpoint-every", type=int, default=5)
    options = parser.parse_args()

    work, corpus = workspace.fresh("kill", 60_000)
    max_steps = 12 * options.kills  # outlasts the kills: most moments come within 25 steps
    # A ~5 MB last.pt: saves take tens of milliseconds, so random kills land in them too.
    args = ["--config", "tiny", "--threads", "1", "--hidden-size", "256",
            "--embedding-dim", "128", "--batch-size", "4", "--seq-length", "16",
            "--eval-every", "1", "--eval-chars", "64",
            "--checkpoint-every", str(options.checkpoint_every), "--max-steps", str(max_steps),
            "--corpus", str(corpus)]  # fmt: skip
    run = work / "run"
    rng = random.Random(options.seed)
    started = time.perf_counter()
    kills = []
    for _ in range(options.kills):
        kill = kill_once(run, args, rng.choice(MOMENTS), options.checkpoint_every, rng)
        kills.append(kill)
        print(
            f"{len(kills):>3} {kill.moment:>12}  killed={kill.killed!s:<5} "
            f"mid-write={kill.during_write!s:<5} done={kill.steps_done:>4} "
            f"saved={kill.saved_step:>4} lost={kill.lost}  {'; '.join(kill.problems)}",
            flush=True,
        )
        if not kill.killed:
            break
    finished = finish(run, args)
    seconds = time.perf_counter() - started

    # The same run in this process, never interrupted (evaluations and saves do not change
    # what is learned, so it skips them).
    reference = work / "reference"
    app(["train", *args, "--eval-every", "0", "--checkpoint-every", "0", "--out", str(reference)],
        standalone_mode=False)  # fmt: skip
    expected = ckpt.load(reference / "last.pt")["model"]
    got = ckpt.load(run / "last.pt")["model"] if finished.returncode == 0 else {}
    identical = bool(got) and all(torch.equal(expected[k], got[k]) for k in expected)

    killed = [k for k in kills if k.killed]
    lost = [k.lost for k in killed]
    print()
    print(f"kills tried              {len(killed)} ({len(kills) - len(killed)} ran to the end)")
    print(f"kills survived           {sum(k.survived for k in killed)}")
    print(f"kills mid-write          {sum(k.during_write for k in killed)}")
    for moment in MOMENTS:
        print(f"  {moment:<22} {sum(k.moment == moment for k in killed)}")
    print(f"steps lost, max / mean   {max(lost, default=0)} / {statistics.fmean(lost or [0]):.1f}"
          f" (bound: --checkpoint-every {options.checkpoint_every})")  # fmt: skip
    print(f"final resume             exit {finished.returncode}, step "
          f"{ckpt.load(run / 'last.pt')['progress']['step']} of {max_steps}")  # fmt: skip
    print(f"temporaries left         {len(temporaries(run))}")
    print(f"bit-identical to a run never killed: {identical}")
    print(f"wall time                {seconds:.1f} s (kills and resumes)")


if __name__ == "__main__":
    main()
