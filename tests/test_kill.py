"""SIGKILL at any moment: checkpoints stay loadable, resuming works, at most one interval lost.

Real `python -m charrnn train` processes, killed from outside (tests/killing.py says how each
moment is aimed). The model is sized so that last.pt is about 5 MB and a save takes tens of
milliseconds, long enough for kills to land in the middle of writes.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time

import pytest
import torch

from charrnn import checkpoint as ckpt
from tests.conftest import TINY_FLAGS, run_cli
from tests.killing import ENV, finish, kill_once, metrics_steps, temporaries, train_command

CHECKPOINT_EVERY = 5
MAX_STEPS = 240
# Eval every step (on 64 characters) so the metrics say exactly how far a killed run got.
KILL_FLAGS = [
    "--config", "tiny", "--threads", "1", "--hidden-size", "256", "--embedding-dim", "128",
    "--batch-size", "4", "--seq-length", "16", "--eval-every", "1", "--eval-chars", "64",
    "--checkpoint-every", str(CHECKPOINT_EVERY), "--max-steps", str(MAX_STEPS),
]  # fmt: skip
MOMENTS = [
    "startup", "writing", "training", "writing-last", "after-save", "writing",
    "training", "writing-last", "after-save", "training", "writing", "startup",
]  # fmt: skip


def weights(path) -> dict[str, torch.Tensor]:
    return ckpt.load(path)["model"]


@pytest.mark.slow
def test_sigkill_at_any_moment_loses_at_most_one_checkpoint_interval(tmp_path, corpus_file):
    run = tmp_path / "run"
    args = [*KILL_FLAGS, "--corpus", str(corpus_file)]
    rng = random.Random(7)
    kills = [kill_once(run, args, moment, CHECKPOINT_EVERY, rng) for moment in MOMENTS]

    report = "\n".join(
        f"{k.moment:>12}: killed={k.killed} mid-write={k.during_write} done={k.steps_done} "
        f"saved={k.saved_step} {'; '.join(k.problems)}"
        for k in kills
    )
    assert all(k.killed for k in kills), report  # the budget outlasts the kills
    assert [k for k in kills if not k.survived] == [], report
    # The kills aimed at writes really landed inside them (the killed writer left its file).
    assert sum(k.during_write for k in kills) >= 3, report
    assert max(k.lost for k in kills) <= CHECKPOINT_EVERY, report

    finished = finish(run, args)
    assert finished.returncode == 0, finished.stderr.decode()[-2000:]
    assert ckpt.load(run / "last.pt")["progress"]["step"] == MAX_STEPS
    # The next start cleaned up what the killed writers left behind.
    assert temporaries(run) == []
    assert sorted(p.name for p in run.iterdir()) == [
        ".lock", "best.pt", "config.toml", "last.pt", "metrics.jsonl"
    ]  # fmt: skip

    # Twelve kills and resumes later, the weights are those of a run never interrupted
    # (evaluations and saves do not touch what is learned, so the reference skips them).
    reference = tmp_path / "reference"
    result = run_cli("train", *args, "--eval-every", 0, "--checkpoint-every", 0, "--out", reference)
    assert result.exit_code == 0, result.output
    expected, got = weights(reference / "last.pt"), weights(run / "last.pt")
    assert all(torch.equal(expected[name], got[name]) for name in expected)


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tmp_path, corpus_file):
    # Dropout between two layers draws random numbers: the RNG state must survive the kill too.
    # A constant learning rate does not depend on the budget, so the killed run can have one
    # it never reaches (it cannot end before the kill) and the resume the one it is compared at.
    args = [*TINY_FLAGS, "--corpus", str(corpus_file), "--num-layers", "2", "--dropout", "0.3",
            "--lr-schedule", "constant", "--checkpoint-every", "10", "--eval-every", "5",
            "--eval-chars", "64"]  # fmt: skip
    split = tmp_path / "split"
    process = subprocess.Popen(
        train_command(split, [*args, "--max-steps", "1000000"], resume=False),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    try:
        # Somewhere after the first checkpoint, not at it: its metrics line for step 15 is out,
        # so the steps since the checkpoint are lost and redone.
        deadline = time.monotonic() + 120
        while max(metrics_steps(split, 0), default=0) < 15:
            assert process.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < deadline, "no step 15 within two minutes"
            time.sleep(0.001)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
    finally:
        process.kill()
    killed_at = ckpt.load(split / "last.pt")["progress"]["step"]
    assert killed_at >= 10 and killed_at % 10 == 0
    end = killed_at + 50  # the budget both runs are compared at

    resumed = subprocess.run(train_command(split, [*args, "--max-steps", str(end)], resume=True),
                             capture_output=True, env=ENV, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    whole = run_cli("train", *args, "--max-steps", end, "--out", tmp_path / "whole")
    assert whole.exit_code == 0, whole.output
    a, b = ckpt.load(tmp_path / "whole" / "last.pt"), ckpt.load(split / "last.pt")
    assert a["progress"]["step"] == b["progress"]["step"] == end
    assert all(torch.equal(a["model"][name], b["model"][name]) for name in a["model"])
    moments_a = a["optimizer"]["state"]
    moments_b = b["optimizer"]["state"]
    for index in moments_a:
        for moment in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(moments_a[index][moment], moments_b[index][moment])
