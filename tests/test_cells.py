"""The gate-level cells against torch's own: same weights must give the same numbers."""

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from charrnn.cells import GateGRU, GateLSTM, StepRNN

INPUT_SIZE, HIDDEN_SIZE, SEQ_LENGTH, BATCH_SIZE = 5, 7, 6, 3
ATOL, RTOL = 1e-5, 1e-5


@pytest.fixture(autouse=True)
def seed() -> None:
    torch.manual_seed(0)


def make_input(batch_first: bool, requires_grad: bool = True) -> torch.Tensor:
    shape = (
        (BATCH_SIZE, SEQ_LENGTH, INPUT_SIZE)
        if batch_first
        else (SEQ_LENGTH, BATCH_SIZE, INPUT_SIZE)
    )
    return torch.randn(shape, requires_grad=requires_grad)


def make_state(num_layers: int) -> torch.Tensor:
    return torch.randn(num_layers, BATCH_SIZE, HIDDEN_SIZE, requires_grad=True)


def scalar_of(out: torch.Tensor, states: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """A loss that weighs every element differently, so gradients are not all alike.

    The weights come from their own generator so both models under comparison get the same.
    """
    generator = torch.Generator().manual_seed(1)
    total = (out * torch.randn(out.shape, generator=generator)).sum()
    for state in states:
        total = total + (state * torch.randn(state.shape, generator=generator)).sum()
    return total


def clone_leaf(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().clone().requires_grad_(tensor.requires_grad)


def assert_same_gradients(ours: nn.Module, theirs: nn.Module) -> None:
    their_params = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        if name.startswith("weight_peep"):
            continue
        assert param.grad is not None, name
        assert_close(param.grad, their_params[name].grad, atol=ATOL, rtol=RTOL, msg=name)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_lstm_matches_torch(num_layers: int, batch_first: bool, with_state: bool) -> None:
    reference = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers, batch_first=batch_first)
    lstm = GateLSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers, batch_first=batch_first)
    lstm.load_state_dict(reference.state_dict())  # strict: names and shapes line up

    x = make_input(batch_first)
    x_ref = clone_leaf(x)
    if with_state:
        h0, c0 = make_state(num_layers), make_state(num_layers)
        h0_ref, c0_ref = clone_leaf(h0), clone_leaf(c0)
        out, (h_n, c_n) = lstm(x, (h0, c0))
        out_ref, (h_n_ref, c_n_ref) = reference(x_ref, (h0_ref, c0_ref))
    else:
        out, (h_n, c_n) = lstm(x)
        out_ref, (h_n_ref, c_n_ref) = reference(x_ref)

    assert out.shape == out_ref.shape
    assert_close(out, out_ref, atol=ATOL, rtol=RTOL)
    assert_close(h_n, h_n_ref, atol=ATOL, rtol=RTOL)
    assert_close(c_n, c_n_ref, atol=ATOL, rtol=RTOL)

    scalar_of(out, (h_n, c_n)).backward()
    scalar_of(out_ref, (h_n_ref, c_n_ref)).backward()
    assert_same_gradients(lstm, reference)
    assert_close(x.grad, x_ref.grad, atol=ATOL, rtol=RTOL)
    if with_state:
        assert_close(h0.grad, h0_ref.grad, atol=ATOL, rtol=RTOL)
        assert_close(c0.grad, c0_ref.grad, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_gru_matches_torch(num_layers: int, batch_first: bool, with_state: bool) -> None:
    reference = nn.GRU(INPUT_SIZE, HIDDEN_SIZE, num_layers, batch_first=batch_first)
    gru = GateGRU(INPUT_SIZE, HIDDEN_SIZE, num_layers, batch_first=batch_first)
    gru.load_state_dict(reference.state_dict())

    x = make_input(batch_first)
    x_ref = clone_leaf(x)
    if with_state:
        h0 = make_state(num_layers)
        h0_ref = clone_leaf(h0)
        out, h_n = gru(x, h0)
        out_ref, h_n_ref = reference(x_ref, h0_ref)
    else:
        out, h_n = gru(x)
        out_ref, h_n_ref = reference(x_ref)

    assert out.shape == out_ref.shape
    assert_close(out, out_ref, atol=ATOL, rtol=RTOL)
    assert_close(h_n, h_n_ref, atol=ATOL, rtol=RTOL)

    scalar_of(out, (h_n,)).backward()
    scalar_of(out_ref, (h_n_ref,)).backward()
    assert_same_gradients(gru, reference)
    assert_close(x.grad, x_ref.grad, atol=ATOL, rtol=RTOL)
    if with_state:
        assert_close(h0.grad, h0_ref.grad, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(GateLSTM, nn.LSTM), (GateGRU, nn.GRU)],
    ids=["lstm", "gru"],
)
def test_parameters_have_torch_names_shapes_and_init(ours: type, theirs: type) -> None:
    module = ours(INPUT_SIZE, HIDDEN_SIZE, num_layers=2)
    reference = theirs(INPUT_SIZE, HIDDEN_SIZE, num_layers=2)
    shapes = {name: tuple(p.shape) for name, p in module.named_parameters()}
    assert shapes == {name: tuple(p.shape) for name, p in reference.named_parameters()}
    bound = HIDDEN_SIZE**-0.5
    for name, param in module.named_parameters():
        assert param.abs().max() <= bound, name
        assert param.std() > bound / 4, name  # spread over the range, not stuck at zero


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(GateLSTM, nn.LSTM), (GateGRU, nn.GRU)],
    ids=["lstm", "gru"],
)
def test_without_bias_matches_torch(ours: type, theirs: type) -> None:
    reference = theirs(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bias=False)
    module = ours(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bias=False)
    module.load_state_dict(reference.state_dict())
    assert not any("bias" in name for name, _ in module.named_parameters())
    x = make_input(batch_first=False, requires_grad=False)
    assert_close(module(x)[0], reference(x)[0], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(GateLSTM, nn.LSTM), (GateGRU, nn.GRU)],
    ids=["lstm", "gru"],
)
def test_unbatched_input_matches_torch(ours: type, theirs: type) -> None:
    reference = theirs(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, batch_first=True)
    module = ours(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, batch_first=True)
    module.load_state_dict(reference.state_dict())
    x = torch.randn(SEQ_LENGTH, INPUT_SIZE)  # (T, I): batch_first does not apply unbatched
    out, state = module(x)
    out_ref, state_ref = reference(x)
    assert out.shape == (SEQ_LENGTH, HIDDEN_SIZE)
    assert_close(out, out_ref, atol=ATOL, rtol=RTOL)
    assert_close(state, state_ref, atol=ATOL, rtol=RTOL)
    # And the final state goes back in, as when sampling one character at a time.
    assert_close(module(x, state)[0], reference(x, state_ref)[0], atol=ATOL, rtol=RTOL)


def test_zero_state_follows_input_dtype() -> None:
    lstm = GateLSTM(INPUT_SIZE, HIDDEN_SIZE).double()
    out, (h_n, c_n) = lstm(make_input(batch_first=False, requires_grad=False).double())
    assert out.dtype == h_n.dtype == c_n.dtype == torch.float64


def test_bad_shapes_are_rejected_with_a_message() -> None:
    lstm = GateLSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2)
    with pytest.raises(ValueError, match="input of size 5"):
        lstm(torch.randn(SEQ_LENGTH, BATCH_SIZE, INPUT_SIZE + 1))
    with pytest.raises(ValueError, match="state of shape"):
        lstm(make_input(False), (make_state(1), make_state(1)))
    with pytest.raises(ValueError, match="2 tensor"):
        lstm(make_input(False), make_state(2))


def test_peephole_starts_equal_to_plain_lstm() -> None:
    reference = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2)
    lstm = GateLSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, peephole=True)
    result = lstm.load_state_dict(reference.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["weight_peep_l0", "weight_peep_l1"]
    assert result.unexpected_keys == []
    assert lstm.weight_peep_l0.shape == (3, HIDDEN_SIZE)
    assert torch.count_nonzero(lstm.weight_peep_l0) == 0

    x = make_input(batch_first=False)
    x_ref = clone_leaf(x)
    out, (h_n, c_n) = lstm(x)
    out_ref, (h_n_ref, c_n_ref) = reference(x_ref)
    assert_close(out, out_ref, atol=ATOL, rtol=RTOL)
    assert_close(c_n, c_n_ref, atol=ATOL, rtol=RTOL)

    scalar_of(out, (h_n, c_n)).backward()
    scalar_of(out_ref, (h_n_ref, c_n_ref)).backward()
    assert_same_gradients(lstm, reference)
    assert_close(x.grad, x_ref.grad, atol=ATOL, rtol=RTOL)
    # Even at zero the peepholes get a gradient, or training could never move them.
    for layer in range(2):
        assert getattr(lstm, f"weight_peep_l{layer}").grad.abs().min() > 0


def reference_peephole_lstm(
    x: torch.Tensor, module: GateLSTM, h: torch.Tensor, c: torch.Tensor
) -> torch.Tensor:
    """One layer straight from the lesson's equations, with the joined vector [h, x]."""
    weight = torch.cat([module.weight_hh_l0, module.weight_ih_l0], dim=1)  # W, (4H, H + I)
    bias = module.bias_ih_l0 + module.bias_hh_l0
    w_i, w_f, w_n, w_o = weight.chunk(4)
    b_i, b_f, b_n, b_o = bias.chunk(4)
    p_i, p_f, p_o = module.weight_peep_l0
    outputs = []
    for x_t in x:
        joined = torch.cat([h, x_t], dim=1)  # [h_{t-1}, x_t]
        combine = torch.tanh(joined @ w_n.T + b_n)
        ignore = torch.sigmoid(joined @ w_i.T + b_i + p_i * c)
        forget = torch.sigmoid(joined @ w_f.T + b_f + p_f * c)
        c = c * forget + combine * ignore
        use = torch.sigmoid(joined @ w_o.T + b_o + p_o * c)  # sees the new c_t
        h = use * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs)


def test_peephole_weights_change_the_output_as_the_equations_say() -> None:
    lstm = GateLSTM(INPUT_SIZE, HIDDEN_SIZE, peephole=True)
    x = make_input(batch_first=False, requires_grad=False)
    h0, c0 = make_state(1).detach(), make_state(1).detach()
    plain, _ = lstm(x, (h0, c0))
    with torch.no_grad():
        lstm.weight_peep_l0.uniform_(-1.0, 1.0)
        out, _ = lstm(x, (h0, c0))
        expected = reference_peephole_lstm(x, lstm, h0[0], c0[0])
    assert not torch.allclose(out, plain, atol=1e-3)
    assert_close(out, expected, atol=ATOL, rtol=RTOL)

    # Each row acts on its own gate: zeroing one row changes the output.
    for row in range(3):
        with torch.no_grad():
            saved = lstm.weight_peep_l0[row].clone()
            lstm.weight_peep_l0[row] = 0
            changed, _ = lstm(x, (h0, c0))
            lstm.weight_peep_l0[row] = saved
        assert not torch.allclose(changed, out, atol=1e-4), row


def test_dropout_is_off_in_eval_mode() -> None:
    reference = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=3, dropout=0.5).eval()
    lstm = GateLSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=3, dropout=0.5).eval()
    lstm.load_state_dict(reference.state_dict())
    x = make_input(batch_first=False, requires_grad=False)
    out, (h_n, c_n) = lstm(x)
    out_ref, (h_n_ref, c_n_ref) = reference(x)
    assert_close(out, out_ref, atol=ATOL, rtol=RTOL)
    assert_close(h_n, h_n_ref, atol=ATOL, rtol=RTOL)
    assert_close(c_n, c_n_ref, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("cls", [GateLSTM, GateGRU], ids=["lstm", "gru"])
def test_dropout_in_training_is_random_but_seeded(cls: type) -> None:
    module = cls(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, dropout=0.5)
    x = make_input(batch_first=False, requires_grad=False)
    module.eval()
    evaluated, _ = module(x)
    module.train()
    torch.manual_seed(123)
    first, _ = module(x)
    torch.manual_seed(123)
    again, _ = module(x)
    torch.manual_seed(456)
    other, _ = module(x)
    assert_close(first, again, atol=0, rtol=0)
    assert not torch.allclose(first, other)
    assert not torch.allclose(first, evaluated)


def test_no_dropout_after_the_last_layer() -> None:
    with pytest.warns(UserWarning, match="no effect"):
        lstm = GateLSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=1, dropout=0.5)
    x = make_input(batch_first=False, requires_grad=False)
    training, _ = lstm.train()(x)
    evaluated, _ = lstm.eval()(x)
    assert_close(training, evaluated, atol=0, rtol=0)


@pytest.mark.parametrize("batch_first", [False, True])
def test_forward_with_gates_agrees_with_forward(batch_first: bool) -> None:
    num_layers = 2
    lstm = GateLSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers, batch_first=batch_first, peephole=True)
    with torch.no_grad():
        lstm.weight_peep_l1.uniform_(-0.5, 0.5)
    x = make_input(batch_first, requires_grad=False)
    state = (make_state(num_layers).detach(), make_state(num_layers).detach())

    out, (h_n, c_n) = lstm(x, state)
    out_g, (h_n_g, c_n_g), gates = lstm.forward_with_gates(x, state)
    assert_close(out_g, out, atol=0, rtol=0)
    assert_close(h_n_g, h_n, atol=0, rtol=0)
    assert_close(c_n_g, c_n, atol=0, rtol=0)

    assert set(gates) == {"ignore", "combine", "learnt", "forget", "kept", "use", "cell", "hidden"}
    for key, value in gates.items():
        assert value.shape == (num_layers, BATCH_SIZE, SEQ_LENGTH, HIDDEN_SIZE), key
    for key in ("ignore", "forget", "use"):
        assert gates[key].min() >= 0 and gates[key].max() <= 1, key
    assert gates["combine"].min() >= -1 and gates["combine"].max() <= 1

    assert_close(gates["cell"][:, :, -1], c_n, atol=0, rtol=0)
    assert_close(gates["hidden"][:, :, -1], h_n, atol=0, rtol=0)
    out_batch_first = out if batch_first else out.transpose(0, 1)  # (B, T, H)
    assert_close(gates["hidden"][-1], out_batch_first, atol=0, rtol=0)

    # The recorded gates obey the lesson's equations, step by step.
    cell_before = torch.cat([state[1].unsqueeze(2), gates["cell"][:, :, :-1]], dim=2)
    assert_close(gates["kept"], cell_before * gates["forget"], atol=ATOL, rtol=RTOL)
    assert_close(gates["learnt"], gates["combine"] * gates["ignore"], atol=ATOL, rtol=RTOL)
    assert_close(gates["cell"], gates["kept"] + gates["learnt"], atol=ATOL, rtol=RTOL)
    assert_close(gates["hidden"], gates["use"] * torch.tanh(gates["cell"]), atol=ATOL, rtol=RTOL)


def test_gru_forward_with_gates_agrees_with_forward() -> None:
    gru = GateGRU(INPUT_SIZE, HIDDEN_SIZE, num_layers=2)
    x = make_input(batch_first=False, requires_grad=False)
    out, h_n = gru(x)
    out_g, h_n_g, gates = gru.forward_with_gates(x)
    assert_close(out_g, out, atol=0, rtol=0)
    assert_close(h_n_g, h_n, atol=0, rtol=0)
    assert set(gates) == {"reset", "update", "candidate", "hidden"}
    assert gates["hidden"].shape == (2, BATCH_SIZE, SEQ_LENGTH, HIDDEN_SIZE)
    assert_close(gates["hidden"][-1], out.transpose(0, 1), atol=0, rtol=0)
    assert_close(gates["hidden"][:, :, -1], h_n, atol=0, rtol=0)
    for key in ("reset", "update"):
        assert gates[key].min() >= 0 and gates[key].max() <= 1, key


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_step_rnn_takes_nn_rnns_weights_and_gives_its_numbers(nonlinearity: str) -> None:
    torch.manual_seed(0)
    reference = nn.RNN(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, nonlinearity=nonlinearity)
    rnn = StepRNN(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, nonlinearity=nonlinearity)
    rnn.load_state_dict(reference.state_dict())
    x = make_input(batch_first=False, requires_grad=False)
    out, h_n = reference(x)
    out_s, h_n_s, gates = rnn.forward_with_gates(x)
    assert_close(out_s, out, atol=ATOL, rtol=RTOL)
    assert_close(h_n_s, h_n, atol=ATOL, rtol=RTOL)
    assert_close(gates["hidden"][:, :, -1], h_n, atol=ATOL, rtol=RTOL)  # every layer's, kept
    assert_close(gates["hidden"][-1], out.transpose(0, 1), atol=ATOL, rtol=RTOL)
