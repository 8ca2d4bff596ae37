"""A run directory is never damaged: one training owns it, new runs never write into another
run's, best.pt only ever gets better, and a resume trains on the text the run started with."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from datetime import datetime

import pytest
import torch

from charrnn import checkpoint as ckpt
from charrnn import rundir
from charrnn.checkpoint import resume_configs
from charrnn.machine import available_cores
from charrnn.train import Trainer
from tests.conftest import TINY_FLAGS, run_cli
from tests.killing import ENV, train_command
from tests.test_train import StopAfter, tiny_configs


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- one training owns a run directory -------------------------------------------------------


def test_a_held_run_directory_is_refused_naming_the_holder(tmp_path, corpus_file):
    run = tmp_path / "run"
    Trainer(*tiny_configs(corpus_file, max_steps=4), run).run()
    before = (run / "last.pt").read_bytes()
    lock = rundir.RunLock(run)  # as a training in another process holds it
    try:
        result = run_cli("train", "--resume", run, "--max-steps", 8)
        assert result.exit_code == 1
        line = one_error_line(result.stderr)
        assert f"is in use by another charrnn train (pid {os.getpid()})" in line
        assert (run / "last.pt").read_bytes() == before
    finally:
        lock.release()
    assert run_cli("train", "--resume", run, "--max-steps", 8).exit_code == 0


@pytest.mark.slow
def test_a_second_train_is_refused_while_the_first_runs_and_a_sigkill_frees_the_run(
    tmp_path, corpus_file
):
    run = tmp_path / "run"
    args = [*TINY_FLAGS, "--corpus", str(corpus_file), "--checkpoint-every", "5",
            "--eval-every", "5", "--eval-chars", "64"]  # fmt: skip
    command = train_command(run, [*args, "--max-steps", "1000000"], resume=False)
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        deadline = time.monotonic() + 120
        while not (run / "last.pt").exists():
            assert first.poll() is None and time.monotonic() < deadline, "it never saved"
            time.sleep(0.01)
        # (A second new run with --out is refused before that: the folder holds a run.)
        second = train_command(run, ["--max-steps", "1000000"], resume=True)
        refused = subprocess.run(second, capture_output=True, text=True, env=ENV, timeout=120)
        assert refused.returncode == 1, refused.stderr
        line = one_error_line(refused.stderr)
        assert f"is in use by another charrnn train (pid {first.pid})" in line
        assert first.poll() is None  # the first one trains on, undisturbed
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        first.kill()
    # The OS released the lock with the process: the run resumes.
    step = ckpt.load(run, prefer=("last.pt",))["progress"]["step"]
    resumed = subprocess.run(train_command(run, ["--max-steps", str(step + 5)], resume=True),
                             capture_output=True, text=True, env=ENV, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert ckpt.load(run, prefer=("last.pt",))["progress"]["step"] == step + 5


def test_default_run_names_stay_distinct_in_the_same_second(tmp_path, corpus_file, monkeypatch):
    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 12, 1, 10, 30, 0)

    monkeypatch.setattr(rundir, "datetime", Frozen)
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        result = run_cli("train", *TINY_FLAGS, "--corpus", corpus_file, "--max-steps", 2)
        assert result.exit_code == 0, result.output
    made = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert made == ["corpus-lstm-20261201-103000", "corpus-lstm-20261201-103000-2"]
    for name in made:  # each run wrote its own files, once
        metrics = (tmp_path / "checkpoints" / name / "metrics.jsonl").read_text()
        assert len(metrics.splitlines()) == 1


def test_concurrent_new_run_directories_never_share_a_name(tmp_path):
    base, made, start = tmp_path / "runs" / "corpus-lstm-20261201-103000", [], threading.Barrier(8)

    def create() -> None:
        start.wait()
        made.append(rundir.create_new(base))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 8 and all(path.is_dir() for path in made)


# -- best.pt only ever gets better -----------------------------------------------------------


def best_step(run) -> int:
    return ckpt.load(run / "best.pt")["progress"]["step"]


def test_a_kill_between_the_two_saves_never_lets_a_worse_model_replace_best(tmp_path, corpus_file):
    run = tmp_path / "run"
    configs = tiny_configs(corpus_file, max_steps=10, eval_every=0)
    Trainer(*configs, run).run()  # best.pt and last.pt at step 10
    at_10 = (run / "last.pt").read_bytes()
    saved = ckpt.load(run, prefer=("last.pt",))
    Trainer(*resume_configs(saved, {"max_steps": 30}), run, resume=saved).run()
    assert best_step(run) == 30
    best_before = (run / "best.pt").read_bytes()
    # As if killed after best.pt was written at step 30 but before last.pt was.
    (run / "last.pt").write_bytes(at_10)
    saved = ckpt.load(run, prefer=("last.pt",))
    result = Trainer(*resume_configs(saved, {"max_steps": 20}), run, resume=saved).run()
    best_30 = ckpt.load(run / "best.pt")["progress"]["best_val_loss"]
    # The premise: step 20 beats what last.pt knew (step 10), not the best.pt of step 30.
    assert saved["progress"]["best_val_loss"] > result.final_val_loss > best_30
    assert (run / "best.pt").read_bytes() == best_before
    assert result.best_val_loss == best_30


def test_only_whole_split_evaluations_write_best(tmp_path, corpus_file):
    run = tmp_path / "run"
    configs = tiny_configs(corpus_file, max_steps=40, eval_every=5, eval_chars=64)
    Trainer(*configs, run, stop=StopAfter(17)).run()  # evaluations at 5, 10, 15: part only
    assert not (run / "best.pt").exists()
    saved = ckpt.load(run, prefer=("last.pt",))
    assert saved["progress"]["best_val_loss"] is None
    Trainer(*resume_configs(saved, {}), run, resume=saved).run()  # the final one scores all
    assert best_step(run) == 40
    # --eval-chars beyond the split scores all of it: those evaluations count.
    whole = tmp_path / "whole"
    configs = tiny_configs(corpus_file, max_steps=40, eval_every=5, eval_chars=10**9)
    Trainer(*configs, whole, stop=StopAfter(7)).run()
    assert best_step(whole) == 5


def test_a_resume_in_another_precision_leaves_best_alone(tmp_path, corpus_file):
    run = tmp_path / "run"
    Trainer(*tiny_configs(corpus_file, max_steps=10, eval_every=0, precision="fp32"), run).run()
    before = (run / "best.pt").read_bytes()
    saved = ckpt.load(run, prefer=("last.pt",))
    said = []
    overrides = {"max_steps": 40, "precision": "bf16"}
    result = Trainer(*resume_configs(saved, overrides), run, resume=saved, log=said.append).run()
    assert result.final_val_loss < saved["progress"]["best_val_loss"]  # better, but in bf16
    assert (run / "best.pt").read_bytes() == before
    assert any("best.pt was scored in fp32 and this run evaluates in bf16" in s for s in said)
    assert ckpt.load(run, prefer=("last.pt",))["progress"]["best_precision"] == "fp32"


# -- a resume trains on the text the run started with -----------------------------------------


def test_a_moved_identical_corpus_is_accepted_with_corpus(tmp_path, corpus_file):
    run = tmp_path / "run"
    Trainer(*tiny_configs(corpus_file, max_steps=4), run).run()
    moved = tmp_path / "elsewhere" / "same.txt"
    moved.parent.mkdir()
    shutil.move(corpus_file, moved)
    lost = run_cli("train", "--resume", run, "--max-steps", 8)
    assert lost.exit_code == 1 and "corpus.txt" in one_error_line(lost.stderr)
    result = run_cli("train", "--resume", run, "--max-steps", 8, "--corpus", moved)
    assert result.exit_code == 0, result.output
    saved = ckpt.load(run, prefer=("last.pt",))
    assert saved["progress"]["step"] == 8 and saved["corpus_path"] == str(moved.resolve())


def test_a_checkpoint_without_a_fingerprint_still_resumes(tmp_path, corpus_file):
    """Written before fingerprints: the vocabulary check of those days is all it gets."""
    run = tmp_path / "run"
    Trainer(*tiny_configs(corpus_file, max_steps=4), run).run()
    saved = torch.load(run / "last.pt", weights_only=True)
    del saved["corpus_fingerprint"]
    torch.save(saved, run / "last.pt")
    result = run_cli("train", "--resume", run, "--max-steps", 8)
    assert result.exit_code == 0, result.output
    assert ckpt.load(run, prefer=("last.pt",))["corpus_fingerprint"] is not None


# -- a run saved on a bigger machine ----------------------------------------------------------


def test_a_checkpoint_with_more_threads_than_this_machine_allows_still_works(
    tmp_path, tiny_run, corpus_file
):
    many = max(64, 4 * available_cores() + 1)
    run = tmp_path / "big-machine"
    run.mkdir()
    saved = torch.load(tiny_run / "last.pt", weights_only=True)
    saved["train_config"]["threads"] = many
    saved["train_config"]["corpus"] = saved["corpus_path"] = str(corpus_file)
    torch.save(saved, run / "last.pt")
    assert run_cli("sample", run, "--length", 10, "--seed", 1).exit_code == 0
    evaluated = run_cli("eval", run, "--corpus", corpus_file)
    assert evaluated.exit_code == 0, evaluated.output
    step = saved["progress"]["step"]
    resumed = run_cli("train", "--resume", run, "--max-steps", step + 2)
    assert resumed.exit_code == 0, resumed.output
    assert torch.get_num_threads() <= 4 * available_cores()  # clamped where it is used
    assert ckpt.load(run, prefer=("last.pt",))["progress"]["step"] == step + 2
    typed = run_cli("train", "--resume", run, "--max-steps", step + 4, "--threads", many)
    assert typed.exit_code == 1
    assert f"threads must be at most {4 * available_cores()}" in one_error_line(typed.stderr)
