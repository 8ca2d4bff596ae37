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
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from charrnn import machine
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


# A validation text larger than this is scored through a fixed sample of it: SAMPLE_WINDOWS
# windows of equal length, evenly spaced from its start to its end, SAMPLE_CHARS in all (a
# window is scored as a text of its own, from a zero state). The same windows every time, so
# the evaluations of a run compare with each other.
SAMPLE_CHARS = 2_000_000
SAMPLE_WINDOWS = 20


def sample_windows(length: int) -> list[tuple[int, int]] | None:
    """(start, stop) of the windows scored from a text of `length` ids; None: the whole text."""
    if length <= SAMPLE_CHARS:
        return None
    window = SAMPLE_CHARS // SAMPLE_WINDOWS
    stride = (length - window) / (SAMPLE_WINDOWS - 1)
    return [(round(i * stride), round(i * stride) + window) for i in range(SAMPLE_WINDOWS)]


def evaluate_sampled(model: CharModel, ids: torch.Tensor, *layout: Any) -> tuple[float, int, bool]:
    """`evaluate` (`layout`: its batch_size, seq_length, device, amp) over the whole of `ids`,
    or over its sample when it is large.

    Returns (loss, characters scored, whether it was the sample).
    """
    windows = sample_windows(len(ids))
    if windows is None:
        return (*evaluate(model, ids, *layout), False)
    total, count = 0.0, 0
    for start, stop in windows:
        loss, scored = evaluate(model, ids[start:stop], *layout)
        total, count = total + loss * scored, count + scored
    return total / count, count, True


def pass_bytes(model: CharModel, characters: int) -> int:
    """About how much memory one forward pass over `characters` characters takes (fp32): the
    inputs, every layer's outputs and gates, and the logits with their fp32 loss."""
    config = model.config
    per_char = config.embedding_dim + 6 * config.hidden_size * config.num_layers
    return 4 * characters * (per_char + 3 * model.vocab_size)


def check_pass_fits(model: CharModel, characters: int, what: str) -> None:
    """Refuse (ConfigError) a pass over `characters` at once that would not fit in memory."""
    too_big = machine.beyond_half(pass_bytes(model, characters), free=True)
    if too_big:
        raise ConfigError(
            f"one pass of the model over {characters:,} characters at once ({what}) would take "
            f"{too_big}; use smaller sizes"
        )


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


def check_text(text: str) -> None:
    """A text a model can read: not empty, and only characters. A lone surrogate is not one:
    it is how Python carries the bytes of a command-line argument that are not UTF-8."""
    if not text:
        raise CorpusError("the text is empty; give the model something to read")
    lone = LONE_SURROGATE.search(text)
    if lone:
        raise CorpusError(
            f"the text holds U+{ord(lone.group()):04X} at character {lone.start() + 1:,}, which "
            "is not a character (bytes that are not UTF-8 in the command line?); pass valid "
            "UTF-8 text"
        )


LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def read(vocab: Vocabulary, text: str, skip_unknown: bool = False) -> Reading:
    """Encode `text` (checked by check_text); unknown characters are refused by name, or left
    out with `skip_unknown`."""
    check_text(text)
    missing = vocab.unknown(text)
    if missing and not skip_unknown:
        shown = ", ".join(describe_char(c) for c in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise CorpusError(
            f"the text has characters the model never saw: {shown}{more}; remove them or pass "
            "--skip-unknown (they are then left out of the score)"
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

    @property
    def rows(self) -> int:
        """The rows the text was cut into (batching.evaluation_chunks), each read from a zero
        state: the more and shorter, the more characters are read with little context."""
        return min(self.batch_size, self.characters)

    def to_json(self) -> dict:
        return {
            "loss": self.loss,
            "bpc": self.bpc,
            "characters": self.characters,
            "skipped": self.skipped,
            "split": self.split,
            "batch_size": self.batch_size,
            "seq_length": self.seq_length,
            "rows": self.rows,
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
    # One pass reads a chunk of (rows, seq_length): its memory does not grow with the text,
    # but sizes from a command line or a crafted checkpoint could make one chunk huge.
    first = evaluation_chunks(ids, batch_size, seq_length)[0].inputs.numel()
    check_pass_fits(model, first, "batch_size x seq_length")
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
    reading = read(vocab, text, skip_unknown)
    ids = reading.ids
    if split != "all":
        train_ids, val_ids = split_train_val(ids, val_fraction)
        ids = train_ids if split == "train" else val_ids
    if len(ids) < 2:
        what = "the text" if split == "all" else f"the {split} split"
        raise CorpusError(f"{what} has {len(ids)} character(s); at least 2 are needed")
    return ids, reading.skipped
