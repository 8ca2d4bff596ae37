"""Dynamic evaluation (`charrnn eval --dynamic`): it adapts, it scores before it learns, it
leaves the model alone, lr 0 is static, and bad values are refused."""

from __future__ import annotations

import json
import math

import pytest
import torch

from charrnn import checkpoint as ckpt
from charrnn.dynamic import BETA, EPS, dynamic_evaluate
from charrnn.errors import ConfigError
from charrnn.scoring import char_loss, evaluate
from tests.conftest import run_cli

REPEATED = "To be, or not to be, that is the question. " * 30


@pytest.fixture
def trained(tiny_run):
    return ckpt.restore_model(ckpt.load(tiny_run))


def test_adapting_to_a_repetitive_text_beats_static(trained):
    model, vocab = trained
    result = dynamic_evaluate(model, vocab.encode(REPEATED), lr=3e-3, decay=0.0)
    assert result.loss < result.static_loss - 0.1
    assert result.characters == len(REPEATED) - 1


def test_lr_zero_is_exactly_static(trained):
    model, vocab = trained
    ids = vocab.encode(REPEATED)
    result = dynamic_evaluate(model, ids, lr=0.0, decay=0.5, seq_length=40)
    assert result.loss == result.static_loss
    # And that static figure is the one static evaluation gives in the same layout (up to the
    # last bits: autograd's LSTM kernel rounds differently from inference's).
    static, count = evaluate(model, ids, batch_size=1, seq_length=40)
    assert result.static_loss == pytest.approx(static, rel=1e-6)
    assert result.characters == count


def test_the_second_chunk_is_scored_by_weights_stepped_by_hand(trained):
    """One RMS step on the first chunk, computed here directly, then score the second."""
    model, vocab = trained
    lr, decay, length = 2e-3, 0.1, 30
    ids = vocab.encode(REPEATED[: 2 * length + 1]).long()
    first_in, first_out = ids[:length].unsqueeze(0), ids[1 : length + 1].unsqueeze(0)
    second_in, second_out = ids[length:-1].unsqueeze(0), ids[length + 1 :].unsqueeze(0)
    model.eval()
    logits, state = model(first_in)
    first_loss = char_loss(logits, first_out, reduction="sum")
    model.zero_grad()
    (first_loss / length).backward()
    stepped = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = p.grad
            # One step of the mean square from zero, bias-corrected: sqrt(g**2) = |g|.
            root = torch.sqrt((1 - BETA) * g * g / (1 - BETA))
            w = p - lr * g / (root + EPS)
            stepped[name] = w + decay * (p - w)
        model.zero_grad()
        state = tuple(s.detach() for s in state)
        logits, _ = torch.func.functional_call(model, stepped, (second_in, state))
        second_loss = char_loss(logits, second_out, reduction="sum")
    expected = (first_loss.item() + second_loss.item()) / (2 * length)
    result = dynamic_evaluate(model, ids, lr=lr, decay=decay, seq_length=length)
    assert result.loss == pytest.approx(expected, rel=1e-5)
    assert not math.isclose(result.loss, result.static_loss, rel_tol=1e-4)


def test_the_model_is_left_as_it_was_and_runs_repeat(trained):
    model, vocab = trained
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = vocab.encode(REPEATED)
    first = dynamic_evaluate(model, ids, lr=3e-3, decay=1e-3)
    second = dynamic_evaluate(model, ids, lr=3e-3, decay=1e-3)
    assert first == second  # deterministic
    assert model.training  # its mode is put back
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_eval_dynamic_reports_both_losses(tiny_run, shakespeare_text, tmp_path):
    # A tenth of the run's text: its validation split is 600 characters, 12 steps of adapting.
    corpus_file = tmp_path / "short.txt"
    corpus_file.write_text(shakespeare_text[:6000], encoding="utf-8")
    result = run_cli("eval", tiny_run, "--corpus", corpus_file, "--split", "val", "--json",
                     "--dynamic", "--dynamic-lr", "1e-3", "--dynamic-decay", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    plain = json.loads(run_cli("eval", tiny_run, "--corpus", corpus_file, "--split", "val",
                               "--json").stdout)  # fmt: skip
    assert report["loss"] == plain["loss"]  # the static figure is unchanged
    dynamic = report["dynamic"]
    assert (dynamic["lr"], dynamic["decay"], dynamic["rows"]) == (1e-3, 0.0, 1)
    assert dynamic["characters"] == plain["characters"]
    assert dynamic["gain"] == pytest.approx(dynamic["static_loss"] - dynamic["loss"])
    assert dynamic["static_loss"] == pytest.approx(plain["loss"], abs=0.02)  # another layout
    shown = run_cli("eval", tiny_run, "--corpus", corpus_file, "--split", "val", "--dynamic",
                    "--dynamic-lr", "1e-3", "--dynamic-decay", "0")  # fmt: skip
    assert shown.exit_code == 0 and "dynamic loss" in shown.stdout
    # The gain in words, not a sign to decode: "0.0123 nats/char better than 2.9 static".
    words = "better" if dynamic["gain"] >= 0 else "worse"
    said = " ".join(shown.stdout.split())
    assert f"{abs(dynamic['gain']):.4f} nats/char {words} than {dynamic['static_loss']:.4f}" in said


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dynamic", "--dynamic-lr", "-1"], "dynamic_lr must be at least 0.0"),
        (["--dynamic", "--dynamic-lr", "nan"], "dynamic_lr must be a finite number"),
        (["--dynamic", "--dynamic-decay", "1.5"], "dynamic_decay must be at most 1.0"),
        (["--dynamic", "--dynamic-lr", "1e300"], "dynamic_lr must be at most 1.0"),
        (["--dynamic-lr", "1e-3"], "--dynamic-lr and --dynamic-decay need --dynamic"),
    ],
)
def test_bad_dynamic_values_are_refused_in_one_line(tiny_run, corpus_file, args, message):
    result = run_cli("eval", tiny_run, "--corpus", corpus_file, *args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_an_adaptation_that_blows_the_weights_up_is_refused_not_reported(trained, monkeypatch):
    """A NaN loss would print as a figure (and as NaN, which is not JSON): refused instead."""
    import charrnn.dynamic

    def blow_up(adapter) -> None:
        for p in adapter.params:
            p.data.fill_(float("inf"))
            p.grad = None

    monkeypatch.setattr(charrnn.dynamic._RMSAdapter, "step", blow_up)
    model, vocab = trained
    with pytest.raises(ConfigError, match="diverged .* use a smaller --dynamic-lr"):
        dynamic_evaluate(model, vocab.encode(REPEATED), lr=0.5, decay=0.0)
