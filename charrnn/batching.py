"""The lesson's cyclic sequence batching, for truncated back-propagation through time.

The text (already encoded as ids) is cut into ``batch_size`` contiguous rows, and each
training step takes the next ``seq_length`` characters of every row. With the lesson's data
``1..12``, ``batch_size=2``, ``seq_length=3``::

    text:      1  2  3  4  5  6  7  8  9 10 11 12   (then 1 again: the text is a cycle)

                   step 1      step 2
                ┌─────────┬──────────┐
    row 0       │ 1  2  3 │  4  5  6 │   inputs   (batch_size rows x seq_length columns)
    row 1       │ 7  8  9 │ 10 11 12 │
                ├─────────┼──────────┤
    row 0       │ 2  3  4 │  5  6  7 │   targets  = the next character of the text
    row 1       │ 8  9 10 │ 11 12  1 │            (12 is followed by 1: the cycle)
                └─────────┴──────────┘
    n_batches = row length // seq_length = 6 // 3 = 2

Row r of step k+1 continues row r of step k, so the hidden state a model ends step k with is
the right state to start step k+1 with (carry it, detached).

What does not fit: a row holds ``n_batches * seq_length`` characters, so only
``batch_size * n_batches * seq_length`` characters are used as inputs in an epoch; the last
``len(text) mod (batch_size * seq_length)`` characters are dropped (never an input, though the
first of them is still the target of the last used character: targets are always the true next
character). With a per-epoch ``offset`` the whole layout is rotated along the cycle, so each
epoch sees different windows and drops different characters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from charrnn import machine
from charrnn.errors import ConfigError, CorpusError

# Memory to show one value of a batch (inputs or targets) as a learner sees it: the index and
# id tensors, the list of the row, and a cell of the drawn table.
BYTES_PER_SHOWN_VALUE = 1024


def check_shown_fits(batch_size: int, seq_length: int, steps: int) -> None:
    """Refuse (ConfigError) showing `steps` batches that would not fit in half the free memory."""
    values = 2 * steps * batch_size * (seq_length + 1)  # inputs and targets
    too_big = machine.beyond_half(values * BYTES_PER_SHOWN_VALUE, free=True)
    if too_big:
        raise ConfigError(
            f"showing {steps:,} step(s) of {batch_size:,} x {seq_length:,} characters would "
            f"take {too_big}; show fewer steps or smaller batches"
        )


def check_shape(batch_size: int, seq_length: int) -> None:
    if batch_size < 1:
        raise CorpusError(f"batch_size must be at least 1, got {batch_size}")
    if seq_length < 1:
        raise CorpusError(f"seq_length must be at least 1, got {seq_length}")


class CyclicBatches:
    """One epoch of the lesson's layout over `data` (1-D ids), rotated by `offset`.

    ``batches[k]`` is step k+1's ``(inputs, targets)``, each ``(batch_size, seq_length)`` int64.
    """

    def __init__(self, data: torch.Tensor, batch_size: int, seq_length: int, offset: int = 0):
        check_shape(batch_size, seq_length)
        self.data = data
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.n_batches = len(data) // batch_size // seq_length
        if self.n_batches == 0:
            raise CorpusError(
                f"the text has {len(data)} characters, too short for one step of "
                f"batch_size {batch_size} x seq_length {seq_length} "
                f"(needs {batch_size * seq_length}); use a longer text or smaller sizes"
            )
        self.offset = offset % len(data)
        self.row_length = self.n_batches * seq_length
        # (B, 1) start of every row; step k adds k * seq_length. One index tensor per step is
        # cheap and lets the rotation wrap around the end without copying the corpus.
        self._row_starts = self.offset + torch.arange(batch_size).unsqueeze(1) * self.row_length
        self._window = torch.arange(seq_length + 1).unsqueeze(0)  # (1, S+1)

    @property
    def used(self) -> int:
        """Characters that are an input exactly once in this epoch."""
        return self.batch_size * self.row_length

    @property
    def dropped(self) -> int:
        return len(self.data) - self.used

    def __len__(self) -> int:
        return self.n_batches

    def row(self, r: int, count: int | None = None) -> torch.Tensor:
        """The first `count` (all ``row_length``) ids of row `r`: the contiguous stream its
        steps read one ``seq_length`` after another (the lesson's ``[1..6]`` and ``[7..12]``)."""
        count = self.row_length if count is None else min(count, self.row_length)
        start = int(self._row_starts[r, 0])
        return self.data[(start + torch.arange(count)) % len(self.data)]

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= step < self.n_batches:
            raise IndexError(step)
        positions = (self._row_starts + step * self.seq_length + self._window) % len(self.data)
        window = self.data[positions].long()  # (B, S+1)
        return window[:, :-1], window[:, 1:]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step in range(self.n_batches):
            yield self[step]


def epoch_offset(epoch: int, seq_length: int, seed: int) -> int:
    """Where epoch `epoch` starts on the cycle when per-epoch shifting is on.

    Epoch 0 starts at 0 (the lesson's layout); later epochs start at a pseudo-random point
    within one seq_length, fixed by the seed, so a resumed run sees the same windows.
    """
    if epoch == 0:
        return 0
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return int(torch.randint(seq_length, (1,), generator=generator))


@dataclass(frozen=True)
class EvalChunk:
    """Part of a text to score: inputs and targets of shape (rows, length), in the text's dtype.

    ``continues_row`` is None for the main block (rows continue from the previous chunk's
    state, row for row), or the row of the main block whose final state this tail continues.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    continues_row: int | None = None


def evaluation_chunks(data: torch.Tensor, batch_size: int, seq_length: int) -> list[EvalChunk]:
    """Every character after the first, as a target exactly once, in stateful order.

    Evaluation must score the whole text, not an epoch's worth of whole steps, and must not
    wrap (the first character is not the last one's successor in held-out text). The
    ``len - 1`` (input, target) pairs are laid out as up to ``batch_size`` contiguous rows cut
    into chunks of ``seq_length`` (the last one shorter); the few pairs that do not fill a row
    come last, continuing the last row's state. A text shorter than one row still gets scored.
    """
    check_shape(batch_size, seq_length)
    pairs = len(data) - 1
    if pairs < 1:
        raise CorpusError("a text needs at least 2 characters to be scored")
    rows = min(batch_size, pairs)
    row_length = pairs // rows
    # Views of the (compact) ids; the consumer widens one chunk at a time.
    inputs = data[: rows * row_length].view(rows, row_length)
    targets = data[1 : rows * row_length + 1].view(rows, row_length)
    chunks = [
        EvalChunk(inputs[:, t : t + seq_length], targets[:, t : t + seq_length])
        for t in range(0, row_length, seq_length)
    ]
    tail_start = rows * row_length
    if tail_start < pairs:
        tail_inputs = data[tail_start:pairs].unsqueeze(0)
        tail_targets = data[tail_start + 1 :].unsqueeze(0)
        chunks.append(EvalChunk(tail_inputs, tail_targets, continues_row=rows - 1))
    return chunks
