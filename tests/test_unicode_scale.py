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
