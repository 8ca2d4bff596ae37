"""Independent checks: the code against values worked out another way, not against itself.

Other tests compare the code with itself (eval with `evaluate`, int8 stepping with the exact
stepper, sampling with an earlier run of sampling). Here every expected value comes from
somewhere else: a direct ``F.cross_entropy`` over one whole sequence, a vocabulary built with
a plain dict, a split or a batch layout written out by hand, the schedule's formula, the
model's own forward pass in place of the sampler's step.
"""

from __future__ import annotations

import copy
import importlib
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from charrnn import checkpoint as ckpt
from charrnn import config, load_model
from charrnn.config import ModelConfig, TrainConfig
from charrnn.model import CharModel
from charrnn.schedule import Anchor, Schedule
from charrnn.train import Trainer
from tests.conftest import TINY_FLAGS, run_cli

# --------------------------------------------------------------------------- the sampler's insides
# The one place that knows how sample.py is built (it is being refactored: `Stepper`, `Int8`
# and `Dense` may change names). It looks for two things: the one-character step a
# TextGenerator samples with (today `generator.stepper`), and every tensor that step holds.
# The CLI's `sample` calls LOAD_MODEL; a spy there sees the generator it builds.

LOAD_MODEL = "charrnn.sample.load_model"


def step_path(generator) -> tuple:
    """(step, dtypes): `step(ids (B,), state) -> (logits (B, V), state)`, the step sampling
    uses; `dtypes` maps each weight matrix a step multiplies by (the model's names:
    core.weight_hh_l0, core.weight_ih_l1, ..., head.weight; the first layer's input table is
    left out, it stays exact by design) to the dtypes of the 2-D tensors that can hold it,
    found anywhere inside the step object (the model itself is not searched): one side its
    input size and the other at least its output size, either orientation (the sampler may
    stack the weights that read the same vector into one matrix), the input table's shape
    excepted."""
    step = generator.stepper
    found: list[torch.Tensor] = []
    seen: set[int] = set()

    def walk(value) -> None:
        if id(value) in seen or value is generator.model:
            return
        seen.add(id(value))
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple, set)):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif hasattr(value, "__dict__"):
            walk(vars(value))

    walk(step)
    names = [
        name
        for name, _ in generator.model.named_parameters()
        if name.startswith("core.weight_hh_l")
        or (name.startswith("core.weight_ih_l") and not name.endswith("_l0"))
        or name == "head.weight"
    ]
    weights = dict(generator.model.named_parameters())
    model = generator.model
    table_shape = (model.vocab_size, model.core.weight_ih_l0.shape[0])

    def holds(tensor: torch.Tensor, weight: torch.Tensor) -> bool:
        rows, inputs = weight.shape
        shape = tuple(tensor.shape)
        return (
            tensor.dim() == 2
            and shape != table_shape
            and any(side == inputs and other >= rows for side, other in (shape, shape[::-1]))
        )

    dtypes = {name: {t.dtype for t in found if holds(t, weights[name])} for name in names}
    return step, dtypes


# --------------------------------------------------------------------------- helpers


TEXT = (
    "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs!\n"
    "How vexingly quick daft zebras jump. Sphinx of black quartz, judge my vow?\n"
) * 8
TEXT = TEXT[:1003]  # 1003: the splits below round down (0.25 * 1003 = 250.75)


def plain_vocab(text: str) -> dict[str, int]:
    """A character's id is its place in the sorted set of the text's characters."""
    return {char: i for i, char in enumerate(sorted(set(text)))}


def ids_of(text: str, vocab: dict[str, int]) -> torch.Tensor:
    return torch.tensor([vocab[char] for char in text], dtype=torch.long)


def direct_loss(model: CharModel, ids: torch.Tensor, rows: int = 1) -> float:
    """Mean cross-entropy of every character after the first, read in float64.

    rows=1: the whole text as ONE sequence from a zero state. rows=R: what `eval` documents
    for a batch of R: the len-1 (input, target) pairs cut into R contiguous rows of
    (len-1)//R pairs, each row from a zero state, and the last row running on to the end.
    """
    model = copy.deepcopy(model).double().eval()
    pairs = len(ids) - 1
    rows = min(rows, pairs)
    length = pairs // rows
    total = 0.0
    with torch.no_grad():
        for row in range(rows):
            end = (row + 1) * length if row < rows - 1 else pairs
            part = ids[row * length : end + 1]
            logits, _ = model(part[None, :-1])
            total += F.cross_entropy(logits[0], part[1:], reduction="sum").item()
    return total / pairs


def hand_built(cell: str, layers: int, embedding_dim: int, vocab_size: int) -> CharModel:
    """A small model with fixed, larger-than-default random weights (so state matters)."""
    model = CharModel(
        ModelConfig(cell=cell, hidden_size=12, num_layers=layers, embedding_dim=embedding_dim),
        vocab_size,
    )
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.6)
    return model.eval()


def save_checkpoint(model: CharModel, vocab: dict[str, int], path: Path) -> Path:
    """The project's checkpoint layout (see Trainer._checkpoint); saving is not under test."""
    ckpt.save(
        {
            **ckpt.header(),
            "model_config": config.to_dict(model.config),
            "train_config": config.to_dict(TrainConfig(batch_size=5, seq_length=9)),
            "vocab": list(vocab),
            "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        },
        path,
    )
    return path


def eval_json(*args) -> dict:
    result = run_cli("eval", *args, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


MODELS = [("lstm", 2, 6), ("gru", 1, 0), ("rnn", 2, 0)]  # (cell, layers, embedding_dim)


# --------------------------------------------------------------------------- 1. eval


@pytest.mark.parametrize("cell, layers, embedding_dim", MODELS)
def test_eval_equals_cross_entropy_over_the_whole_text_as_one_sequence(
    tmp_path, cell, layers, embedding_dim
):
    vocab = plain_vocab(TEXT)
    model = hand_built(cell, layers, embedding_dim, len(vocab))
    path = save_checkpoint(model, vocab, tmp_path / "hand.pt")
    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    ids = ids_of(TEXT, vocab)
    expected = direct_loss(model, ids)
    # One row, cut into chunks of 7: eval carries the state across 143 chunk boundaries.
    result = eval_json(path, "--corpus", corpus, "--batch-size", 1, "--seq-length", 7)
    assert result["characters"] == len(TEXT) - 1
    assert result["loss"] == pytest.approx(expected, abs=1e-5)
    assert result["bpc"] == pytest.approx(expected / math.log(2), abs=1e-5)
    # Sanity: a model that ignored the state would not match (the check has teeth).
    assert abs(direct_loss(model, ids, rows=len(ids) // 7) - expected) > 1e-3


@pytest.mark.parametrize("cell, layers, embedding_dim", MODELS[:2])
def test_eval_with_several_rows_is_each_row_read_from_a_zero_state(
    tmp_path, cell, layers, embedding_dim
):
    vocab = plain_vocab(TEXT)
    model = hand_built(cell, layers, embedding_dim, len(vocab))
    path = save_checkpoint(model, vocab, tmp_path / "hand.pt")
    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    # 1002 pairs in 4 rows of 250, the 2 left over continuing the last row.
    result = eval_json(path, "--corpus", corpus, "--batch-size", 4, "--seq-length", 7)
    expected = direct_loss(model, ids_of(TEXT, vocab), rows=4)
    assert result["characters"] == 1002
    assert result["loss"] == pytest.approx(expected, abs=1e-5)
    assert result["bpc"] == pytest.approx(expected / math.log(2), abs=1e-5)


@pytest.mark.parametrize(
    "split, fraction, part",
    [
        # The last int(1003 * f) characters validate; the rest train (worked out by hand).
        ("val", "0.25", slice(753, None)),  # 250 characters
        ("train", "0.25", slice(None, 753)),
        ("val", "0.5", slice(502, None)),  # int(501.5) = 501 characters
    ],
)
def test_eval_of_a_split_equals_cross_entropy_over_that_part(tmp_path, split, fraction, part):
    vocab = plain_vocab(TEXT)
    model = hand_built("lstm", 1, 0, len(vocab))
    path = save_checkpoint(model, vocab, tmp_path / "hand.pt")  # its run's val_fraction: 0.1
    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    result = eval_json(path, "--corpus", corpus, "--split", split, "--val-fraction", fraction,
                       "--batch-size", 1, "--seq-length", 5)  # fmt: skip
    held = TEXT[part]
    expected = direct_loss(model, ids_of(held, vocab))
    assert result["split"] == split and result["characters"] == len(held) - 1
    assert result["loss"] == pytest.approx(expected, abs=1e-5)
    assert result["bpc"] == pytest.approx(expected / math.log(2), abs=1e-5)


# --------------------------------------------------------------------------- 2. int8 path


def test_int8_generator_steps_with_int8_weights_and_exact_with_float(tiny_run):
    int8 = load_model(str(tiny_run), device="cpu", int8=True)
    exact = load_model(str(tiny_run), device="cpu", int8=False)
    _, int8_dtypes = step_path(int8)
    _, exact_dtypes = step_path(exact)
    assert {"core.weight_hh_l0", "head.weight"} <= set(int8_dtypes)
    for name, dtypes in int8_dtypes.items():
        assert dtypes == {torch.int8}, (name, dtypes)
    for name, dtypes in exact_dtypes.items():
        assert dtypes == {torch.float32}, (name, dtypes)
    # And the step computes with them: close to the exact step, but not the same numbers.
    int8_step, exact_step = step_path(int8)[0], step_path(exact)[0]
    ids = torch.tensor([3, 10, 20])
    with torch.inference_mode():
        a, _ = int8_step(ids, int8.model.init_state(3))
        b, _ = exact_step(ids, exact.model.init_state(3))
    assert not torch.equal(a, b)
    torch.testing.assert_close(a, b, atol=0.05, rtol=0.05)


@pytest.mark.parametrize(
    "flags, expect_int8",
    [(("--int8",), True), (("--exact",), False), ((), False)],  # tiny: 32 units, auto = exact
)
def test_cli_int8_and_exact_flags_sample_with_those_weights(
    tiny_run, monkeypatch, flags, expect_int8
):
    module_name, _, function_name = LOAD_MODEL.rpartition(".")
    module = importlib.import_module(module_name)
    real, loaded = getattr(module, function_name), []

    def spy(*args, **kwargs):
        loaded.append(real(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(module, function_name, spy)
    result = run_cli("sample", tiny_run, *flags, "--device", "cpu", "--length", 40, "--seed", 5)
    assert result.exit_code == 0, result.output
    assert len(result.stdout) == 1 + 40 + 1  # the default one-character prime, text, newline
    assert len(loaded) == 1
    dtypes = set().union(*step_path(loaded[0])[1].values())
    assert (torch.int8 in dtypes) is expect_int8, dtypes


# --------------------------------------------------------------------------- 3. int8 quality


def nll_exact_and_int8(run: Path, text: str) -> tuple[float, float, float]:
    """Mean NLL per character of `text` (first character given): the exact model read as one
    sequence, and the int8 step teacher-forced one character at a time; and the mean KL
    divergence per character of the int8 step's distribution from the exact one."""
    generator = load_model(str(run), device="cpu", int8=True)
    vocab = {char: i for i, char in enumerate(generator.vocab.chars)}
    ids = ids_of(text, vocab)
    step, dtypes = step_path(generator)
    assert torch.int8 in set().union(*dtypes.values())
    model = generator.model.eval()
    with torch.inference_mode():
        logits, _ = model(ids[None, :-1])
        exact = torch.log_softmax(logits[0].double(), dim=-1)  # (N - 1, V)
        state, stepped = model.init_state(1), []
        for t in range(len(ids) - 1):
            step_logits, state = step(ids[t : t + 1], state)
            stepped.append(step_logits)
        int8 = torch.log_softmax(torch.cat(stepped).double(), dim=-1)
    targets = ids[1:, None]
    kl = (exact.exp() * (exact - int8)).sum(-1).mean().item()
    return -exact.gather(1, targets).mean().item(), -int8.gather(1, targets).mean().item(), kl


# The mean NLL difference is signed and can cancel: a 10% error in every int8 scale stays
# within 0.01 nats/char on these runs. The KL divergence cannot cancel: it is ~1e-5 to 1e-4
# for the real int8 path here, and 2e-3 to 1e-2 with a wrong scale or a lost head bias.
KL_BOUND = 1e-3


def test_int8_is_within_a_hundredth_of_a_nat_of_exact_on_the_tiny_run(tiny_run, shakespeare_text):
    held = shakespeare_text[-1500:]  # in the run's validation split: never trained on
    exact, int8, kl = nll_exact_and_int8(tiny_run, held)
    assert exact < math.log(len(set(shakespeare_text)))  # trained: better than uniform
    assert abs(int8 - exact) <= 0.01, (exact, int8)
    assert 0 < kl <= KL_BOUND, kl


@pytest.mark.slow
def test_int8_is_within_a_hundredth_of_a_nat_of_exact_on_a_256_unit_run(tmp_path, shakespeare_text):
    # 256 units: the size from which sampling picks int8 by itself (INT8_MIN_HIDDEN).
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(shakespeare_text, encoding="utf-8")
    run = tmp_path / "run"
    result = run_cli("train", *TINY_FLAGS, "--corpus", corpus, "--out", run,
                     "--hidden-size", 256, "--batch-size", 16, "--seq-length", 32,
                     "--max-steps", 300, "--eval-every", 0)  # fmt: skip
    assert result.exit_code == 0, result.output
    exact, int8, kl = nll_exact_and_int8(run, shakespeare_text[-3000:])
    assert exact < 2.3  # it learned more than character frequencies
    assert abs(int8 - exact) <= 0.01, (exact, int8)
    assert 0 < kl <= KL_BOUND, kl


# --------------------------------------------------------------------------- 4. beside others
# Tests elsewhere whose expected value comes from the code under test, each with a check from
# first principles here: the trainer's batches (test_batching checks CyclicBatches alone), the
# learning-rate schedule (no test computes a value), the run's logged val loss (test_explain
# compares it with eval, which calls the same `evaluate`), and sampling (test_sample compares
# it only with itself).


def test_trainer_feeds_the_lessons_batches(tmp_path, monkeypatch):
    # 14 characters, 2 held out (int(14 * 0.15) = 2): the lesson's 12, as letters.
    corpus = tmp_path / "c.txt"
    corpus.write_text("abcdefghijklmn", encoding="utf-8")
    model_config, train_config = config.resolve("tiny", dict(
        corpus=str(corpus), val_fraction=0.15, batch_size=2, seq_length=3, max_steps=2,
        eval_every=0, checkpoint_every=0, threads=1, hidden_size=8,
    ))  # fmt: skip
    trainer = Trainer(model_config, train_config, tmp_path / "run")
    real_step, seen = trainer._train_step, []

    def record(inputs, targets, lr):
        seen.append([[trainer.vocab.decode(row) for row in t] for t in (inputs, targets)])
        return real_step(inputs, targets, lr)

    monkeypatch.setattr(trainer, "_train_step", record)
    trainer.run()
    assert seen == [
        [["abc", "ghi"], ["bcd", "hij"]],  # step 1: the lesson's [[1,2,3],[7,8,9]] -> [[2,3,4],...
        [["def", "jkl"], ["efg", "kla"]],  # step 2: 12 is followed by 1 (the cycle)
    ]


def test_schedule_values_from_the_formula():
    # peak * warm-up * (floor + (1 - floor) * decay), worked out by hand.
    cosine = Schedule(peak=1e-2, kind="cosine", min_fraction=0.05, warmup_steps=5)
    assert cosine.learning_rate(0, 0.0) == pytest.approx(1e-2 * 1 / 5)  # step 1 of 5 warm-up
    assert cosine.learning_rate(2, 0.0) == pytest.approx(1e-2 * 3 / 5)
    assert cosine.learning_rate(4, 0.0) == pytest.approx(1e-2)
    # cos(pi / 4) = sqrt(2) / 2: decay (1 + sqrt(2) / 2) / 2 = 0.853553...
    assert cosine.learning_rate(50, 0.25) == pytest.approx(
        1e-2 * (0.05 + 0.95 * (2 + math.sqrt(2)) / 4)
    )
    assert cosine.learning_rate(50, 0.5) == pytest.approx(1e-2 * (0.05 + 0.95 * 0.5))
    assert cosine.learning_rate(50, 1.0) == pytest.approx(1e-2 * 0.05)
    linear = Schedule(peak=2e-3, kind="linear", min_fraction=0.1, warmup_steps=0)
    assert linear.learning_rate(0, 0.25) == pytest.approx(2e-3 * (0.1 + 0.9 * 0.75))
    constant = Schedule(peak=3e-3, kind="constant", min_fraction=0.1, warmup_steps=0)
    assert constant.learning_rate(7, 0.9) == pytest.approx(3e-3)
    # Resumed at half of 20 steps with a budget of 40: progress 0.5 at fraction 0.25, then
    # linear to 1; at step 25 (fraction 0.625) it is halfway there: 0.75.
    assert Anchor(0.5, 0.25).progress_at(0.625) == pytest.approx(0.75)


def test_logged_learning_rates_follow_the_cosine_formula(tiny_run):
    train = torch.load(tiny_run / "last.pt", weights_only=True)["train_config"]
    # What the formula below assumes of the run: a step budget only, cosine decay.
    assert train["lr_schedule"] == "cosine" and not train["max_time"] and not train["max_epochs"]
    peak, floor = train["learning_rate"], train["min_lr_fraction"]
    warmup, steps = train["warmup_steps"], train["max_steps"]
    lines = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) >= 2
    for line in lines:
        done = line["step"] - 1  # a line logs the rate of the step that ended at line["step"]
        warm = min(1.0, line["step"] / warmup)
        decay = (1 + math.cos(math.pi * done / steps)) / 2
        assert line["lr"] == pytest.approx(peak * warm * (floor + (1 - floor) * decay), rel=1e-9)


def test_logged_val_loss_equals_cross_entropy_over_the_held_out_rows(tmp_path, shakespeare_text):
    text = shakespeare_text[:4000]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    run = tmp_path / "run"
    result = run_cli("train", *TINY_FLAGS, "--corpus", corpus, "--out", run, "--max-steps", 3,
                     "--eval-every", 0, "--precision", "fp32")  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = torch.load(run / "last.pt", weights_only=True)
    vocab = plain_vocab(text)
    assert saved["vocab"] == list(vocab)
    model = CharModel(config.build(ModelConfig, saved["model_config"]), len(vocab))
    model.load_state_dict(saved["model"])
    held = text[4000 - 400 :]  # val_fraction 0.1 of 4000 characters
    expected = direct_loss(model, ids_of(held, vocab), rows=saved["train_config"]["batch_size"])
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 3
    assert last["val_loss"] == pytest.approx(expected, abs=1e-5)
    assert last["val_bpc"] == pytest.approx(expected / math.log(2), abs=1e-5)


def test_greedy_text_is_the_argmax_of_the_model_reading_it(tiny_run, shakespeare_text):
    generator = load_model(str(tiny_run), device="cpu", int8=False)
    prime = shakespeare_text[:30]
    text = generator.generate(prime, 80, greedy=True)
    vocab = {char: i for i, char in enumerate(generator.vocab.chars)}
    ids = ids_of(text, vocab)
    with torch.no_grad():
        logits, _ = generator.model.eval()(ids[None, :-1])  # the whole text, one forward pass
    # Each new character is the most likely one after everything before it.
    assert logits[0, len(prime) - 1 :].argmax(-1).tolist() == ids[len(prime) :].tolist()


def test_sampled_characters_follow_the_softmax_at_the_temperature(tiny_run, shakespeare_text):
    generator = load_model(str(tiny_run), device="cpu", int8=False)
    prime, temperature, n = shakespeare_text[:40], 0.7, 6000
    texts = generator.generate(prime, 1, temperature=temperature, num_samples=n, seed=11)
    vocab = {char: i for i, char in enumerate(generator.vocab.chars)}
    counts = torch.bincount(torch.tensor([vocab[t[-1]] for t in texts]), minlength=len(vocab))
    with torch.no_grad():
        logits, _ = generator.model.eval()(ids_of(prime, vocab)[None])
    p = torch.softmax(logits[0, -1].double() / temperature, dim=-1)
    # Every character's share within 4.5 standard errors of its probability (seeded).
    allowed = 4.5 * torch.sqrt(p * (1 - p) / n) + 1 / n
    assert ((counts / n - p).abs() <= allowed).all(), (counts / n - p).abs().max()
