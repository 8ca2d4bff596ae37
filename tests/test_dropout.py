"""The fast CPU dropout: right statistics, torch's seeding, gradients, and the model uses it."""

import pytest
import torch

from charrnn.config import ModelConfig
from charrnn.dropout import Dropout, dropout, dropout_mask
from charrnn.model import CharModel


@pytest.mark.parametrize("p", [0.1, 0.25, 0.4, 0.5, 0.9])
def test_mask_drops_a_fraction_p_and_keeps_the_mean(p):
    torch.manual_seed(0)  # the bounds below are 6+ standard deviations wide; seeded all the same
    mask = dropout_mask((1000, 1000), p, torch.empty(0))
    dropped = (mask == 0).float().mean().item()
    # One million Bernoulli draws: the standard deviation of the fraction is under 0.0005.
    assert dropped == pytest.approx(p, abs=0.003)
    assert mask.mean().item() == pytest.approx(1.0, abs=0.02)
    zero, kept = mask.unique().tolist()
    assert zero == 0.0 and kept == pytest.approx(1 / (1 - p), rel=1e-4)


def test_mask_elements_are_independent_across_rows_and_columns():
    torch.manual_seed(0)
    mask = dropout_mask((2000, 500), 0.5, torch.empty(0)) > 0
    assert (mask[:, 0] == mask[:, 1]).float().mean().item() == pytest.approx(0.5, abs=0.05)
    assert (mask[0] == mask[1]).float().mean().item() == pytest.approx(0.5, abs=0.1)


def test_masks_follow_torch_manual_seed_and_differ_between_draws():
    torch.manual_seed(7)
    first, second = (
        dropout_mask((64, 64), 0.3, torch.empty(0)),
        dropout_mask((64, 64), 0.3, torch.empty(0)),
    )
    torch.manual_seed(7)
    again = dropout_mask((64, 64), 0.3, torch.empty(0))
    assert torch.equal(first, again)
    assert not torch.equal(first, second)


def test_mask_takes_the_dtype_of_its_input():
    assert dropout_mask((8, 8), 0.5, torch.empty(0, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_dropout_is_the_identity_in_eval_mode_and_at_zero():
    x = torch.randn(5, 7)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def test_gradient_is_the_mask():
    x = torch.ones(100, 100, requires_grad=True)
    y = dropout(x, 0.4)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * mask)/dx = mask, and x is all ones


def test_module_drops_only_in_training_mode():
    layer = Dropout(0.5)
    x = torch.ones(200, 200)
    assert (layer(x) == 0).any()
    layer.eval()
    assert torch.equal(layer(x), x)


def test_model_uses_fast_masks_for_output_dropout_and_weight_drop(monkeypatch):
    config = ModelConfig(hidden_size=16, embedding_dim=8, dropout=0.3, weight_drop=0.5)
    model = CharModel(config, vocab_size=11).train()
    drawn = []
    real = dropout_mask

    def spy(shape, p, like):
        drawn.append((tuple(shape), p))
        return real(shape, p, like)

    monkeypatch.setattr("charrnn.dropout.dropout_mask", spy)
    model(torch.randint(0, 11, (3, 5)))
    assert ((3, 5, 16), 0.3) in drawn  # output dropout
    assert ((64, 16), 0.5) in drawn  # weight_hh_l0: four gates of 16 units each
