"""A run's own files, damaged or odd: metrics.jsonl, config.toml, and specials where files go.

- metrics.jsonl: a line that is not strict JSON or holds absurd values is left out with a note;
  the chart still draws; memory stays bounded (long lines, many lines).
- config.toml reads back whatever characters the run's paths hold.
- Config files that nest deep or are huge are one line.
- A FIFO, socket or device where a file is expected is refused at once, never opened to block.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from charrnn import config, rundir, tomlfile
from charrnn.errors import ConfigError
from tests.conftest import TINY_FLAGS, run_cli
from tests.test_hostile_checkpoints import assert_refused

GOOD = [{"step": s, "epoch": s / 100, "time": s / 10, "train_loss": 4.0 - s / 100,
         "val_loss": 4.1 - s / 100, "val_bpc": 5.9, "val_scope": "all", "lr": 0.002,
         "chars_per_sec": 900.0} for s in (10, 20, 30, 40)]  # fmt: skip
BAD = {
    "NaN": '{"step": 25, "val_loss": NaN}',
    "Infinity": '{"step": 25, "train_loss": -Infinity}',
    "5000 digits": '{"step": ' + "9" * 5000 + "}",
    "4000 digits": '{"step": 3, "val_loss": ' + "9" * 4000 + "}",
    "1e308 loss": '{"step": 25, "train_loss": 1e308}',
    "-1e308 loss": '{"step": 25, "val_loss": -1e308}',
    "negative step": '{"step": -3, "val_loss": 2.0}',
    "float step": '{"step": 25.0, "val_loss": 2.0}',
    "boolean rate": '{"step": 25, "lr": true}',
    "a string loss": '{"step": 25, "val_loss": "2.0"}',
    "a list": "[1, 2, 3]",
    "deep": "[" * 100_000 + "]" * 100_000,
    "a megabyte line": '{"step": 25, "pad": "' + "x" * 1_000_000 + '"}',
    "half a line": '{"step": 50, "val_lo',
}


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def write_metrics(run: Path, lines: list[str]) -> None:
    (run / rundir.METRICS).write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_implausible_metrics_lines_are_left_out_with_a_note(run):
    lines = [json.dumps(GOOD[0]), *BAD.values(), *map(json.dumps, GOOD[1:])]
    write_metrics(run, lines)
    metrics = rundir.read_metrics(run)
    assert metrics.entries == GOOD
    noted = " ".join(metrics.notes)
    assert "not strict JSON" in noted and "absurd train_loss" in noted and "absurd lr" in noted
    assert "over 65,536 bytes long" in noted and "not an evaluation" in noted
    left_out = sum(int(note.split("left out ")[1].split(" ")[0]) for note in metrics.notes)
    assert left_out == len(BAD)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_tokens_are_not_json(run, token):
    write_metrics(run, [json.dumps(GOOD[0]), '{"step": 25, "val_loss": ' + token + "}"])
    metrics = rundir.read_metrics(run)
    assert metrics.entries == GOOD[:1]
    assert metrics.notes == [f"{str(run / rundir.METRICS)!r}: left out 1 line(s) that are not "
                             "strict JSON (cut short by a kill? NaN?) (line 2)"]  # fmt: skip


def test_the_chart_still_draws_beside_a_damaged_metrics_file(run):
    write_metrics(run, [json.dumps(GOOD[0]), *BAD.values(), *map(json.dumps, GOOD[1:])])
    result = run_cli("inspect", run)
    assert result.exit_code == 0, result.output
    assert "loss (nats/char) against step" in result.stdout
    assert "4.00" in result.stdout and "3.60" in result.stdout  # the good points' range
    notes = result.stderr.strip().splitlines()
    assert notes and all(line.startswith("note: ") for line in notes)
    assert "Traceback" not in result.output
    shown = json.loads(run_cli("inspect", run, "--json").stdout)
    assert shown["metrics"] == GOOD and shown["metrics_notes"]


@pytest.mark.parametrize("scope", ["all", "sample", "part"])  # what train.Trainer._scope writes
def test_every_scope_the_trainer_writes_is_read_back(run, scope):
    scoped = [{**entry, "val_scope": scope} for entry in GOOD]
    write_metrics(run, [json.dumps(entry) for entry in scoped])
    assert rundir.read_metrics(run) == rundir.Metrics(scoped, [])


def test_a_run_whose_metrics_are_all_unreadable_says_so_not_that_it_has_none(run):
    write_metrics(run, [BAD["NaN"], BAD["half a line"]])
    result = run_cli("inspect", run)
    assert result.exit_code == 0, result.output
    assert "none of its metrics.jsonl could be read" in result.stdout
    assert "no evaluation in a metrics.jsonl" not in result.stdout
    # Lines of a run that diverged (null losses) beside one that cannot be read: read, not lost.
    write_metrics(run, ['{"step": 5, "train_loss": null, "val_loss": null}', BAD["NaN"]])
    assert "its evaluations have no finite loss" in run_cli("inspect", run).stdout
    (run / rundir.METRICS).unlink()
    assert "it has no evaluation in a metrics.jsonl" in run_cli("inspect", run).stdout


def test_evaluations_a_resume_went_back_from_are_replaced_by_its_own(tmp_path, corpus_file):
    """Killed after an evaluation at step 50 but before saving it, a run resumes from its
    step-40 checkpoint and scores step 50 again: readers show the resumed run's line."""
    run = tmp_path / "run"
    flags = (*TINY_FLAGS, "--eval-every", 10, "--checkpoint-every", 10)
    assert run_cli("train", *flags, "--corpus", corpus_file, "--out", run,
                   "--max-steps", 40).exit_code == 0  # fmt: skip
    with open(run / rundir.METRICS, "a", encoding="utf-8") as file:  # the unsaved evaluation
        file.write(json.dumps({"step": 50, "val_loss": 9.5, "train_loss": 9.5}) + "\n")
    resumed = run_cli("train", "--resume", run, "--max-steps", 60)
    assert resumed.exit_code == 0, resumed.output
    metrics = rundir.read_metrics(run)
    steps = [entry["step"] for entry in metrics.entries]
    assert steps == sorted(set(steps)) and steps[-3:] == [40, 50, 60]
    assert 9.5 not in [entry["val_loss"] for entry in metrics.entries]
    assert "1 evaluation(s) of weights a resume went back from are left out" in metrics.notes[0]
    file_steps = [json.loads(line)["step"] for line in (run / rundir.METRICS).open()]
    assert file_steps.count(50) == 2  # the file itself keeps every line it was given


def test_a_long_metrics_file_is_thinned_not_held_whole(run):
    count = 3 * rundir.METRICS_ENTRIES
    write_metrics(run, [json.dumps({"step": s, "val_loss": 2.0}) for s in range(count)])
    metrics = rundir.read_metrics(run)
    steps = [entry["step"] for entry in metrics.entries]
    assert len(steps) <= rundir.METRICS_ENTRIES and steps[0] == 0
    assert steps == list(range(0, count, steps[1]))  # evenly thinned, in order
    assert f"holds {count:,} evaluations; every {steps[1]}th is shown" in metrics.notes[0]


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_a_special_metrics_file_is_a_note_and_the_run_still_shows(run, kind):
    (run / rundir.METRICS).unlink()
    if kind == "fifo":
        os.mkfifo(run / rundir.METRICS)
    else:
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(run / rundir.METRICS))
    result = run_cli("inspect", run)
    assert result.exit_code == 0, result.output
    assert "no loss curves" in result.stdout
    assert result.stderr.count("\n") == 1 and ("FIFO" in result.stderr or "socket" in result.stderr)


# --------------------------------------------------------------------------- config.toml


@given(st.text())
def test_any_string_is_written_as_toml_that_reads_back(text):
    parsed = tomllib.loads(f"key = {tomlfile.value(text)}\n")["key"]
    expected = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    assert parsed == expected


ODD_NAMES = {
    "quotes, backslashes, newline, tab, DEL": 'a "b" \\c\nd\te\x7f.txt',
    "not UTF-8 (a Latin-1 byte)": os.fsdecode(b"caf\xe9.txt"),
}


@pytest.mark.parametrize("name", ODD_NAMES.values(), ids=ODD_NAMES)
def test_a_runs_config_toml_reads_back_whatever_its_paths_hold(tmp_path, shakespeare_text, name):
    corpus = tmp_path / name
    corpus.write_text(shakespeare_text[:20_000], encoding="utf-8")
    out = tmp_path / "run"
    trained = run_cli("train", *TINY_FLAGS, "--corpus", corpus, "--out", out, "--max-steps", 2)
    assert trained.exit_code == 0, trained.output
    model, train = config.resolve(str(out / rundir.CONFIG), {})  # reads back
    assert train.corpus == (str(corpus).replace(os.fsdecode(b"\xe9"), "\ufffd"),)
    if "\ufffd" not in train.corpus[0]:  # and reruns
        again = run_cli("train", "--config", out / rundir.CONFIG, "--out", tmp_path / "again",
                        "--max-steps", 1)  # fmt: skip
        assert again.exit_code == 0, again.output


# --------------------------------------------------------------------------- TOML limits


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nseed = " + "[" * 40 + "]" * 40 + "\n", "nests more than 32 deep"),
        ("[train]\nseed = " + "[" * 5000 + "]" * 5000 + "\n", "nests more than 32 deep"),
        ("[train]\nseed = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n", "nests more than 32"),
        ("[train]\n" + ".".join(["a"] * 50) + " = 1\n", "nests more than 32 deep"),
        ("# " + "x" * (2 << 20) + "\n", "at most 1,048,576 are read"),
        ("[train]\ncorpus = '" + "x" * 900_000 + "'\n", "(900,000 chars) is neither a file"),
    ],
    ids=["40 deep", "5000 deep", "5000 inline tables", "50 dotted keys", "2 MB", "a long path"],
)
def test_deep_or_huge_configs_are_one_line(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    line = assert_refused(run_cli("train", "--config", path, "--out", tmp_path / "run"), message)
    assert len(line) < 2000
    assert not (tmp_path / "run").exists()


def test_a_long_missing_path_is_named_by_both_ends(tmp_path):
    """The start of a long path and its file name, which is what tells the user which file."""
    deep = tmp_path.joinpath(*["a-folder-with-a-long-name"] * 8, "my-corpus.txt")
    line = assert_refused(run_cli("train", "--corpus", deep), "is neither a file")
    assert f"'{str(deep)[:20]}" in line and "-long-name/my-corpus.txt' (" in line and "..." in line
    assert f"({len(str(deep)):,} chars)" in line and len(line) < 200


# --------------------------------------------------------------------------- specials


def special(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A path that is not a regular file, and the word its refusal uses."""
    if kind == "fifo":
        os.mkfifo(tmp_path / "special")
        return tmp_path / "special", "FIFO"
    if kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(tmp_path / "special"))
        return tmp_path / "special", "socket"
    return Path("/dev/zero"), "character device"


@pytest.mark.parametrize("kind", ["fifo", "socket", "device"])
def test_specials_where_a_file_is_expected_are_refused_at_once(tmp_path, tiny_run, kind):
    path, word = special(tmp_path, kind)
    commands = {
        "config": ("train", "--config", path, "--out", tmp_path / "run"),
        "corpus": ("train", *TINY_FLAGS, "--corpus", path, "--out", tmp_path / "run"),
        "eval corpus": ("eval", tiny_run, "--corpus", path),
        "explain file": ("explain", tiny_run, "--file", path),
        "checkpoint": ("sample", path),
        "inspect checkpoint": ("inspect", path),
    }
    for command in commands.values():
        assert_refused(run_cli(*command), word, "not a regular file")
    assert not (tmp_path / "run").exists()


def test_the_file_reader_refuses_a_fifo_it_opens(tmp_path):
    # Not only a check before opening: what is opened is checked (a swap in between).
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ConfigError, match="FIFO"):
        tomlfile.read(tmp_path / "fifo")
