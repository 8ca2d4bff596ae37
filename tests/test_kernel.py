"""The compiled LSTM step (charrnn/kernel.c): built at first use, close to the model, each batch
row on its own, called as the torch step is, and replaced by it where it cannot be built.

CI installs a C compiler (.ci/run), so every test here runs there (and fails if it cannot); on
a machine without one, the tests that need it say so and are skipped, and the fallback runs."""

from __future__ import annotations

import os
import select
import signal

import pytest
import torch

from charrnn import kernel
from charrnn.config import ModelConfig
from charrnn.corpus import Vocabulary
from charrnn.errors import SamplingError
from charrnn.model import CharModel
from charrnn.sample import TextGenerator, stacked_matrices
from tests.conftest import run_cli

VOCAB = Vocabulary.from_text("abcdefghijklmnopqrstuvwxyz .,\n")


@pytest.fixture
def _compiler():
    """A C compiler, or a skip naming what is missing (a failure in CI, which installs one)."""
    if kernel.compiler() is None:
        message = "no C compiler here (cc, gcc or clang) to build the compiled step"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run these tests, but {message}; .ci/run installs gcc")
        pytest.skip(message)


needs_compiler = pytest.mark.usefixtures("_compiler")


@pytest.fixture(autouse=True)
def _fresh_load():
    """kernel.load caches its answer per process: each test decides its own environment."""
    kernel.load.cache_clear()
    yield
    kernel.load.cache_clear()


def lstm(hidden: int = 48, layers: int = 2, seed: int = 3, cell: str = "lstm") -> CharModel:
    torch.manual_seed(seed)
    config = ModelConfig(cell=cell, hidden_size=hidden, num_layers=layers, embedding_dim=16)
    return CharModel(config, len(VOCAB)).eval()


def compiled_step(model: CharModel) -> kernel.CompiledStepper:
    built = kernel.load()
    assert built.library is not None, built.why_not
    return kernel.CompiledStepper(built.library, *stacked_matrices(model))


TEXT = "the quick brown fox jumps over the lazy dog, again and again.\n"


@needs_compiler
@pytest.mark.parametrize(
    ("cell", "layers", "hidden"),
    [("lstm", 1, 48), ("lstm", 2, 24), ("lstm", 3, 36), ("gate-lstm", 2, 40)],
)
def test_the_compiled_step_follows_the_model(cell, layers, hidden):
    """Teacher-forced through a text (three rows, each its own offset), the compiled step's
    distributions and state stay within int8's quantisation error of the model's fp32 forward,
    at any width (torch's int8 kernel needs multiples of 16; this one does not)."""
    model = lstm(hidden=hidden, layers=layers, cell=cell)
    ids = torch.stack([VOCAB.encode(TEXT[k:] + TEXT[:k]).long() for k in (0, 5, 11)])
    step = compiled_step(model)
    ours = model_state = model.init_state(3)
    with torch.no_grad():
        for t in range(ids.shape[1]):
            logits_ours, ours = step(ids[:, t], ours)
            logits, model_state = model(ids[:, t : t + 1], model_state)
            p, q = torch.softmax(logits[:, -1], -1), torch.softmax(logits_ours, -1)
            assert (p - q).abs().sum(-1).max() < 0.03, t
            assert (ours[0] - model_state[0]).abs().max() < 0.02
            assert (ours[1] - model_state[1]).abs().max() < 0.03
    assert not torch.equal(ours[0], model_state[0])  # int8 arithmetic, not the model's forward


@needs_compiler
def test_a_rows_numbers_do_not_depend_on_the_rows_beside_it():
    """What `charrnn serve` relies on: a row computed in a batch is bit for bit the row computed
    alone, whatever the other rows hold."""
    model = lstm()
    batched, single = compiled_step(model), compiled_step(model)  # each carries its products
    torch.manual_seed(1)
    ids = torch.randint(len(VOCAB), (4, 30))
    batch, alone = model.init_state(4), model.init_state(1)
    with torch.no_grad():
        for t in range(ids.shape[1]):
            logits_batch, batch = batched(ids[:, t], batch)
            logits_alone, alone = single(ids[2:3, t], alone)
            assert torch.equal(logits_batch[2:3], logits_alone)
            assert torch.equal(batch[1][:, 2:3], alone[1][:, 0:1])


@needs_compiler
def test_any_state_handed_in_gives_the_same_numbers():
    """The step keeps its last products for the call that continues from the state it returned;
    a state it did not just return (a copy, an older one) has its products computed first,
    and a returned state is never written again."""
    model = lstm()
    step = compiled_step(model)
    ids = VOCAB.encode(TEXT).long()
    state = model.init_state(1)
    with torch.no_grad():
        logits, state = step(ids[:1], state)
        kept = (state[0].clone(), state[1].clone())
        follow, after = step(ids[1:2], state)
        again, _ = step(ids[1:2], (state[0].clone(), state[1].clone()))  # a copy: recomputed
        older, _ = step(ids[1:2], state)  # no longer the last returned: recomputed
    assert torch.equal(follow, again) and torch.equal(follow, older)
    assert torch.equal(state[0], kept[0]) and torch.equal(state[1], kept[1])
    assert not torch.equal(after[0], state[0])


@needs_compiler
def test_an_int8_lstm_samples_through_it_and_keeps_every_promise():
    model = lstm()
    generator = TextGenerator(model, VOCAB, torch.device("cpu"), int8=True)
    assert generator.sampler == "compiled int8"
    a = generator.generate("the ", 300, seed=7)
    assert a == generator.generate("the ", 300, seed=7) != generator.generate("the ", 300, seed=8)
    assert a.startswith("the ") and len(a) == 304
    assert "the " + "".join(generator.stream("the ", 300, seed=7)) == a
    texts = generator.generate("the ", 100, seed=7, num_samples=3)  # a batch: rows of its own
    assert [len(t) for t in texts] == [104] * 3 and len(set(texts)) == 3
    # Stop strings end a sample at the first one written, which is kept.
    stopped = generator.generate("the ", 300, seed=7, stop=["e"])
    assert stopped.endswith("e") and "e" not in stopped[4:-1]
    # torch's weight-only int8 step sees nearly the same distributions, so the same seed (the
    # same noise) picks mostly the same characters.
    weight_only = TextGenerator(model, VOCAB, torch.device("cpu"), int8=True, compiled=False)
    assert weight_only.sampler == "int8"
    b = weight_only.generate("the ", 300, seed=7)
    assert sum(x == y for x, y in zip(a, b, strict=True)) > 0.5 * len(a)
    exact = TextGenerator(model, VOCAB, torch.device("cpu"), int8=False)
    assert exact.sampler == "exact"


@needs_compiler
def test_scores_and_the_carried_context_match_the_model():
    """A compiled generation's mean log-probability is the model's for its text, and the
    context it carries on is the model's state after the prime and the text."""
    model = lstm(layers=1)
    generator = TextGenerator(model, VOCAB, torch.device("cpu"), int8=True)
    assert generator.sampler == "compiled int8"
    priming = generator.read_prime("a b")
    generation = generator.generation(priming.read(), 120, seed=3, score=True)
    for _ in generation:
        pass
    (sample,) = generation.samples()
    ids = VOCAB.encode("a b" + sample.text).long()
    with torch.no_grad():
        logits, state = model(ids[None, :], model.init_state(1))
        log_probs = torch.log_softmax(logits[0, 2:-1], -1).gather(1, ids[3:, None])
    assert sample.mean_log_prob == pytest.approx(float(log_probs.mean()), abs=0.01)
    context = generation.carry()
    assert (context.state[0] - state[0]).abs().max() < 0.02
    p, q = torch.softmax(context.logits, -1), torch.softmax(logits[:, -1], -1)
    assert (p - q).abs().sum() < 0.03


@needs_compiler
def test_probabilities_that_are_not_finite_are_refused():
    """An LSTM's state is bounded, but a broken checkpoint's logits need not be: the draw refuses
    them within one block, as it does the torch step's."""
    model = lstm(hidden=16, layers=1)
    with torch.no_grad():
        model.head.bias[3] = float("nan")
    generator = TextGenerator(model, VOCAB, torch.device("cpu"), int8=True)
    assert generator.sampler == "compiled int8"
    with pytest.raises(SamplingError, match="probabilities are not finite"):
        generator.generate("a", 600, seed=1)


@needs_compiler
def test_built_once_then_loaded_from_the_cache(monkeypatch):
    first = kernel.load()
    assert first.library is not None, first.why_not
    kernel.load.cache_clear()

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(kernel.subprocess, "run", no_compiling)
    assert kernel.load().library is not None


@pytest.mark.parametrize(
    ("environment", "why"),
    [
        ({kernel.ENV_SWITCH: "0"}, "turned off"),
        ({"CC": "", "PATH": ""}, "no C compiler"),
        ({"CC": "false"}, "could not build it"),
    ],
)
def test_without_the_compiled_step_the_torch_step_samples(monkeypatch, tmp_path, environment, why):
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path))  # nothing built yet
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    if environment.get("CC") == "false" and kernel.compiler() != ["false"]:
        pytest.skip("no `false` program to stand in for a failing compiler")
    built = kernel.load()
    assert built.library is None and why in built.why_not
    generator = TextGenerator(lstm(), VOCAB, torch.device("cpu"), int8=True)
    assert generator.sampler == "int8" and why in generator.compiled_why_not
    assert len(generator.generate("a", 40, seed=1)) == 41


@needs_compiler
def test_cli_reports_the_sampler_it_used(tiny_run):
    result = run_cli("sample", tiny_run, "--int8", "--length", 30, "--seed", 3, "--json")
    assert result.exit_code == 0, result.output
    assert '"sampler": "compiled int8"' in result.stdout
    exact = run_cli("sample", tiny_run, "--exact", "--length", 30, "--seed", 3, "--json")
    assert '"sampler": "exact"' in exact.stdout


@needs_compiler
def test_ids_and_states_that_do_not_fit_are_refused_not_read():
    """The C loop trusts its pointers, so what would make it read out of bounds is refused first:
    an id outside the vocabulary, a state of another shape, ids for another batch."""
    model = lstm(layers=2)
    step = compiled_step(model)
    state = model.init_state(2)
    with pytest.raises(SamplingError, match="outside the vocabulary"):
        step(torch.tensor([0, len(VOCAB)]), state)
    with pytest.raises(SamplingError, match="outside the vocabulary"):
        step(torch.tensor([-1, 0]), state)
    with pytest.raises(SamplingError, match="does not fit this model"):
        step(torch.tensor([0, 1]), lstm(layers=1).init_state(2))
    with pytest.raises(SamplingError, match="for a batch of 2"):
        step(torch.tensor([0, 1, 2]), state)
    logits, _ = step(torch.tensor([0, 1]), state)  # and then it still works
    assert logits.shape == (2, len(VOCAB)) and bool(torch.isfinite(logits).all())


def emulated_products(step: kernel.CompiledStepper, h: torch.Tensor) -> torch.Tensor:
    """kernel.c's product written out in torch, operation for operation in float32: each batch
    row of h quantised by max|h| / 127, rounded half away from zero, exact integer sums."""
    layers = []
    for k in range(h.shape[0]):
        rows = h[k]  # (B, H)
        top = rows.abs().amax(dim=1, keepdim=True)
        size = torch.where(top > 1e-30, top / 127, torch.ones_like(top))
        scaled = rows * (1 / size)
        quantised = torch.trunc(scaled + torch.where(scaled < 0, -0.5, 0.5))
        sums = quantised.double() @ step.weights[k].double().T  # exact at these sizes
        layers.append((sums.float() * (size * step.scales[k]) + step.biases[k]).reshape(-1))
    return torch.cat(layers)


@needs_compiler
def test_the_step_is_the_int8_arithmetic_it_describes():
    """Against kernel.c's arithmetic written out in torch, on weights large enough to saturate
    the gates (the exp polynomial's far range) and a width with a vector tail: the products
    agree to float32 rounding, and one step's state to the exp polynomial's accuracy (an error
    in the polynomial's sixth-order term alone exceeds the bound)."""
    model = lstm(hidden=300, layers=2, seed=4)
    with torch.no_grad():
        for weight in model.core.parameters():
            weight.mul_(60.0)
    step = compiled_step(model)
    torch.manual_seed(5)
    h = torch.rand(2, 3, 300) * 2 - 1
    c = torch.randn(2, 3, 300) * 3
    terms = step.terms(h)[: 3 * sum(step.rows)]
    expected = emulated_products(step, h)
    assert torch.allclose(terms, expected, rtol=1e-5, atol=1e-5)
    ids = torch.tensor([0, 7, len(VOCAB) - 1])
    with torch.no_grad():
        _, (h_new, c_new) = step(ids, (h, c))
    table, hidden = step.table, 300
    below = terms.reshape(-1)  # layer 0's rows, then layer 1's
    rows0, rows1 = step.rows
    inputs = table[ids]
    for k, rows in enumerate((rows0, rows1)):
        start = 3 * rows0 if k else 0
        layer = below[start : start + 3 * rows].reshape(3, rows)
        gates = inputs + layer[:, rows - 4 * hidden :]
        i, f, g, o = gates.chunk(4, dim=1)
        c_expected = torch.sigmoid(f) * c[k] + torch.sigmoid(i) * torch.tanh(g)
        h_expected = torch.sigmoid(o) * torch.tanh(c_expected)
        assert (gates.abs() > 45).any()  # saturated: tanh's exp(-2x) reaches the clamp
        # Measured: 2.4e-7 at most (float32 rounding and the polynomial's ~1 ulp).
        assert torch.allclose(c_new[k], c_expected, atol=2e-6)
        assert torch.allclose(h_new[k], h_expected, atol=2e-6)
        # The next layer's input: this layer's product of its new h, as kernel.c makes it.
        next_products = emulated_products(step, h_new)[: 3 * rows0].reshape(3, rows0)
        inputs = next_products[:, : 4 * hidden]


@needs_compiler
def test_a_state_holding_nan_gives_nan_logits_for_the_draw_to_refuse():
    model = lstm(layers=1)
    step = compiled_step(model)
    h, c = model.init_state(2)
    h[0, 1, 5] = float("nan")
    logits, _ = step(torch.tensor([1, 2]), (h, c))
    assert bool(torch.isfinite(logits[0]).all()) and bool(torch.isnan(logits[1]).all())


@needs_compiler
def test_threads_share_a_large_batch_without_changing_a_number():
    model = lstm(hidden=64, layers=2)
    step = compiled_step(model)
    torch.manual_seed(2)
    ids = torch.randint(len(VOCAB), (40, 5))  # 40 rows: past the batch that takes threads
    results = []
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        state = model.init_state(40)
        for t in range(ids.shape[1]):
            logits, state = step(ids[:, t], state)
        results.append((logits, state))
    for logits, state in results[1:]:
        assert torch.equal(logits, results[0][0]) and torch.equal(state[1], results[0][1][1])


def steps_of(step: kernel.CompiledStepper, model: CharModel, ids: torch.Tensor):
    """The logits and state after stepping every column of `ids` (batch, T) from zeros."""
    state = model.init_state(ids.shape[0])
    for t in range(ids.shape[1]):
        logits, state = step(ids[:, t], state)
    return logits, state


@needs_compiler
def test_a_small_batch_shares_its_products_with_the_helper_without_changing_a_number():
    model = lstm(hidden=64, layers=2)
    step = compiled_step(model)
    library = kernel.load().library
    torch.manual_seed(2)
    ids = torch.randint(len(VOCAB), (3, 30))
    for batch in (1, 3):
        torch.set_num_threads(1)
        alone = steps_of(step, model, ids[:batch])
        torch.set_num_threads(2)
        shared_before = library.charrnn_team_jobs()
        shared = steps_of(step, model, ids[:batch])
        assert library.charrnn_team_jobs() >= shared_before + 2 * 30  # two layers, 30 steps
        assert torch.equal(shared[0], alone[0])
        assert all(torch.equal(a, b) for a, b in zip(shared[1], alone[1], strict=True))


@needs_compiler
def test_a_forked_child_starts_its_own_helper_instead_of_waiting_for_its_parents():
    model = lstm(hidden=64, layers=1)
    step = compiled_step(model)
    torch.set_num_threads(2)
    ids = torch.randint(len(VOCAB), (1, 10))
    expected, _ = steps_of(step, model, ids)  # the parent's helper is running now
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child's outcome is read by the parent)
        try:
            logits, _ = steps_of(step, model, ids)
            os.write(writing, b"same" if torch.equal(logits, expected) else b"differs")
        finally:
            os._exit(0)
    os.close(writing)
    ready, _, _ = select.select([reading], [], [], 60)
    answer = os.read(reading, 16) if ready else b"hung"
    os.close(reading)
    if not ready:
        os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    assert answer == b"same"


def test_cli_verbose_says_why_the_compiled_step_is_not_used(tiny_run, monkeypatch):
    monkeypatch.setenv(kernel.ENV_SWITCH, "0")
    result = run_cli("sample", tiny_run, "--int8", "--length", 20, "--seed", 1, "--verbose")
    assert result.exit_code == 0, result.output
    assert "compiled int8 step is not used: turned off by CHARRNN_KERNEL=0" in result.stderr
    assert "int8 step) from" in result.stderr
