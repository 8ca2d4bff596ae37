"""The character model: input encoding -> recurrent core -> dropout -> linear head.

    ids (B, T) -embedding/one-hot-> (B, T, E) -core-> (B, T, H) -dropout-> head -> (B, T, V)

The head is applied to every time step (the lesson's Linear over ``(batch*seq, hidden)``),
so one forward pass predicts the next character at every position. The model never computes
the loss, prints or reads files: the trainer and sampler do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from charrnn.cell_kinds import KINDS, CellKind
from charrnn.config import ModelConfig
from charrnn.cores import make_core
from charrnn.dropout import Dropout, dropout

# The recurrent state, always a tuple: (h, c) for the LSTM family, (h,) for the other cells;
# each tensor (layers, B, H).
State = tuple[torch.Tensor, ...]


class CharModel(nn.Module):
    """A character-level language model: ``forward(ids, state) -> (logits, state)``."""

    def __init__(self, config: ModelConfig, vocab_size: int):
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        if config.embedding_dim > 0:
            self.embedding: nn.Embedding | None = nn.Embedding(vocab_size, config.embedding_dim)
            input_size = config.embedding_dim
        else:
            self.embedding = None  # the lesson's one-hot input
            input_size = vocab_size
        self.core = make_core(config, input_size)
        self.dropout = Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, vocab_size)

    @property
    def kind(self) -> CellKind:
        """The cell kind's facts (state count, gate views); see charrnn.cell_kinds."""
        return KINDS[self.config.cell]

    def encode_input(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, E) embeddings, or (B, T, V) one-hot vectors."""
        if self.embedding is not None:
            return self.embedding(ids)
        return F.one_hot(ids, self.vocab_size).to(self.head.weight.dtype)

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """ids (B, T) int64 -> logits (B, T, V) and the state after the last step."""
        if state is None:
            state = self.init_state(ids.shape[0])
        x = self.encode_input(ids)  # (B, T, E)
        dropped = self._dropped_weights() if self.training and self.config.weight_drop > 0 else None
        out, state = self._run_core(x, state, dropped)  # (B, T, H)
        logits = self.head(self.dropout(out))  # (B, T, V)
        return logits, state

    def _dropped_weights(self) -> dict[str, torch.Tensor]:
        """Weight drop (Merity et al., 2017): one dropout mask on the hidden-to-hidden weights
        per step, shared by every time step, so the recurrence itself is regularised without
        breaking the fast fused kernels (the core runs with the dropped weights swapped in)."""
        return {
            name: dropout(weight, self.config.weight_drop)
            for name, weight in self.core.named_parameters()
            if name.startswith("weight_hh")
        }

    def _run_core(
        self, x: torch.Tensor, state: State, weights: dict[str, torch.Tensor] | None
    ) -> tuple[torch.Tensor, State]:
        """The core over `x` from `state`, with `weights` swapped in if given.

        The one place that adapts our tuple to torch's calling convention: LSTM cores take and
        return (h, c), GRU and RNN cores a bare h.
        """
        single = self.kind.state_count == 1
        packed = state[0] if single else state
        if weights is None:
            out, packed = self.core(x, packed)
        else:
            out, packed = torch.func.functional_call(self.core, weights, (x, packed))
        return out, ((packed,) if single else tuple(packed))

    def init_state(self, batch_size: int) -> State:
        """Zeros for a batch, on the parameters' device and dtype."""
        weight = self.head.weight
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        return tuple(weight.new_zeros(shape) for _ in range(self.kind.state_count))


def detach_state(state: State) -> State:
    """Cut the graph at a batch boundary (truncated BPTT) but keep the values."""
    return tuple(s.detach() for s in state)


def select_rows(state: State, rows: slice | list[int]) -> State:
    """The state of some batch rows (dimension 1 of every state tensor)."""
    return tuple(s[:, rows] for s in state)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
