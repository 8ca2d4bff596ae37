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

from charrnn import cells
from charrnn.config import CELLS, ModelConfig
from charrnn.dropout import Dropout, dropout
from charrnn.errors import ConfigError

# The recurrent state: (h, c) for LSTM cores, h for GRU and RNN cores; each (layers, B, H).
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def make_core(config: ModelConfig, input_size: int) -> nn.Module:
    """The recurrent core named by ``config.cell``, batch-first, with the lesson's parameters."""
    # torch only applies dropout between layers and warns if asked with one layer.
    between = config.dropout if config.num_layers > 1 else 0.0
    common = dict(
        input_size=input_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        bias=config.bias,
        batch_first=True,
        dropout=between,
    )
    match config.cell:
        case "lstm":
            return nn.LSTM(**common)
        case "gru":
            return nn.GRU(**common)
        case "rnn":
            return nn.RNN(nonlinearity=config.nonlinearity, **common)
        case "gate-lstm":
            return cells.GateLSTM(**common)
        case "peephole-lstm":
            return cells.GateLSTM(peephole=True, **common)
        case "gate-gru":
            return cells.GateGRU(**common)
    raise ConfigError(f"unknown cell {config.cell!r}; choose one of: {', '.join(CELLS)}")


LSTM_CELLS = ("lstm", "gate-lstm", "peephole-lstm")


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
    def is_lstm(self) -> bool:
        return self.config.cell in LSTM_CELLS

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
        if self.training and self.config.weight_drop > 0:
            out, state = self._core_with_dropped_weights(x, state)
        else:
            out, state = self.core(x, state)  # (B, T, H)
        logits = self.head(self.dropout(out))  # (B, T, V)
        return logits, state

    def _core_with_dropped_weights(self, x: torch.Tensor, state: State):
        """Weight drop (Merity et al., 2017): one dropout mask on the hidden-to-hidden weights
        per step, shared by every time step, so the recurrence itself is regularised without
        breaking the fast fused kernels (the core runs with the dropped weights swapped in)."""
        dropped = {
            name: dropout(weight, self.config.weight_drop)
            for name, weight in self.core.named_parameters()
            if name.startswith("weight_hh")
        }
        return torch.func.functional_call(self.core, dropped, (x, state))

    def init_state(self, batch_size: int) -> State:
        """Zeros for a batch, on the parameters' device and dtype."""
        weight = self.head.weight
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        h = weight.new_zeros(shape)
        return (h, weight.new_zeros(shape)) if self.is_lstm else h


def detach_state(state: State) -> State:
    """Cut the graph at a batch boundary (truncated BPTT) but keep the values."""
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)  # type: ignore[return-value]
    return state.detach()


def select_rows(state: State, rows: slice | list[int]) -> State:
    """The state of some batch rows (dimension 1 of every state tensor)."""
    if isinstance(state, tuple):
        return tuple(s[:, rows] for s in state)  # type: ignore[return-value]
    return state[:, rows]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
