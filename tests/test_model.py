"""The character model: every cell trains, state carries over, bad configs are refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from charrnn.config import CELLS, ModelConfig, build, from_saved
from charrnn.errors import ConfigError
from charrnn.model import CharModel, count_parameters, detach_state

VOCAB = 11


def make(cell: str, **overrides) -> CharModel:
    config = ModelConfig(cell=cell, hidden_size=16, num_layers=2, embedding_dim=8, **overrides)
    return CharModel(config, VOCAB)


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_trains_with_falling_loss(cell):
    torch.manual_seed(0)
    model = make(cell)
    # A periodic sequence the model can learn quickly: 0 1 2 ... 10 0 1 2 ...
    ids = (torch.arange(4 * 40).view(4, 40) % VOCAB).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(40):
        logits, _ = model(ids[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("cell", CELLS)
def test_state_carried_across_calls_equals_one_call(cell):
    model = make(cell).eval()
    ids = torch.randint(0, VOCAB, (3, 12))
    whole, state_whole = model(ids)
    first, state = model(ids[:, :5])
    second, state = model(ids[:, 5:], detach_state(state))
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole)
    for a, b in zip(state, state_whole, strict=True):
        torch.testing.assert_close(a, b)


def test_shapes_and_initial_state_follow_parameters():
    model = make("lstm").to(torch.float64)
    h, c = model.init_state(5)
    assert h.shape == c.shape == (2, 5, 16) and h.dtype == torch.float64
    logits, (h, c) = model(torch.randint(0, VOCAB, (5, 7)))
    assert logits.shape == (5, 7, VOCAB)
    gru_state = make("gru").init_state(3)  # always a tuple: (h,) for the GRU
    assert isinstance(gru_state, tuple) and len(gru_state) == 1 and gru_state[0].shape == (2, 3, 16)


def test_one_hot_input_is_the_lessons_model():
    model = CharModel(ModelConfig(hidden_size=8, embedding_dim=0), VOCAB)
    assert model.embedding is None and model.core.input_size == VOCAB
    logits, _ = model(torch.randint(0, VOCAB, (2, 3)))
    assert logits.shape == (2, 3, VOCAB)


def test_parameter_count_matches_torch_formula():
    model = CharModel(ModelConfig(hidden_size=16, num_layers=1, embedding_dim=8), VOCAB)
    lstm = 4 * 16 * (8 + 16) + 2 * 4 * 16
    assert count_parameters(model) == VOCAB * 8 + lstm + 16 * VOCAB + VOCAB


def test_relu_rnn():
    model = make("rnn", nonlinearity="relu")
    assert model.core.nonlinearity == "relu"


def test_refusals():
    # `bidirectional` is no longer a setting; a checkpoint of an older version may carry it.
    with pytest.raises(ConfigError, match="generate"):
        from_saved(ModelConfig, {"bidirectional": True})
    assert from_saved(ModelConfig, {"bidirectional": False}) == ModelConfig()
    with pytest.raises(ConfigError, match="unknown key 'bidirectional'"):
        build(ModelConfig, {"bidirectional": False})
    with pytest.raises(ConfigError, match="one of"):
        build(ModelConfig, {"cell": "transformer"})


@pytest.mark.parametrize("cell", CELLS)
def test_weight_drop_masks_recurrent_weights_in_training_only(cell):
    torch.manual_seed(0)
    model = make(cell, weight_drop=0.5)
    plain = make(cell)
    plain.load_state_dict(model.state_dict())
    ids = torch.randint(0, VOCAB, (2, 6))
    # Evaluation uses the full weights: the same as a model without weight drop.
    torch.testing.assert_close(model.eval()(ids)[0], plain.eval()(ids)[0])
    model.train()
    first, _ = model(ids)
    second, _ = model(ids)
    assert not torch.equal(first, second)  # a new mask every forward pass
    first.sum().backward()
    grad = model.core.weight_hh_l0.grad
    # Dropped weights get no gradient; about half of them here.
    assert 0.3 < (grad == 0).float().mean().item() < 0.7
    assert model.core.weight_ih_l0.grad.ne(0).float().mean().item() > 0.9
