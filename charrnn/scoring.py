"""How well a model predicts a text: the character loss, bits per character, and the stateful
evaluation that training, ``charrnn eval`` and ``charrnn explain`` share.

The loss is defined once (``char_loss``): cross-entropy of the next character in nats, over
logits computed in fp32 whatever precision produced them. Training takes its mean over a
batch, evaluation its sum over a whole text, and explain reads it character by character.

A text is read (``read``) as the ids of the characters the model knows, with where each stands
in the text; an unknown character is refused by name, or left out with ``skip_unknown`` (the
characters after it are then predicted as if it were not there).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from charrnn.batching import evaluation_chunks
from charrnn.corpus import Vocabulary, describe_char, split_train_val
from charrnn.devices import autocast
from charrnn.errors import ConfigError, CorpusError
from charrnn.model import CharModel, State, select_rows

SPLITS = ("all", "train", "val")


def bits_per_char(nats: float) -> float:
    return nats / math.log(2)


def char_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of logits (B, T, V) against targets (B, T), in nats, computed in fp32.

    reduction: "mean" or "sum" over every character, or "none" for one loss per character
    (flattened, (B*T,)).
    """
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction=reduction)


@contextlib.contextmanager
def evaluation_mode(model: CharModel) -> Iterator[None]:
    """No dropout and no autograd while reading; the model's mode is put back afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def evaluate(
    model: CharModel,
    ids: torch.Tensor,
    batch_size: int,
    seq_length: int,
    device: torch.device | None = None,
    amp: torch.dtype | None = None,
) -> tuple[float, int]:
    """Mean loss in nats over every character of `ids` after the first, stateful.

    Returns (loss, characters scored). The model is put back in the mode it was in.
    """
    device = device or model.head.weight.device
    total, count = 0.0, 0
    with evaluation_mode(model):
        chunks = evaluation_chunks(ids, batch_size, seq_length)
        state: State = model.init_state(chunks[0].inputs.shape[0])
        for chunk in chunks:
            if chunk.continues_row is not None:
                state = select_rows(state, [chunk.continues_row])
            inputs, targets = chunk.inputs.to(device).long(), chunk.targets.to(device).long()
            with autocast(device, amp):
                logits, state = model(inputs, state)
            total += char_loss(logits, targets, reduction="sum").item()
            count += targets.numel()
    return total / count, count


# --------------------------------------------------------------------------- reading a text


@dataclass(frozen=True)
class Reading:
    """A text as the model reads it: the ids of its known characters and where they stand."""

    text: str
    ids: torch.Tensor  # (N,) the known characters' ids, in order
    positions: torch.Tensor  # (N,) int64: the index in `text` of each id

    @property
    def skipped(self) -> int:
        """Characters of the text the model did not read (not in its vocabulary)."""
        return len(self.text) - len(self.positions)


def read(vocab: Vocabulary, text: str, skip_unknown: bool = False) -> Reading:
    """Encode `text`; unknown characters are refused by name, or left out with `skip_unknown`."""
    missing = vocab.unknown(text)
    if missing and not skip_unknown:
        shown = ", ".join(describe_char(c) for c in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise CorpusError(
            f"the text has characters the model never saw: {shown}{more}; remove them or pass "
            "--skip-unknown (they are then shown but not scored)"
        )
    if not missing:
        return Reading(text, vocab.encode(text), torch.arange(len(text)))
    known = torch.tensor([c in vocab for c in text], dtype=torch.bool)
    if not known.any():
        raise CorpusError("no character of the text is in the model's vocabulary")
    kept = "".join(c for c in text if c in vocab)
    return Reading(text, vocab.encode(kept), known.nonzero().squeeze(1))


# --------------------------------------------------------------------------- the whole text


@dataclass(frozen=True)
class Score:
    """A model's loss on a text, in nats per character, and what it was measured over."""

    loss: float
    characters: int  # characters scored (every character read, after the first of each row)
    skipped: int  # characters left out as unknown
    split: str
    batch_size: int
    seq_length: int

    @property
    def bpc(self) -> float:
        return bits_per_char(self.loss)

    def to_json(self) -> dict:
        return {
            "loss": self.loss,
            "bpc": self.bpc,
            "characters": self.characters,
            "skipped": self.skipped,
            "split": self.split,
            "batch_size": self.batch_size,
            "seq_length": self.seq_length,
        }


def score(
    model: CharModel,
    vocab: Vocabulary,
    text: str,
    *,
    batch_size: int,
    seq_length: int,
    split: str = "all",
    val_fraction: float = 0.1,
    skip_unknown: bool = False,
    device: torch.device | None = None,
    amp: torch.dtype | None = None,
) -> Score:
    """The model's mean loss over `text` (or its train / val split), stateful, as training
    evaluates: the same layout of rows and chunks, so the training corpus's val split gives
    exactly the val loss the run logged (at the same precision)."""
    ids, skipped = split_of(vocab, text, split, val_fraction, skip_unknown)
    if device is not None:
        model = model.to(device)
    loss, count = evaluate(model, ids, batch_size, seq_length, device, amp)
    return Score(loss, count, skipped, split, batch_size, seq_length)


def split_of(
    vocab: Vocabulary, text: str, split: str, val_fraction: float, skip_unknown: bool = False
) -> tuple[torch.Tensor, int]:
    """The ids of `text` (or of its train / val split) that a score reads, and how many
    characters were left out as unknown. Shared by static and dynamic evaluation."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val fraction must be between 0 and 1, got {val_fraction}")
    reading = read(vocab, text, skip_unknown)
    ids = reading.ids
    if split != "all":
        train_ids, val_ids = split_train_val(ids, val_fraction)
        ids = train_ids if split == "train" else val_ids
    if len(ids) < 2:
        raise CorpusError(f"the {split} text has {len(ids)} character(s); at least 2 are needed")
    return ids, reading.skipped
