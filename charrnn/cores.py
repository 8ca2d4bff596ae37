"""The recurrent cores: for each cell kind, how to build its torch module and how the fast
sampler takes one character's step through it. The torch half of the cell registry; the kinds
themselves, with their state counts, are listed in ``charrnn.cell_kinds``.

Every core is batch-first and called like torch's own: nn.LSTM and GateLSTM take and return the
state as ``(h, c)``, nn.GRU, nn.RNN and GateGRU as ``h`` alone. ``CharModel`` always holds the
state as a tuple and adapts it for the core in one place (``CharModel._run_core``).

A fast step (``sample.Stepper``) runs one layer for one character with few whole-vector torch
calls: at batch 1 each call costs more than its arithmetic. It gets the layer's input term
already projected (``W_ih x + biases``, from a table for the first layer), the layer's
recurrent term ``W_hh h (+ b_hh where it is not folded into the input term)``, already
computed (the Stepper makes it in the same matrix product as the layer's output projection of
the step before), and the layer's part of the state; it returns the layer's new state, whose
first tensor ``h`` is its output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from charrnn import cells
from charrnn.cell_kinds import KINDS, CellKind, cell_kind
from charrnn.config import ModelConfig

LayerStep = Callable[[Tensor, Tensor, Sequence[Tensor]], tuple[Tensor, ...]]


def lstm_step(projected: Tensor, recurrent: Tensor, state: Sequence[Tensor]):
    """LSTM: gates i, f, g, o from one sum; c_t = f * c + i * g, h_t = o * tanh(c_t)."""
    c = state[1]  # (B, H)
    hidden = c.shape[1]
    gates = torch.add(projected, recurrent)  # (B, 4H) in i, f, g, o order
    sig = torch.sigmoid(gates)
    g = torch.tanh(gates[:, 2 * hidden : 3 * hidden])
    c = torch.addcmul(sig[:, hidden : 2 * hidden] * c, sig[:, :hidden], g)
    return sig[:, 3 * hidden :] * torch.tanh(c), c


def gru_step(projected: Tensor, recurrent: Tensor, state: Sequence[Tensor]):
    """GRU: the recurrent term keeps b_hh, since the reset gate scales (W_hn h + b_hn)."""
    (h,) = state  # (B, H)
    rh, zh, nh = recurrent.chunk(3, dim=1)  # r, z, n order
    ri, zi, ni = projected.chunk(3, dim=1)
    r = torch.sigmoid(ri + rh)
    z = torch.sigmoid(zi + zh)
    n = torch.tanh(ni + r * nh)
    return (n + z * (h - n),)  # = (1 - z) * n + z * h


def rnn_step(config: ModelConfig) -> LayerStep:
    """Plain RNN: h_t = tanh (or relu) of the two terms' sum."""
    activation = torch.relu if config.nonlinearity == "relu" else torch.tanh

    def step(projected: Tensor, recurrent: Tensor, state: Sequence[Tensor]):
        return (activation(torch.add(projected, recurrent)),)

    return step


@dataclass(frozen=True)
class FastStep:
    """A kind's one-character step for the fast sampler (sample.Stepper)."""

    make: Callable[[ModelConfig], LayerStep]  # the step for a model's settings
    # Where b_hh goes: into the input term (its table and projection), or, for the GRU, whose
    # reset gate scales W_hn h + b_hn, into the recurrent term.
    fold_recurrent_bias: bool = True


LSTM_FAST = FastStep(lambda _: lstm_step)
GRU_FAST = FastStep(lambda _: gru_step, fold_recurrent_bias=False)
RNN_FAST = FastStep(rnn_step)


@dataclass(frozen=True)
class Core:
    """A cell kind's torch half: how to build its core, and its fast sampling step."""

    kind: CellKind
    # (config, torch's common arguments: input_size, hidden_size, num_layers, bias, ...) -> core
    build: Callable[[ModelConfig, dict[str, Any]], nn.Module]
    fast_step: FastStep | None  # None: the sampler steps with the model's own forward


# The gate-level twins have torch's weight names, shapes and gate order: the same fast steps.
CORES: dict[str, Core] = {
    core.kind.name: core
    for core in (
        Core(KINDS["lstm"], lambda _, common: nn.LSTM(**common), LSTM_FAST),
        Core(KINDS["gru"], lambda _, common: nn.GRU(**common), GRU_FAST),
        Core(
            KINDS["rnn"],
            lambda config, common: nn.RNN(nonlinearity=config.nonlinearity, **common),
            RNN_FAST,
        ),
        Core(KINDS["gate-lstm"], lambda _, common: cells.GateLSTM(**common), LSTM_FAST),
        Core(
            KINDS["peephole-lstm"],
            lambda _, common: cells.GateLSTM(peephole=True, **common),
            None,  # no fast step: the sampler runs the model's forward, a character a call
        ),
        Core(KINDS["gate-gru"], lambda _, common: cells.GateGRU(**common), GRU_FAST),
    )
}


def core_of(name: str) -> Core:
    """The registry entry of cell kind `name` (unknown names are refused)."""
    return CORES[cell_kind(name).name]


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
    return core_of(config.cell).build(config, common)
