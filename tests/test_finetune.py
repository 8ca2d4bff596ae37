"""Fine-tuning: a new run from trained weights, its vocabulary grown, resumable like any run."""

from __future__ import annotations

import json

import pytest
import torch

import charrnn
from charrnn import checkpoint as ckpt
from charrnn import config
from charrnn.errors import CheckpointError
from charrnn.finetune import Start, grow
from charrnn.train import Trainer
from tests.conftest import TINY_FLAGS, run_cli

# Characters the plays never use: the new text's vocabulary grows by exactly these.
NEW = "éü"


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, shakespeare_text):
    folder = tmp_path_factory.mktemp("base")
    (folder / "plays.txt").write_text(shakespeare_text, encoding="utf-8")
    result = run_cli("train", *TINY_FLAGS, "--corpus", folder / "plays.txt", "--out",
                     folder / "run", "--max-steps", 10, "--eval-every", 5)  # fmt: skip
    assert result.exit_code == 0, result.output
    return folder / "run"


@pytest.fixture
def new_text(tmp_path, shakespeare_text):
    path = tmp_path / "letters.txt"
    path.write_text(shakespeare_text[:15_000].replace("e", "é", 50) + "über\n" * 30,
                    encoding="utf-8")  # fmt: skip
    return path


def test_grow_appends_the_mean_of_the_old_rows_along_the_vocabulary_dimension():
    head = torch.arange(12.0).reshape(3, 4)  # (V=3, H=4)
    grown = grow(head, (5, 4), old_vocab=3)
    assert torch.equal(grown[:3], head)
    assert torch.equal(grown[3], torch.tensor([4.0, 5.0, 6.0, 7.0]))  # (0+4+8)/3, ...
    assert torch.equal(grown[4], grown[3])
    one_hot_input = torch.ones(8, 3)  # (4H, V): the vocabulary is the second dimension
    assert grow(one_hot_input, (8, 4), old_vocab=3).shape == (8, 4)
    with pytest.raises(CheckpointError):
        grow(head, (3, 5), old_vocab=3)  # not a vocabulary dimension


def test_a_fine_tune_keeps_old_ids_appends_new_ones_and_starts_from_the_weights(
    base_run, new_text, tmp_path
):
    start = Start.load(base_run)
    assert start.path.name == "best.pt"  # a run directory means its best.pt
    model_config, train_config = charrnn.finetune.configs(
        start, None, {"corpus": (str(new_text),), "max_steps": 2})  # fmt: skip
    trainer = Trainer(model_config, train_config, tmp_path / "ft", start=start)
    old = start.vocab.to_list()
    assert trainer.vocab.to_list() == old + sorted(NEW)
    weights, saved = trainer.model.state_dict(), start.checkpoint["model"]
    for name in ("embedding.weight", "head.weight", "head.bias"):
        assert torch.equal(weights[name][: len(old)], saved[name])
        assert torch.allclose(
            weights[name][len(old) :], saved[name].mean(0).expand(2, *saved[name].shape[1:])
        )
    assert torch.equal(weights["core.weight_hh_l0"], saved["core.weight_hh_l0"])
    assert trainer.progress.step == 0 and not trainer.optimizer.state  # fresh
    assert train_config.learning_rate == 1.5e-3  # the bundled finetune config
    result = trainer.run()
    assert result.step == 2


def test_shape_options_are_refused_in_one_line(base_run, new_text, tmp_path):
    result = run_cli("train", "--init-from", base_run, "--corpus", new_text, "--hidden-size", 64)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1
    assert "--hidden-size cannot be set with --init-from" in lines[0] and "1x32" in lines[0]
    other = tmp_path / "big.toml"
    other.write_text("[model]\nnum_layers = 3\ndropout = 0.1\n")
    result = run_cli("train", "--init-from", base_run, "--config", other, "--corpus", new_text)
    assert result.exit_code == 1 and "sets num_layers = 3" in result.stderr
    assert "leave it out of the config" in result.stderr  # a file the user can edit
    result = run_cli("train", "--init-from", base_run, "--config", "gpu", "--corpus", new_text)
    said = " ".join(result.stderr.split())  # a bundled config cannot be edited: drop it
    assert result.exit_code == 1 and "config 'gpu' sets hidden_size = 1024" in said
    assert "leave out --config (a fine-tune uses the bundled 'finetune')" in said
    result = run_cli("train", "--init-from", base_run, "--resume", base_run)
    assert result.exit_code == 1 and "give one of them" in result.stderr


def test_a_fine_tune_resumes_records_its_start_and_inspect_shows_it(base_run, new_text, tmp_path):
    run = tmp_path / "ft"
    flags = ("--threads", "1", "--batch-size", "4", "--seq-length", "16", "--eval-every", "2",
             "--max-steps", "4", "--checkpoint-every", "2", "--dropout", "0.1")  # fmt: skip
    result = run_cli("train", "--init-from", base_run, "--corpus", new_text, "--out", run, *flags)
    assert result.exit_code == 0, result.output
    assert "2 new character(s) added" in " ".join(result.stderr.split())
    first = ckpt.load(run / "last.pt")
    resumed = run_cli("train", "--resume", run, "--max-steps", 6)
    assert resumed.exit_code == 0, resumed.output
    last = ckpt.load(run / "last.pt")
    assert last["progress"]["step"] == 6 and last["vocab"] == first["vocab"]
    assert last["vocab"][-2:] == sorted(NEW) and last["init_from"] == first["init_from"]
    assert last["init_from"]["path"] == str((base_run / "best.pt").resolve())
    assert config.from_saved(config.ModelConfig, last["model_config"]).dropout == 0.1
    described = json.loads(run_cli("inspect", run, "--json").stdout)
    assert described["init_from"]["added"] == sorted(NEW)
    shown = " ".join(run_cli("inspect", run).stdout.split())
    assert f"started from {(base_run / 'best.pt').resolve()}, step 10" in shown


def test_resume_refuses_a_corpus_whose_text_changed(base_run, tmp_path, shakespeare_text):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(shakespeare_text[:20_000], encoding="utf-8")
    run = tmp_path / "run"
    assert run_cli("train", *TINY_FLAGS, "--corpus", corpus, "--out", run,
                   "--max-steps", 2).exit_code == 0  # fmt: skip
    corpus.write_text(shakespeare_text[:20_000].replace("the", "eth"), encoding="utf-8")
    result = run_cli("train", "--resume", run, "--max-steps", 4)
    assert result.exit_code == 1
    assert f"not the text the run was trained on (changed: {corpus})" in result.stderr


def test_fine_tune_from_python_returns_the_run_directory(base_run, new_text, tmp_path):
    run = charrnn.fine_tune(base_run, str(new_text), out=tmp_path / "py", max_steps=2,
                            batch_size=4, seq_length=16, threads=1)  # fmt: skip
    assert run == tmp_path / "py" and (run / "last.pt").is_file()
    assert ckpt.load(run / "last.pt")["init_from"]["vocab_size"] == len(Start.load(base_run).vocab)
