"""`charrnn inspect-batches` and the CLI's handling of bad input."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli

LESSON = {
    "batch_size": 2,
    "seq_length": 3,
    "n_batches": 2,
    "steps": [
        {"step": 1, "inputs": [[1, 2, 3], [7, 8, 9]], "targets": [[2, 3, 4], [8, 9, 10]]},
        {"step": 2, "inputs": [[4, 5, 6], [10, 11, 12]], "targets": [[5, 6, 7], [11, 12, 1]]},
    ],
}


def test_lesson_example_as_json_exactly():
    result = run_cli("inspect-batches", "--demo", 12, "--batch-size", 2, "--seq-length", 3,
                     "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == LESSON


def test_corpus_json_gives_strings(corpus_file):
    result = run_cli("inspect-batches", "--corpus", corpus_file, "-b", 2, "-s", 5, "--json",
                     "--steps", 3)  # fmt: skip
    payload = json.loads(result.stdout)
    text = corpus_file.read_text()
    first = payload["steps"][0]
    assert first["inputs"][0] == text[:5] and first["targets"][0] == text[1:6]
    assert payload["steps"][1]["inputs"][0] == text[5:10]
    assert len(payload["steps"]) == 3


def test_tables_show_the_shift_and_the_layout():
    result = run_cli("inspect-batches", "--demo", 12)
    assert result.exit_code == 0
    assert "n_batches" in result.stdout and "step 2 of 2" in result.stdout
    assert "11 12  1" in result.stdout  # the cycle: 12 is followed by 1


def test_the_layout_shows_the_lessons_arithmetic_and_what_a_row_uses():
    result = run_cli("inspect-batches", "--demo", 14, "-b", 2, "-s", 3)
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert "2 steps per epoch: 14 // (batch_size 2 x seq_length 3) = 2" in said
    # The lesson's first picture: the text cut into batch_size contiguous rows.
    assert "is cut into 2 rows of 6: row 0: 1 2 3 4 5 6 row 1: 7 8 9 10 11 12" in said
    assert "12 characters are inputs once per epoch; 2 dropped" in said
    assert "row r of step k+1 continues row r of step k" in said
    short = run_cli("inspect-batches", "--demo", 10, "-b", 2, "-s", 3, "--steps", 3)
    said = " ".join(short.stdout.split())
    assert "1 step per epoch" in said and "rows of 3: row 0: 1 2 3 row 1: 4 5 6" in said
    assert short.stderr.strip() == "note: an epoch has only 1 step; showing them all"


def test_whitespace_is_visible(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b\nc d\ne f\ng h\n" * 4)
    result = run_cli("inspect-batches", "--corpus", corpus, "-b", 1, "-s", 4, "--steps", 1)
    assert "␣" in result.stdout and "↵" in result.stdout


def test_val_split(corpus_file):
    result = run_cli("inspect-batches", "--corpus", corpus_file, "--split", "val", "--json",
                     "-b", 1, "-s", 8)  # fmt: skip
    text = corpus_file.read_text()
    val = text[len(text) - int(len(text) * 0.1) :]
    assert json.loads(result.stdout)["steps"][0]["inputs"][0] == val[:8]


@pytest.mark.parametrize(
    "setup, args, message",
    [
        ("empty", (), "is empty"),
        ("missing", (), "neither a file nor a bundled corpus (bundled: shakespeare)"),
        ("directory", (), "has no text files to read"),
        ("latin1", (), "not valid UTF-8: byte 3 (0xe9)"),
        ("short", ("-b", "4", "-s", "10"), "too short for one step"),
        ("good", ("-b", "0"), "batch_size must be at least 1"),
        ("good", ("-s", "-2"), "seq_length must be at least 1"),
        ("good", ("--split", "test"), "split must be train or val"),
    ],
)
def test_bad_input_is_one_line_exit_1(tmp_path, setup, args, message):
    path = tmp_path / "corpus.txt"
    if setup == "empty":
        path.write_bytes(b"")
    elif setup == "latin1":
        path.write_bytes("café au lait".encode("latin-1"))
    elif setup == "short":
        path.write_text("tiny")
    elif setup == "good":
        path.write_text("hello world, " * 20)
    elif setup == "directory":
        path = tmp_path
    result = run_cli("inspect-batches", "--corpus", path, "--split", "train", *args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--corpus", "shakespeare"), "--corpus"),
        (("--include", "*.txt", "--max-vocab", "0"), "--include or --max-vocab"),
        (("--split", "train"), "--split"),  # even the default's value: it was typed
        (("--val-fraction", "0.2"), "--val-fraction"),
    ],
)
def test_demo_with_corpus_options_is_refused(args, named):
    # --demo replaces the corpus: a corpus option beside it used to be ignored without a word.
    result = run_cli("inspect-batches", "--demo", 12, *args)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip() == (
        f"error: --demo cannot be combined with {named}: --demo N shows the integers 1..N in "
        f"place of a corpus, so {named} would be ignored; drop --demo to see the corpus, or "
        f"drop {named}"
    )


def test_usage_error_is_exit_2():
    result = run_cli("inspect-batches", "--batch-size", "many")
    assert result.exit_code == 2


def test_version():
    result = run_cli("--version")
    assert result.exit_code == 0 and result.stdout.startswith("charrnn ")
