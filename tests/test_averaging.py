"""Weight averaging (the `ema` setting): off changes nothing, on saves the average it promises,
and a run with it resumes bit for bit."""

from __future__ import annotations

import pytest
import torch

from charrnn import checkpoint as ckpt
from charrnn import config
from charrnn.averaging import RAMP
from charrnn.checkpoint import resume_configs
from charrnn.errors import CheckpointError
from charrnn.scoring import evaluate
from charrnn.train import Trainer
from tests.conftest import run_cli
from tests.test_train import StopAfter, tiny_configs


def saved(run, name="last.pt"):
    return torch.load(run / name, weights_only=True)


def test_ema_off_writes_what_it_always_wrote_and_on_leaves_training_alone(tmp_path, corpus_file):
    plain = tiny_configs(corpus_file, max_steps=12, eval_every=4)
    averaged = tiny_configs(corpus_file, max_steps=12, eval_every=4, ema=0.9)
    Trainer(*plain, tmp_path / "plain").run()
    Trainer(*averaged, tmp_path / "averaged").run()
    off, on = saved(tmp_path / "plain"), saved(tmp_path / "averaged")
    assert "averaging" not in off  # a run without averaging writes what it always wrote
    assert off["train_config"]["ema"] == 0.0
    # Averaging only watches: the weights the optimiser trained are bit for bit the same.
    raw = on["averaging"]["raw"]
    assert raw.keys() == off["model"].keys()
    for key in raw:
        assert torch.equal(raw[key], off["model"][key]), key
    assert not all(torch.equal(on["model"][k], raw[k]) for k in raw)  # the model is the average


def test_the_saved_model_is_the_average_computed_by_hand(tmp_path, corpus_file):
    decay, steps = 0.9, 6
    model_config, train_config = tiny_configs(corpus_file, max_steps=steps, eval_every=0,
                                              ema=decay)  # fmt: skip
    trainer = Trainer(model_config, train_config, tmp_path / "run")
    history = [{k: v.clone() for k, v in trainer.model.state_dict().items()}]  # the start
    real_step = trainer._train_step

    def recording(*args):
        loss = real_step(*args)
        history.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
        return loss

    trainer._train_step = recording
    trainer.run()
    assert len(history) == steps + 1
    expected = dict(history[0])
    for n, weights in enumerate(history[1:]):
        d = min(decay, (1 + n) / (RAMP + n))
        expected = {k: d * expected[k] + (1 - d) * weights[k] for k in expected}
    model = saved(tmp_path / "run")["model"]
    for key in expected:
        torch.testing.assert_close(model[key], expected[key], rtol=1e-6, atol=1e-7)
    assert saved(tmp_path / "run")["averaging"]["updates"] == steps


def test_evaluation_scores_the_average(tmp_path, corpus_file):
    model_config, train_config = tiny_configs(corpus_file, max_steps=8, eval_every=0, ema=0.9,
                                              precision="fp32")  # fmt: skip
    result = Trainer(model_config, train_config, tmp_path / "run").run()
    model, vocab = ckpt.restore_model(ckpt.load(tmp_path / "run" / "last.pt"))
    text = corpus_file.read_text()
    val = vocab.encode(text[len(text) - int(len(text) * train_config.val_fraction) :])
    loss, _ = evaluate(model, val, train_config.batch_size, train_config.seq_length)
    assert result.final_val_loss == pytest.approx(loss, rel=1e-6)
    model.load_state_dict(saved(tmp_path / "run")["averaging"]["raw"])
    raw_loss, _ = evaluate(model, val, train_config.batch_size, train_config.seq_length)
    assert abs(raw_loss - loss) > 1e-3  # so the figure above could only come from the average


def test_resume_with_ema_is_bit_identical(tmp_path, corpus_file):
    configs = tiny_configs(corpus_file, max_steps=24, checkpoint_every=0, eval_every=8,
                           ema=0.95, dropout=0.2)  # fmt: skip
    Trainer(*configs, tmp_path / "whole").run()
    interrupted = Trainer(*configs, tmp_path / "split", stop=StopAfter(11))
    assert interrupted.run().stopped_by == "signal"
    checkpoint = ckpt.load(tmp_path / "split", prefer=("last.pt",))
    Trainer(*resume_configs(checkpoint, {}), tmp_path / "split", resume=checkpoint).run()
    whole, split = saved(tmp_path / "whole"), saved(tmp_path / "split")
    for key in whole["model"]:
        assert torch.equal(whole["model"][key], split["model"][key]), key
        assert torch.equal(whole["averaging"]["raw"][key], split["averaging"]["raw"][key]), key
    assert whole["averaging"]["updates"] == split["averaging"]["updates"] == 24


def test_an_old_checkpoint_without_the_setting_still_resumes(tmp_path, corpus_file):
    Trainer(*tiny_configs(corpus_file, max_steps=6), tmp_path / "run").run()
    path = tmp_path / "run" / "last.pt"
    old = saved(tmp_path / "run")
    del old["train_config"]["ema"]  # written before the setting existed
    ckpt.save(old, path)
    checkpoint = ckpt.load(path)
    model_config, train_config = resume_configs(checkpoint, {"max_steps": 9})
    assert train_config.ema == 0.0
    assert Trainer(model_config, train_config, tmp_path / "run", resume=checkpoint).run().step == 9


def test_a_run_with_ema_missing_its_raw_weights_is_refused_in_one_line(tmp_path, corpus_file):
    Trainer(*tiny_configs(corpus_file, max_steps=4, ema=0.9), tmp_path / "run").run()
    damaged = saved(tmp_path / "run")
    damaged["averaging"]["raw"].popitem()
    ckpt.save(damaged, tmp_path / "run" / "last.pt")
    checkpoint = ckpt.load(tmp_path / "run" / "last.pt")
    with pytest.raises(CheckpointError, match="malformed averaging raw weights"):
        ckpt.check_resumable(checkpoint, 4)


def test_ema_is_a_declared_setting_that_a_resume_may_not_change(tmp_path, corpus_file):
    _, declared_default, declared = config.declaration("ema")
    assert (declared_default, declared.panel, declared.run_control) == (0.0, "Optimisation", False)
    run = tmp_path / "run"
    result = run_cli("train", "--config", "tiny", "--corpus", corpus_file, "--out", run,
                     "--max-steps", 4, "--hidden-size", 16, "--ema", 0.9)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "averaging" in saved(run)
    result = run_cli("train", "--resume", run, "--ema", 0.5, "--max-steps", 6)
    assert result.exit_code == 1 and "cannot change ema when resuming" in result.stderr
    result = run_cli("train", "--config", "tiny", "--corpus", corpus_file, "--ema", 1)
    assert result.exit_code == 1 and "ema must be less than 1" in result.stderr
