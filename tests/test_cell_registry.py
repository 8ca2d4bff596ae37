"""The cell registry: one list of kinds (cell_kinds, torch-free) and, for each, its torch core
and fast sampling step (cores); the two halves agree, and the facts match the modules."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from charrnn.cell_kinds import CELLS, KINDS, cell_kind
from charrnn.cells import GateGRU, GateLSTM
from charrnn.config import ModelConfig
from charrnn.cores import CORES, core_of
from charrnn.errors import ConfigError
from charrnn.model import CharModel

# Written out here, not read from the registry: what each kind must build.
MODULES = {
    "lstm": nn.LSTM,
    "gru": nn.GRU,
    "rnn": nn.RNN,
    "gate-lstm": GateLSTM,
    "peephole-lstm": GateLSTM,
    "gate-gru": GateGRU,
}


def test_both_halves_name_the_same_kinds_in_the_same_order():
    assert tuple(CORES) == CELLS == tuple(MODULES)
    assert all(CORES[name].kind is KINDS[name] for name in CELLS)
    # What explain shows of each: an LSTM's or a GRU's gates, a plain RNN's hidden state.
    assert {name: KINDS[name].gates for name in CELLS} == {
        "lstm": "lstm", "gru": "gru", "rnn": "rnn", "gate-lstm": "lstm",
        "peephole-lstm": "lstm", "gate-gru": "gru"}  # fmt: skip
    # The module `inspect` names is the one the registry builds.
    for name in CELLS:
        assert KINDS[name].module.removeprefix("nn.") == MODULES[name].__name__, name
    # Each gate view's twin records the gates of the kind it stands for.
    assert {name: MODULES[name] for name in CELLS if KINDS[name].gates == "gru"} == {
        "gru": nn.GRU, "gate-gru": GateGRU}  # fmt: skip


def test_unknown_kinds_are_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match="unknown cell 'transformer'; choose one of: lstm, gru"):
        cell_kind("transformer")
    with pytest.raises(ConfigError, match="unknown cell"):
        core_of("transformer")


@pytest.mark.parametrize("cell", CELLS)
def test_each_kind_builds_its_module_and_state_of_its_count(cell):
    model = CharModel(ModelConfig(cell=cell, hidden_size=8, num_layers=2, embedding_dim=4), 7)
    assert type(model.core) is MODULES[cell]
    assert getattr(model.core, "peephole", False) == (cell == "peephole-lstm")
    # The core's own return, in torch's convention: (h, c) for LSTMs, a bare h for the others.
    _, torch_state = model.core(torch.zeros(3, 5, 4))
    count = 2 if isinstance(torch_state, tuple) else 1
    assert cell_kind(cell).state_count == count == len(model.init_state(3))
    _, state = model(torch.zeros(3, 5, dtype=torch.long))
    assert isinstance(state, tuple) and [s.shape for s in state] == [(2, 3, 8)] * count


def test_config_needs_no_torch_for_the_cell_names():
    code = "import sys, charrnn.config as c; print(c.CELLS, 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{CELLS} False"
