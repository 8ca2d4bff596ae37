"""A disk that fills up: failed writes keep the previous checkpoint and say so in one line.

What train.py does (and docs/reliability.md promises):
- a periodic save (last.pt every --checkpoint-every steps, best.pt on a new best) that fails
  keeps the previous file, prints one warning line, and training goes on;
- a metrics line that cannot be appended is a warning line too, and training goes on;
- the final save failing is an error: one line, exit 1, the previous last.pt intact;
- a run directory that cannot be written at all is refused before training starts.

Real write failures need no privileges: RLIMIT_FSIZE caps the size of any file a process
writes (root included), so a checkpoint larger than the cap fails with EFBIG in the middle of
its write, just as it would with ENOSPC on a full disk.
"""

from __future__ import annotations

import errno
import hashlib
import json
import resource
import subprocess
import sys

import pytest
import torch

from charrnn import checkpoint as ckpt
from charrnn import config
from charrnn.train import Trainer
from tests.conftest import TINY_FLAGS, run_cli
from tests.killing import ENV, temporaries


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resume_with_file_size_cap(run, cap: int, *args) -> subprocess.CompletedProcess:
    def cap_file_size() -> None:  # in the child, before exec: it applies to the trainer only
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))

    return subprocess.run(
        [sys.executable, "-m", "charrnn", "train", "--resume", str(run), *map(str, args)],
        capture_output=True,
        env=ENV,
        preexec_fn=cap_file_size,
        timeout=300,
    )


@pytest.mark.slow  # several training processes, ~4 s
def test_full_disk_keeps_checkpoints_trains_on_and_fails_the_final_save_in_one_line(
    tmp_path, corpus_file
):
    run = tmp_path / "run"
    first = run_cli("train", *TINY_FLAGS, "--corpus", corpus_file, "--out", run,
                    "--max-steps", 20, "--eval-every", 10, "--checkpoint-every", 10)  # fmt: skip
    assert first.exit_code == 0, first.output
    before = {name: digest(run / name) for name in ("last.pt", "best.pt")}
    # Room for config.toml and a few more metrics lines, not for a checkpoint (~130 kB).
    cap = (run / "metrics.jsonl").stat().st_size + 700
    assert cap < (run / "last.pt").stat().st_size

    result = resume_with_file_size_cap(
        run, cap, "--max-steps", 60, "--eval-every", 10, "--checkpoint-every", 10
    )
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    warnings = [line for line in lines if line.startswith("warning: ")]
    # Periodic saves at 30, 40, 50 failed; best.pt too whenever the loss improved.
    last_warnings = [w for w in warnings if "last.pt" in w]
    assert len(last_warnings) == 3, stderr
    assert all("File too large; the previous one is intact" in w for w in last_warnings)
    assert any("could not append to metrics.jsonl" in w for w in warnings), stderr
    # Training went on to the end, and the final save is the one error line, the last line.
    assert lines[-1].startswith("error: could not write checkpoint")
    assert lines[-1].endswith("last.pt': File too large; the previous one is intact")
    assert sum(line.startswith("error: ") for line in lines) == 1
    # Everything that was there is intact and loads; nothing half-written is left behind.
    assert {name: digest(run / name) for name in before} == before
    assert ckpt.load(run / "last.pt")["progress"]["step"] == 20
    assert temporaries(run) == []
    # The metrics lines that fitted were appended whole; the first that did not is not there
    # at all (not half of it), and neither is any later one.
    text = (run / "metrics.jsonl").read_text()
    steps = [json.loads(line)["step"] for line in text.splitlines()]
    assert text.endswith("\n") and len(steps) < 6
    assert steps == [10 * (n + 1) for n in range(len(steps))]


def test_a_failed_periodic_save_warns_keeps_the_old_file_and_training_goes_on(
    tmp_path, corpus_file, monkeypatch
):
    model_config, train_config = config.resolve(
        "tiny", dict(corpus=str(corpus_file), hidden_size=32, batch_size=4, seq_length=16,
                     threads=1, max_steps=50, eval_every=0, checkpoint_every=10)
    )  # fmt: skip
    run = tmp_path / "run"
    real_save = torch.save
    seen_during_failure = []

    def disk_full_for_steps_20_and_30(checkpoint, file):
        step = checkpoint["progress"]["step"]
        if step in (20, 30):
            seen_during_failure.append(ckpt.load(run / "last.pt")["progress"]["step"])
            file.write(b"PK\x03\x04 the first bytes of a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(checkpoint, file)

    monkeypatch.setattr(torch, "save", disk_full_for_steps_20_and_30)
    logged: list[str] = []
    result = Trainer(model_config, train_config, run, log=logged.append).run()

    assert result.step == 50
    assert seen_during_failure == [10, 10]  # the old last.pt stayed in place, whole
    assert len(result.checkpoint_warnings) == 2
    assert all("No space left on device; the previous one is intact" in w
               for w in result.checkpoint_warnings)  # fmt: skip
    assert [line for line in logged if line.startswith("warning: ")] == [
        f"warning: {w}" for w in result.checkpoint_warnings
    ]
    assert all("\n" not in line for line in logged)
    # The disk had room again for step 40 and the end.
    assert ckpt.load(run / "last.pt")["progress"]["step"] == 50
    assert temporaries(run) == []


@pytest.mark.slow  # several training processes, ~4 s
def test_a_run_directory_that_takes_no_writes_is_refused_and_left_whole(tmp_path, corpus_file):
    run = tmp_path / "run"
    first = run_cli("train", *TINY_FLAGS, "--corpus", corpus_file, "--out", run, "--max-steps", 10)
    assert first.exit_code == 0, first.output
    # .lock holds only the pid of the run's latest owner, not the run: left out of the comparison.
    before = {p.name: digest(p) for p in run.iterdir() if p.name != ".lock"}
    # Not even config.toml (half a kilobyte) fits: the resume stops before training, and the
    # config.toml it failed to rewrite is still the whole old one (it is replaced atomically).
    result = resume_with_file_size_cap(run, 100, "--max-steps", 20)
    assert result.returncode == 1
    assert result.stderr.decode().strip().splitlines() == [
        f"error: cannot write to the run directory '{run}': File too large"
    ]
    assert {p.name: digest(p) for p in run.iterdir() if p.name != ".lock"} == before
