"""Independent checks: the code against values worked out another way, not against itself.

Other tests compare the code with itself (eval with `evaluate`, int8 stepping with the exact
stepper, sampling with an earlier run of sampling). Here every expected value comes from
somewhere else: a direct ``F.cross_entropy`` over one whole sequence, a vocabulary built with
a plain dict, a split or a batch layout written out by hand, the schedule's formula, the
model's own forward pass in place of the sampler's step.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from charrnn import checkpoint as ckpt
from charrnn import config
from charrnn.config import ModelConfig, TrainConfig
from charrnn.model import CharModel
from tests.conftest import run_cli

# --------------------------------------------------------------------------- helpers


TEXT = (
    "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs!\n"
    "How vexingly quick daft zebras jump. Sphinx of black quartz, judge my vow?\n"
) * 8
TEXT = TEXT[:1003]  # 1003: the splits below round down (0.25 * 1003 = 250.75)


def plain_vocab(text: str) -> dict[str, int]:
    """A character's id is its place in the sorted set of the text's characters."""
    return {char: i for i, char in enumerate(sorted(set(text)))}


def ids_of(text: str, vocab: dict[str, int]) -> torch.Tensor:
    return torch.tensor([vocab[char] for char in text], dtype=torch.long)


def direct_loss(model: CharModel, ids: torch.Tensor, rows: int = 1) -> float:
    """Mean cross-entropy of every character after the first, read in float64.

    rows=1: the whole text as ONE sequence from a zero state. rows=R: what `eval` documents
    for a batch of R: the len-1 (input, target) pairs cut into R contiguous rows of
    (len-1)//R pairs, each row from a zero state, and the last row running on to the end.
    """
    model = copy.deepcopy(model).double().eval()
    pairs = len(ids) - 1
    rows = min(rows, pairs)
    length = pairs // rows
    total = 0.0
    with torch.no_grad():
        for row in range(rows):
            end = (row + 1) * length if row < rows - 1 else pairs
            part = ids[row * length : end + 1]
            logits, _ = model(part[None, :-1])
            total += F.cross_entropy(logits[0], part[1:], reduction="sum").item()
    return total / pairs


def hand_built(cell: str, layers: int, embedding_dim: int, vocab_size: int) -> CharModel:
    """A small model with fixed, larger-than-default random weights (so state matters)."""
    model = CharModel(
        ModelConfig(cell=cell, hidden_size=12, num_layers=layers, embedding_dim=embedding_dim),
        vocab_size,
    )
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.6)
    return model.eval()


def save_checkpoint(model: CharModel, vocab: dict[str, int], path: Path) -> Path:
    """The project's checkpoint layout (see Trainer._checkpoint); saving is not under test."""
    ckpt.save(
        {
            **ckpt.header(),
            "model_config": config.to_dict(model.config),
            "train_config": config.to_dict(TrainConfig(batch_size=5, seq_length=9)),
            "vocab": list(vocab),
            "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        },
        path,
    )
    return path


def eval_json(*args) -> dict:
    result = run_cli("eval", *args, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


MODELS = [("lstm", 2, 6), ("gru", 1, 0), ("rnn", 2, 0)]  # (cell, layers, embedding_dim)


# --------------------------------------------------------------------------- 1. eval


@pytest.mark.parametrize("cell, layers, embedding_dim", MODELS)
def test_eval_equals_cross_entropy_over_the_whole_text_as_one_sequence(
    tmp_path, cell, layers, embedding_dim
):
    vocab = plain_vocab(TEXT)
    model = hand_built(cell, layers, embedding_dim, len(vocab))
    path = save_checkpoint(model, vocab, tmp_path / "hand.pt")
    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    ids = ids_of(TEXT, vocab)
    expected = direct_loss(model, ids)
    # One row, cut into chunks of 7: eval carries the state across 143 chunk boundaries.
    result = eval_json(path, "--corpus", corpus, "--batch-size", 1, "--seq-length", 7)
    assert result["characters"] == len(TEXT) - 1
    assert result["loss"] == pytest.approx(expected, abs=1e-5)
    assert result["bpc"] == pytest.approx(expected / math.log(2), abs=1e-5)
    # Sanity: a model that ignored the state would not match (the check has teeth).
    assert abs(direct_loss(model, ids, rows=len(ids) // 7) - expected) > 1e-3


@pytest.mark.parametrize("cell, layers, embedding_dim", MODELS[:2])
def test_eval_with_several_rows_is_each_row_read_from_a_zero_state(
    tmp_path, cell, layers, embedding_dim
):
    vocab = plain_vocab(TEXT)
    model = hand_built(cell, layers, embedding_dim, len(vocab))
    path = save_checkpoint(model, vocab, tmp_path / "hand.pt")
    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    # 1002 pairs in 4 rows of 250, the 2 left over continuing the last row.
    result = eval_json(path, "--corpus", corpus, "--batch-size", 4, "--seq-length", 7)
    expected = direct_loss(model, ids_of(TEXT, vocab), rows=4)
    assert result["characters"] == 1002
    assert result["loss"] == pytest.approx(expected, abs=1e-5)
    assert result["bpc"] == pytest.approx(expected / math.log(2), abs=1e-5)


@pytest.mark.parametrize(
    "split, fraction, part",
    [
        # The last int(1003 * f) characters validate; the rest train (worked out by hand).
        ("val", "0.25", slice(753, None)),  # 250 characters
        ("train", "0.25", slice(None, 753)),
        ("val", "0.5", slice(502, None)),  # int(501.5) = 501 characters
    ],
)
def test_eval_of_a_split_equals_cross_entropy_over_that_part(tmp_path, split, fraction, part):
    vocab = plain_vocab(TEXT)
    model = hand_built("lstm", 1, 0, len(vocab))
    path = save_checkpoint(model, vocab, tmp_path / "hand.pt")  # its run's val_fraction: 0.1
    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    result = eval_json(path, "--corpus", corpus, "--split", split, "--val-fraction", fraction,
                       "--batch-size", 1, "--seq-length", 5)  # fmt: skip
    held = TEXT[part]
    expected = direct_loss(model, ids_of(held, vocab))
    assert result["split"] == split and result["characters"] == len(held) - 1
    assert result["loss"] == pytest.approx(expected, abs=1e-5)
    assert result["bpc"] == pytest.approx(expected / math.log(2), abs=1e-5)
