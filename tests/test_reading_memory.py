"""Reading long texts and asking for much: memory is bounded, and what cannot fit is refused.

- `explain` and `eval` run the model a chunk at a time: no pass is longer than a chunk, however
  long the text, and the chunked results are the one-pass results.
- `explain` shows at most --max-chars characters.
- An empty text, or one holding a lone surrogate, is one line.
- `sample` refuses --num-samples x --length beyond half the free memory before generating;
  `inspect-batches` refuses what it could not show, and --demo beyond 10**6.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from charrnn import checkpoint as ckpt
from charrnn import explain, machine, scoring
from charrnn.errors import CorpusError
from tests.conftest import run_cli
from tests.test_hostile_checkpoints import assert_refused


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return ckpt.restore_model(ckpt.load(tiny_run / "best.pt"))


@pytest.fixture(scope="module")
def long_text(tiny_run) -> str:
    return (tiny_run.parent / "corpus.txt").read_text(encoding="utf-8")  # ~60,000 characters


class Lengths:
    """Records the longest sequence each forward pass of a module was given."""

    def __init__(self, module: torch.nn.Module, time_dim: int = 1):
        self.longest = 0
        module.register_forward_pre_hook(self.record)
        self.time_dim = time_dim

    def record(self, module, args):
        self.longest = max(self.longest, args[0].shape[self.time_dim])


def test_surprise_reads_a_long_text_a_chunk_at_a_time(tiny_run, long_text):
    model, vocab = ckpt.restore_model(ckpt.load(tiny_run / "best.pt"))
    lengths = Lengths(model)
    chunked = explain.surprise(model, vocab, scoring.read(vocab, long_text))
    assert lengths.longest <= explain.chunk_length(model) < len(long_text) // 10
    # The same values as one pass over the whole text (the state carries over the chunks).
    with torch.inference_mode():
        ids = vocab.encode(long_text).long().unsqueeze(0)
        logits, _ = model.eval()(ids)
        whole = scoring.char_loss(logits[:, :-1], ids[:, 1:], reduction="none")
    assert chunked.values[0] is None
    torch.testing.assert_close(torch.tensor(chunked.values[1:]), whole, rtol=1e-4, atol=1e-4)


def test_gates_and_units_are_read_a_chunk_at_a_time(loaded, long_text, monkeypatch):
    model, vocab = loaded
    text = long_text[:3000]
    reading = scoring.read(vocab, text)
    whole_trace = explain.unit_trace(model, reading, "cell", 0, 3).values
    whole_units = explain.top_units(model, reading, explain.PATTERNS, "cell", 3)
    monkeypatch.setattr(explain, "CHUNK_BYTES", 1)  # the smallest chunk: 16 characters
    assert explain.chunk_length(model, gates=True) == 16
    passes, original = [], explain.GateLSTM.forward_with_gates

    def recorded(self, x, hx=None):
        passes.append(x.shape[1])
        return original(self, x, hx)

    monkeypatch.setattr(explain.GateLSTM, "forward_with_gates", recorded)
    assert explain.unit_trace(model, reading, "cell", 0, 3).values == pytest.approx(
        whole_trace, abs=1e-5
    )
    assert max(passes) == 16 and len(passes) == -(-len(text) // 16)
    chunked_units = explain.top_units(model, reading, explain.PATTERNS, "cell", 3)
    for pattern, found in whole_units.items():
        assert [m.unit for m in chunked_units[pattern]] == [m.unit for m in found]
        assert [m.correlation for m in chunked_units[pattern]] == pytest.approx(
            [m.correlation for m in found], abs=1e-6
        )


def test_eval_passes_are_one_chunk_however_long_the_text(tiny_run, loaded, long_text):
    model, vocab = loaded
    lengths = Lengths(model)
    result = scoring.score(model, vocab, long_text * 3, batch_size=4, seq_length=50)
    assert result.characters == 3 * len(long_text) - 1 and lengths.longest == 50


def test_eval_refuses_one_pass_that_would_not_fit(tiny_run, monkeypatch):
    corpus = tiny_run.parent / "corpus.txt"
    ok = run_cli("eval", tiny_run, "--corpus", corpus, "--batch-size", 64)
    assert ok.exit_code == 0, ok.output
    monkeypatch.setattr(machine, "available_bytes", lambda: 10_000_000)
    refused = run_cli("eval", tiny_run, "--corpus", corpus, "--batch-size", 10**6,
                      "--seq-length", 10**6)  # fmt: skip
    assert_refused(refused, "one pass of the model over", "use smaller sizes")


def test_explain_shows_at_most_max_chars(tiny_run, long_text, tmp_path):
    (tmp_path / "long.txt").write_text(long_text, encoding="utf-8")
    result = run_cli("explain", tiny_run, "--file", tmp_path / "long.txt", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["values"]) == 20_000
    assert f"showing the first 20,000 of {len(long_text):,} characters" in result.stderr
    few = run_cli("explain", tiny_run, "--file", tmp_path / "long.txt", "--max-chars", 50,
                  "--json")  # fmt: skip
    assert json.loads(few.stdout)["chars"] == list(long_text[:50])
    assert run_cli("explain", tiny_run, "--text", "To be", "--max-chars", 0).exit_code == 2
    assert "--max-chars" in run_cli("explain", "--help").stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "the text is empty"), ("To \udcff be", "U+DCFF at character 4"),
     ("\ud800", "not a character")],
    ids=["empty", "a lone surrogate", "a lone high surrogate"],
)  # fmt: skip
def test_empty_texts_and_lone_surrogates_are_one_line(tiny_run, loaded, text, message):
    for extra in ((), ("--skip-unknown",), ("--show", "gate"), ("--json",)):
        assert_refused(run_cli("explain", tiny_run, "--text", text, *extra), message)
    model, vocab = loaded
    with pytest.raises(CorpusError, match=re.escape(message)):
        scoring.score(model, vocab, text, batch_size=1, seq_length=5)


@pytest.mark.slow  # a real process: argv bytes that are not UTF-8 arrive as surrogates
def test_a_command_line_text_that_is_not_utf8_is_one_line(tiny_run):
    command = [sys.executable, "-m", "charrnn", "explain", str(tiny_run), "--text"]
    result = subprocess.run([os.fsencode(a) for a in command] + [b"To \xff be"],
                            capture_output=True, timeout=120)  # fmt: skip
    assert result.returncode == 1, result.stderr
    lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
    assert len(lines) == 1 and "U+DCFF" in lines[0]


def test_samples_beyond_half_the_free_memory_are_refused_before_generating(tiny_run, tmp_path):
    started = time.monotonic()
    assert_refused(run_cli("sample", tiny_run, "-m", 10**6, "-n", 10**7), "fewer or shorter")
    assert_refused(run_cli("sample", tiny_run, "-m", 10**6, "-n", 10**7, "--out-dir", tmp_path),
                   "fewer or shorter")  # fmt: skip
    assert time.monotonic() - started < 20 and not list(tmp_path.iterdir())
    fine = run_cli("sample", tiny_run, "-m", 3, "-n", 10, "--seed", 1)
    assert fine.exit_code == 0 and fine.stdout.count("==> sample") == 3


def test_the_sampling_bound_follows_the_free_memory(tiny_run, monkeypatch):
    monkeypatch.setattr(machine, "available_bytes", lambda: 1_000_000)
    assert_refused(run_cli("sample", tiny_run, "-m", 100, "-n", 1000), "free memory (1.0 MB)")


def test_inspect_batches_bounds(monkeypatch):
    assert run_cli("inspect-batches", "--demo", 10**6, "--json").exit_code == 0
    too_many = run_cli("inspect-batches", "--demo", 10**6 + 1)
    assert too_many.exit_code == 2 and "1000000" in too_many.output
    monkeypatch.setattr(machine, "available_bytes", lambda: 1_000_000)
    assert_refused(run_cli("inspect-batches", "--demo", 10**6, "--batch-size", 100,
                           "--seq-length", 100), "show fewer steps")  # fmt: skip
