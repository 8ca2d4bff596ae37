"""A text in a non-Latin script, with thousands of distinct characters, trains and samples;
--max-vocab keeps the most frequent and reads the rest as U+FFFD; past the cap, a one-line
refusal before any model is built."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from charrnn import load_model
from charrnn.errors import CorpusError
from charrnn.vocab import UNKNOWN, Vocabulary, choose
from tests.conftest import TINY_FLAGS, run_cli


def ideographs(distinct: int, length: int, seed: int = 0) -> str:
    """`length` CJK ideographs drawn from `distinct` of them with a Zipf-like skew (as in real
    text, a few are common and most are rare), every one at least once; lines of 40."""
    rng = random.Random(seed)
    alphabet = [chr(0x4E00 + i) for i in range(distinct)]
    weights = [1 / (rank + 1) for rank in range(distinct)]
    chars = alphabet + rng.choices(alphabet, weights, k=length - distinct)
    rng.shuffle(chars)
    return "\n".join("".join(chars[i : i + 40]) for i in range(0, len(chars), 40)) + "\n"


@pytest.fixture(scope="module")
def cjk(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cjk") / "cjk.txt"
    path.write_text(ideographs(3_000, 40_000), encoding="utf-8")
    return path


def test_thousands_of_distinct_characters_train_and_sample(tmp_path, cjk):
    result = run_cli("train", *TINY_FLAGS, "--corpus", cjk, "--out", tmp_path / "run",
                     "--max-steps", 6, "--eval-every", 3)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "vocabulary 3001" in " ".join(result.stderr.split())  # 3,000 ideographs and "\n"
    model = load_model(tmp_path / "run")
    text = model.generate(prime=cjk.read_text()[:5], length=200, seed=1)
    assert len(text) == 205 and set(text) <= set(cjk.read_text())


def test_max_vocab_keeps_the_most_frequent_and_maps_the_rest_to_u_fffd(tmp_path, cjk):
    text = cjk.read_text()
    result = run_cli("train", *TINY_FLAGS, "--corpus", cjk, "--out", tmp_path / "run",
                     "--max-steps", 2, "--max-vocab", 500)  # fmt: skip
    assert result.exit_code == 0, result.output
    counts = Counter(text)
    kept = sorted(counts, key=lambda c: (-counts[c], ord(c)))[:500]
    dropped = set(counts) - set(kept)
    said = " ".join(result.stderr.split())
    assert f"{len(dropped):,} rarer distinct characters" in said
    assert f"({sum(counts[c] for c in dropped):,} occurrences) are read as U+FFFD" in said
    model = load_model(tmp_path / "run")
    assert model.vocab.chars == tuple(sorted([*kept, UNKNOWN]))


def test_a_max_vocab_model_reads_what_it_never_saw_as_u_fffd_in_every_command(tmp_path, cjk):
    """Its own training text is never refused: sample, eval and explain read a character
    outside the vocabulary as U+FFFD, as training did."""
    import torch

    run = tmp_path / "run"
    trained = run_cli("train", *TINY_FLAGS, "--corpus", cjk, "--out", run, "--max-steps", 2,
                      "--max-vocab", 500)  # fmt: skip
    assert trained.exit_code == 0, trained.output
    vocab = load_model(run).vocab
    text = cjk.read_text()[:3_000]
    never_seen = next(c for c in text if c not in vocab)
    mapped = tmp_path / "mapped.txt"  # the same text with the mapping done by hand
    mapped.write_text("".join(c if c in vocab else UNKNOWN for c in text), encoding="utf-8")
    (tmp_path / "text.txt").write_text(text, encoding="utf-8")

    def loss(path: Path) -> str:
        result = run_cli("eval", run, "--corpus", path, "--json")
        assert result.exit_code == 0, result.output
        return result.stdout

    assert loss(tmp_path / "text.txt") == loss(mapped).replace(
        str(mapped), str(tmp_path / "text.txt")
    )
    prime = never_seen * 2 + next(c for c in text if c in vocab)
    sampled = run_cli("sample", run, "--prime", prime, "--length", 20, "--seed", 3)
    assert sampled.exit_code == 0, sampled.output
    assert sampled.stdout.startswith(prime)  # the prime as typed, read as U+FFFD
    as_read = run_cli("sample", run, "--prime", UNKNOWN * 2 + prime[-1], "--length", 20,
                      "--seed", 3)  # fmt: skip
    assert sampled.stdout[len(prime) :] == as_read.stdout[len(prime) :]
    assert run_cli("explain", run, "--text", prime).exit_code == 0

    # U+FFFD in a vocabulary without --max-vocab is a character of the text like any other:
    # there, characters outside it are refused as usual.
    saved = torch.load(run / "best.pt", weights_only=True)
    torch.save({**saved, "train_config": {**saved["train_config"], "max_vocab": 0}},
               tmp_path / "unmapped.pt")  # fmt: skip
    refused = run_cli("sample", tmp_path / "unmapped.pt", "--prime", prime, "--length", 5)
    assert refused.exit_code == 1 and "never saw" in refused.stderr


def test_a_vocabulary_over_the_cap_is_refused_in_one_line_before_a_model(tmp_path):
    path = tmp_path / "wide.txt"
    path.write_text("".join(chr(0x4E00 + i) for i in range(10_001)) * 2, encoding="utf-8")
    result = run_cli("train", *TINY_FLAGS, "--corpus", path, "--out", tmp_path / "run")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "10,001 distinct characters, over the cap of 10,000" in lines[0]
    assert "--max-vocab" in lines[0] and not (tmp_path / "run").exists()


def test_choose_ranks_by_count_then_code_point_and_grows_a_base():
    counts = {"a": 5, "b": 5, "c": 1, "d": 9}
    choice = choose(counts, max_vocab=2)
    assert choice.vocab.chars == ("a", "d", UNKNOWN)  # b ties a and loses on its code point
    assert (choice.unknown_chars, choice.unknown_count) == (2, 6)
    grown = choose({"z": 1, "a": 3, "y": 2}, base=Vocabulary(("d", "a")))
    assert grown.vocab.chars == ("d", "a", "y", "z") and grown.added == ("y", "z")
    with pytest.raises(CorpusError, match="over the cap of 3"):
        choose(counts, cap=3)
