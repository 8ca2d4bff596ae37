"""A run that diverges (NaN or infinite loss or weights) stops in one line and saves nothing
non-finite, whatever step the divergence falls on; metrics.jsonl stays strict JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch

from charrnn import checkpoint as ckpt
from charrnn.checkpoint import resume_configs
from charrnn.errors import TrainingError
from charrnn.runlog import MetricsLog
from charrnn.train import Trainer
from tests.test_train import tiny_configs

MAX_STEPS, CHECKPOINT_EVERY, EVAL_EVERY = 40, 10, 15


def strict_json(line: str):
    """json.loads that refuses the NaN and Infinity tokens Python's json would accept."""

    def refuse(token: str):
        raise ValueError(f"not JSON: {token}")

    return json.loads(line, parse_constant=refuse)


def poison_after_step(trainer: Trainer, step: int, monkeypatch) -> None:
    """Make the weights infinite in the optimiser step that ends `step`, as a diverging update
    does: the loss of that step was still finite."""
    real_step = trainer._train_step

    def step_then_poison(inputs, targets, lr):
        loss = real_step(inputs, targets, lr)
        if trainer.progress.step + 1 == step:
            with torch.no_grad():
                trainer.model.head.bias.fill_(float("inf"))
        return loss

    monkeypatch.setattr(trainer, "_train_step", step_then_poison)


# (the step whose update diverges, what the error says, the step last.pt must hold)
CASES = [
    ("a plain step", 12, "the loss became nan at step 13", 10),
    ("an evaluation step", 15, "the validation loss became nan at step 15", 10),
    ("a checkpoint step", 20, "'head.bias' became NaN or infinite at step 20", 10),
    ("an evaluation and checkpoint step", 30, "the validation loss became nan at step 30", 20),
    ("the final step", 40, "the validation loss became nan at step 40", 30),
]


@pytest.mark.parametrize(("diverges", "message", "kept"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_non_finite_weights_are_never_written(tmp_path, corpus_file, monkeypatch,
                                              diverges, message, kept):  # fmt: skip
    run = tmp_path / "run"
    configs = tiny_configs(corpus_file, max_steps=MAX_STEPS, checkpoint_every=CHECKPOINT_EVERY,
                           eval_every=EVAL_EVERY, eval_chars=0)  # fmt: skip
    trainer = Trainer(*configs, run)
    poison_after_step(trainer, diverges, monkeypatch)
    with pytest.raises(TrainingError, match=message) as stopped:
        trainer.run()
    assert "\n" not in str(stopped.value)  # one line
    assert "last.pt holds the last good checkpoint" in str(stopped.value)

    # last.pt is the last periodic save before the divergence, loadable and resumable.
    saved = ckpt.load(run, prefer=("last.pt",))
    assert saved["progress"]["step"] == kept
    ckpt.check_resumable(saved, 4)  # finite moments and hidden state, or it raises
    if (run / "best.pt").exists():  # no evaluation before step 15, so no best.pt either
        assert all(torch.isfinite(v).all() for v in ckpt.load(run / "best.pt")["model"].values())
    # The metrics line of a diverged evaluation says null, never the NaN token.
    lines = [strict_json(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    if "validation" in message:
        assert lines[-1]["step"] == diverges and lines[-1]["val_loss"] is None

    monkeypatch.undo()
    resumed = Trainer(*resume_configs(saved, {}), run, resume=saved).run()
    assert resumed.step == MAX_STEPS
    final = ckpt.load(run, prefer=("last.pt",))
    assert final["progress"]["step"] == MAX_STEPS and math.isfinite(resumed.final_val_loss)


def test_metrics_lines_are_strict_json_with_null_for_non_finite_values(tmp_path):
    warnings = []
    path = tmp_path / "metrics.jsonl"
    with MetricsLog(path, 64, warnings.append) as log:
        text = log.record(7, 0.5, 1.0, float("inf"), float("nan"), "all", 1e-3, 10.0)
        log.record(8, 0.6, 1.1, 2.0, 1.9, "all", 1e-3, 10.0)
    raw = path.read_text()
    assert "NaN" not in raw and "Infinity" not in raw
    first, second = (strict_json(line) for line in raw.splitlines())
    assert (first["train_loss"], first["val_loss"], first["val_bpc"]) == (None, None, None)
    assert (second["train_loss"], second["val_loss"]) == (2.0, 1.9)
    assert "val nan" in text and warnings == []


def test_a_divergence_before_any_save_says_nothing_was_kept(tmp_path, corpus_file, monkeypatch):
    configs = tiny_configs(corpus_file, max_steps=MAX_STEPS, checkpoint_every=CHECKPOINT_EVERY,
                           eval_every=EVAL_EVERY, eval_chars=0)  # fmt: skip
    trainer = Trainer(*configs, tmp_path / "run")
    poison_after_step(trainer, 2, monkeypatch)
    with pytest.raises(TrainingError, match="the loss became nan at step 3") as stopped:
        trainer.run()
    assert "(no checkpoint was written before it)" in str(stopped.value)
    assert not list((tmp_path / "run").glob("*.pt"))
