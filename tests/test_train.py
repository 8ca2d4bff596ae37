"""The trainer: a tiny run end to end, exact resume, atomic checkpoints, NaN stop, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import typer.main

from charrnn import checkpoint as ckpt
from charrnn import config
from charrnn.checkpoint import resume_configs
from charrnn.cli import app
from charrnn.errors import CheckpointError, TrainingError
from charrnn.files import TEMPORARY_MARK
from charrnn.rundir import MAX_STEP
from charrnn.scoring import evaluate
from charrnn.train import StopRequest, Trainer
from tests.conftest import TINY_FLAGS, run_cli
from tests.killing import child_env, freeze, metrics_steps, temporaries, train_command


def tiny_configs(corpus, **train_overrides):
    overrides = dict(corpus=str(corpus), hidden_size=32, batch_size=4, seq_length=16, threads=1)
    overrides.update(train_overrides)
    return config.resolve("tiny", overrides)


class StopAfter(StopRequest):
    """Asks the loop to stop after `steps` steps, as a Ctrl-C would."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps, self.checks = steps, 0

    @property
    def requested(self) -> bool:
        self.checks += 1
        if self.checks > self.steps:
            self.signal = signal.SIGINT
        return self.signal is not None


def test_tiny_run_end_to_end(tmp_path, corpus_file):
    run = tmp_path / "run"
    result = run_cli("train", *TINY_FLAGS, "--corpus", corpus_file, "--out", run,
                     "--max-steps", 60, "--eval-every", 20)  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("last.pt", "best.pt", "config.toml", "metrics.jsonl"):
        assert (run / name).is_file(), name
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [20, 40, 60]
    assert lines[-1]["val_loss"] < lines[0]["val_loss"]
    assert {"epoch", "time", "train_loss", "val_bpc", "lr", "chars_per_sec"} <= set(lines[0])
    saved = torch.load(run / "last.pt", weights_only=True)
    assert saved["progress"]["step"] == 60
    assert saved["vocab"] == sorted(set(corpus_file.read_text()))
    # The saved config reruns the same run.
    assert config.resolve(str(run / "config.toml"), {}) == resume_configs(saved, {})
    assert "charrnn sample" in result.stderr


def test_resume_is_bit_identical(tmp_path, corpus_file):
    model_config, train_config = tiny_configs(corpus_file, max_steps=30, checkpoint_every=0,
                                              eval_every=10, dropout=0.0)  # fmt: skip
    # Dropout draws random numbers, so the RNG state must survive the resume too.
    model_config = config.build(config.ModelConfig, {**config.to_dict(model_config),
                                                     "dropout": 0.3, "num_layers": 2})  # fmt: skip
    whole = Trainer(model_config, train_config, tmp_path / "whole").run()
    interrupted = Trainer(model_config, train_config, tmp_path / "split", stop=StopAfter(13))
    assert interrupted.run().stopped_by == "signal"
    saved = ckpt.load(tmp_path / "split", prefer=("last.pt",))
    assert saved["progress"]["step"] == 13
    resumed = Trainer(*resume_configs(saved, {}), tmp_path / "split", resume=saved).run()
    assert resumed.step == whole.step == 30
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_run_saved_by_the_foreach_optimiser_resumes_with_its_moments(
    tmp_path, corpus_file, monkeypatch
):
    """Runs saved before training took the fused AdamW kernel (torch's default, foreach) resume
    into the fused optimiser with their moments, and go on to the end."""
    model_config, train_config = tiny_configs(corpus_file, max_steps=30, checkpoint_every=0)
    monkeypatch.setattr("charrnn.train.optimizer_options", lambda device: {})
    old = Trainer(model_config, train_config, tmp_path / "run", stop=StopAfter(13))
    assert not old.optimizer.param_groups[0]["fused"]
    assert old.run().step == 13
    monkeypatch.undo()
    saved = ckpt.load(tmp_path / "run", prefer=("last.pt",))
    resumed = Trainer(*resume_configs(saved, {}), tmp_path / "run", resume=saved)
    assert resumed.optimizer.param_groups[0]["fused"] is True
    moments = [resumed.optimizer.state[p] for p in resumed.model.parameters()]
    assert len(moments) == len(saved["optimizer"]["state"]) > 0
    for index, moment in enumerate(moments):
        assert torch.equal(moment["exp_avg"], saved["optimizer"]["state"][index]["exp_avg"])
        assert float(moment["step"]) == 13
    assert resumed.run().step == 30


def test_resume_with_longer_budget_stretches_schedule(tmp_path, corpus_file):
    model_config, train_config = tiny_configs(corpus_file, max_steps=20)
    Trainer(model_config, train_config, tmp_path / "run").run()
    saved = ckpt.load(tmp_path / "run", prefer=("last.pt",))
    trainer = Trainer(*resume_configs(saved, {"max_steps": 40}), tmp_path / "run", resume=saved)
    # The schedule continues from where it ended (the floor), not from the top again.
    assert trainer.progress.anchor.progress == pytest.approx(1.0)
    trainer.run()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 40


def test_an_epoch_budget_beyond_any_count_leaves_a_run_its_readers_take(tmp_path, corpus_file):
    """--max-epochs 1e300 is "no limit" in practice: the steps it works out to are saved
    capped at the most a run may record, which every reader of the run accepts."""
    model_config, train_config = tiny_configs(
        corpus_file, max_steps=0, max_epochs=1e300, max_time=0.5, precision="fp32"
    )
    Trainer(model_config, train_config, tmp_path / "run").run()
    saved = ckpt.load(tmp_path / "run", prefer=("last.pt",))
    assert saved["progress"]["budget_steps"] == MAX_STEP
    for command in ("inspect", "sample"):
        result = run_cli(command, tmp_path / "run")
        assert result.exit_code == 0, result.output


@pytest.mark.slow  # 7 s: a real budget of seconds is trained out
def test_the_timing_is_spent_inside_max_time(tmp_path, corpus_file, monkeypatch):
    """--max-time counts from the command's start: the precisions' timing is part of it, and
    a budget the timing used up is refused before a run directory is made."""
    import charrnn.train as training

    # Two precisions to time whatever this CPU's bf16 support (bf16 autocast runs anywhere).
    monkeypatch.setattr(training, "precision_choices", lambda device, name: (torch.bfloat16, None))
    model_config, train_config = tiny_configs(corpus_file, max_steps=0, max_time=3.0)
    trainer = Trainer(model_config, train_config, tmp_path / "run")
    timing = trainer.progress.seconds
    assert timing > 0 and trainer.budget.max_seconds == 3.0  # on the run's clock, inside it
    result = trainer.run()
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert timing < first["time"] and 3.0 <= result.seconds < 3.5  # it ends at the budget

    real = training.autosize.fastest

    def slow_machine(amps, speeds):  # a timing that takes longer than the whole budget
        time.sleep(3.1)
        return real(amps, speeds)

    monkeypatch.setattr(training.autosize, "fastest", slow_machine)
    with pytest.raises(TrainingError, match=r"took \d+\.\d s of --max-time 3 s, leaving none"):
        Trainer(model_config, train_config, tmp_path / "spent")
    assert not (tmp_path / "spent").exists()


def test_resume_refuses_changing_model_or_data(tmp_path, tiny_run):
    result = run_cli("train", "--resume", tiny_run, "--hidden-size", 64)
    assert result.exit_code == 1
    assert "cannot change hidden_size when resuming" in result.stderr
    result = run_cli("train", "--resume", tiny_run, "--config", "tiny")
    assert result.exit_code == 1 and "--config cannot be combined" in result.stderr


def test_resume_refuses_a_corpus_with_another_vocabulary(tmp_path, corpus_file):
    model_config, train_config = tiny_configs(corpus_file, max_steps=5)
    Trainer(model_config, train_config, tmp_path / "run").run()
    corpus_file.write_text(corpus_file.read_text() + "ü")
    saved = ckpt.load(tmp_path / "run", prefer=("last.pt",))
    with pytest.raises(Exception, match="outside the run's vocabulary"):
        Trainer(*resume_configs(saved, {}), tmp_path / "run", resume=saved)


def test_existing_run_directory_is_not_overwritten(tmp_path, tiny_run):
    before = (tiny_run / "last.pt").read_bytes()
    result = run_cli("train", *TINY_FLAGS, "--out", tiny_run)
    assert result.exit_code == 1 and "--resume" in result.stderr
    assert (tiny_run / "last.pt").read_bytes() == before


def test_dry_run_writes_no_run_and_says_it_may_fill_the_token_cache(
    tmp_path, corpus_file, monkeypatch
):
    # It said "nothing trained or written" while reading the corpus encoded it into the cache.
    cache_root = tmp_path / "cache"
    monkeypatch.setenv("CHARRNN_CACHE", str(cache_root))
    out = tmp_path / "run"
    result = run_cli("train", *TINY_FLAGS, "--corpus", corpus_file, "--out", out, "--dry-run")
    assert result.exit_code == 0, result.output
    assert not out.exists()
    written = [p.relative_to(cache_root) for p in cache_root.rglob("*") if p.is_file()]
    assert written and {p.parts[0] for p in written} == {"tokens"}  # the token cache alone
    assert result.stderr.strip().splitlines()[-1] == (
        f"dry run: nothing trained, nothing written to {out}; only the corpus's token cache "
        f"({cache_root / 'tokens'}) may have been filled, which the real run reuses"
    )
    (option,) = [p for p in typer.main.get_command(app).commands["train"].params
                 if p.name == "dry_run"]  # fmt: skip
    assert "without training or writing the run" in option.help
    assert "fills its token cache" in option.help


def test_atomic_save_survives_a_failure_mid_write(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save({**ckpt.header(), "payload": torch.arange(5)}, path)

    def broken_save(obj, file):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match="No space left on device.*previous one is intact"):
        ckpt.save({**ckpt.header(), "payload": torch.arange(9)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["payload"].tolist() == list(range(5))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, corpus_file, monkeypatch):
    model_config, train_config = tiny_configs(corpus_file, max_steps=40, checkpoint_every=10)
    trainer = Trainer(model_config, train_config, tmp_path / "run")
    real_step = trainer._train_step
    steps = {"n": 0}

    def poisoned(inputs, targets, lr):
        steps["n"] += 1
        if steps["n"] == 25:
            trainer.model.head.bias.data.fill_(float("nan"))
        return real_step(inputs, targets, lr)

    monkeypatch.setattr(trainer, "_train_step", poisoned)
    with pytest.raises(TrainingError, match="loss became nan at step 25"):
        trainer.run()
    saved = ckpt.load(tmp_path / "run", prefer=("last.pt",))
    assert saved["progress"]["step"] == 20
    assert all(torch.isfinite(v).all() for v in saved["model"].values())


def test_small_validation_split_is_still_evaluated(tmp_path):
    text = ("To be, or not to be, that is the question. " * 60)[:2400]
    corpus = tmp_path / "c.txt"
    corpus.write_text(text)
    # 1% validation = 24 characters: shorter than one training batch of 4 x 16.
    model_config, train_config = tiny_configs(corpus, max_steps=4, val_fraction=0.01)
    result = Trainer(model_config, train_config, tmp_path / "run").run()
    assert result.final_val_loss is not None and result.final_val_loss > 0


def test_evaluate_matches_a_direct_computation(tiny_run):
    from charrnn.checkpoint import restore_model

    model, vocab = restore_model(ckpt.load(tiny_run))
    ids = vocab.encode("Romeo.\nCan I go forward when my heart is here?\nTurn back, dull earth.")
    loss, count = evaluate(model, ids, batch_size=3, seq_length=5)
    assert count == len(ids) - 1
    with torch.no_grad():
        logits, _ = model.eval()(ids[:-1].long().unsqueeze(0))
        direct = torch.nn.functional.cross_entropy(logits[0], ids[1:].long()).item()
    # Rows restart from a zero state, so the two differ, but only a little.
    assert abs(loss - direct) < 0.5
    whole_loss, _ = evaluate(model, ids, batch_size=1, seq_length=1000)
    assert whole_loss == pytest.approx(direct, rel=1e-5)


@pytest.mark.slow
def test_sigint_saves_and_exits_130(tmp_path, corpus_file):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "charrnn", "train", *TINY_FLAGS, "--corpus",
               str(corpus_file), "--out", str(run), "--max-steps", "1000000",
               "--checkpoint-every", "0", "--eval-every", "5", "--eval-chars", "64"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    # Interrupt once it has trained (a metrics line is out), not after a guessed delay.
    deadline = time.monotonic() + 120
    while not metrics_steps(run, 0):
        assert process.poll() is None and time.monotonic() < deadline, "it never trained"
        time.sleep(0.01)
    trained = metrics_steps(run, 0)[-1]
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr.decode()
    assert "charrnn train --resume" in stderr.decode()
    assert "Traceback" not in stderr.decode()
    saved = ckpt.load(run, prefer=("last.pt",))
    # No periodic checkpoints: this one was written on the interrupt, after those steps.
    assert saved["progress"]["step"] >= trained >= 5


@pytest.mark.slow
def test_a_second_sigint_during_the_save_exits_at_once_and_keeps_the_old_checkpoint(
    tmp_path, corpus_file
):
    # A model of ~5 MB, so that saving it takes long enough to be caught in the middle.
    big = [*TINY_FLAGS, "--corpus", str(corpus_file), "--hidden-size", "256",
           "--embedding-dim", "128"]  # fmt: skip
    run = tmp_path / "run"
    first = run_cli("train", *big, "--out", run, "--max-steps", 2)
    assert first.exit_code == 0, first.output
    before = (run / "last.pt").read_bytes()
    # Resumed with no periodic saves: the only last.pt write is the one on the interrupt.
    command = [*train_command(run, [], resume=True), "--max-steps", "1000000",
               "--checkpoint-every", "0", "--eval-every", "5", "--eval-chars", "64"]  # fmt: skip
    offset = (run / "metrics.jsonl").stat().st_size
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env()
    )
    try:
        deadline = time.monotonic() + 120
        while not metrics_steps(run, offset):
            assert process.poll() is None and time.monotonic() < deadline, "it never trained"
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        saving = run / f".last.pt{TEMPORARY_MARK}{process.pid}"
        while True:  # until it is frozen in the middle of the save the interrupt asked for
            assert process.poll() is None, "the save ended before it was caught"
            assert time.monotonic() < deadline, "the save on the interrupt never started"
            if saving.exists():
                assert freeze(process), "it ended while being frozen"
                if saving.exists():
                    break
                process.send_signal(signal.SIGCONT)
            time.sleep(0.0005)
        # Frozen mid-save: the second Ctrl-C is handled the moment it runs again.
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGCONT)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, stderr.decode()
    assert "Traceback" not in stderr.decode() and stderr.decode().strip().endswith("interrupted")
    assert (run / "last.pt").read_bytes() == before  # the previous checkpoint, whole
    assert temporaries(run) == []
