"""The kinds of recurrent cell a model can have, and the facts about each that need no torch.

This is the one list of cell kinds: the config's choices (``CELLS``), the number of tensors in
a model's hidden state, and what ``charrnn explain --show gate`` can read of it all come from
here. What it takes to build and run each kind (its torch module and its fast sampling
step) is the other half of the registry, ``charrnn.cores``, keyed by the same names; a test
checks that the two halves name the same kinds.

The hidden state of every kind is a tuple of tensors, each (num_layers, batch, hidden_size):
``(h, c)`` for the LSTM family (short- and long-term memory), ``(h,)`` for the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from charrnn.errors import ConfigError


@dataclass(frozen=True)
class CellKind:
    name: str
    state_count: int  # tensors in the hidden state: 2 (h, c) for the LSTM family, else 1 (h)
    gates: str  # what explain shows: an "lstm"'s or a "gru"'s gates, an "rnn"'s hidden state
    module: str  # the core's module, as `inspect` names it (charrnn.cores builds it)
    exportable: bool = False  # torch's own cores: ONNX has LSTM, GRU and RNN operators


KINDS: dict[str, CellKind] = {
    kind.name: kind
    for kind in (
        CellKind("lstm", state_count=2, gates="lstm", module="nn.LSTM", exportable=True),
        CellKind("gru", state_count=1, gates="gru", module="nn.GRU", exportable=True),
        CellKind("rnn", state_count=1, gates="rnn", module="nn.RNN", exportable=True),  # tanh/relu
        CellKind("gate-lstm", state_count=2, gates="lstm", module="GateLSTM"),  # the lesson's
        CellKind("peephole-lstm", state_count=2, gates="lstm", module="GateLSTM"),  # peephole=True
        CellKind("gate-gru", state_count=1, gates="gru", module="GateGRU"),
    )
}
CELLS = tuple(KINDS)
EXPORTABLE_CELLS = tuple(name for name, kind in KINDS.items() if kind.exportable)


def cell_kind(name: str) -> CellKind:
    """The kind named `name`; an unknown name is refused with the list of known ones."""
    if name not in KINDS:
        raise ConfigError(f"unknown cell {name!r}; choose one of: {', '.join(CELLS)}")
    return KINDS[name]
