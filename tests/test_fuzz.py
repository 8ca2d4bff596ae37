"""Fuzzing what reads untrusted files: only the project's exceptions may come out.

- checkpoint.load over random bytes, and over real checkpoints with bytes flipped, cut or
  inserted; whatever loads must also restore and write text.
- Real checkpoints with one value replaced or deleted anywhere in their nested dict, through
  both readers: sampling (load, restore_model, generate) and resuming (load, resume_configs,
  a Trainer that runs three steps).
- Every command that reads a checkpoint (sample, inspect, eval, explain, and runs over its
  folder) over the same replaced values and mutated bytes: each uses the file or refuses it in
  one line, and they agree (one check decides for all).
- inspect over any metrics.jsonl: it draws, and shows only plausible numbers.
- config.load_toml (and building the configs) over random TOML-like text and random bytes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charrnn import checkpoint as ckpt
from charrnn import config
from charrnn.checkpoint import resume_configs
from charrnn.errors import CharRNNError, CheckpointError, ConfigError
from charrnn.sample import TextGenerator
from charrnn.train import Trainer
from tests.conftest import TINY_FLAGS, run_cli

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def run(tmp_path_factory, shakespeare_text) -> Path:
    """A small run, on a short text so that every fuzzed resume evaluates quickly."""
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "corpus.txt").write_text(shakespeare_text[:4000], encoding="utf-8")
    result = run_cli("train", *TINY_FLAGS, "--hidden-size", 16, "--corpus",
                     folder / "corpus.txt", "--out", folder / "run", "--max-steps", 6,
                     "--eval-every", 3, "--checkpoint-every", 3)  # fmt: skip
    assert result.exit_code == 0, result.output
    return folder / "run"


def load_and_use(path: Path) -> None:
    """Everything `charrnn sample` does with a file; CheckpointError is the allowed outcome."""
    try:
        checkpoint = ckpt.load(path)
    except CheckpointError:
        return
    model, vocab = ckpt.restore_model(checkpoint)
    TextGenerator(model, vocab, torch.device("cpu")).generate(length=3, seed=0)


# --------------------------------------------------------------------------- bytes

PREFIXES = [b"", b"PK\x03\x04", b"\x80\x02", b"\x80\x05\x95", b"\x8a\x0a\x6c\xfc\x9c\x46\xf9"]


@FUZZ
@given(st.sampled_from(PREFIXES), st.binary(max_size=3000))
def test_random_bytes_are_a_checkpoint_error(tmp_path, prefix, data):
    path = tmp_path / "random.pt"
    path.write_bytes(prefix + data)
    with pytest.raises(CheckpointError):
        ckpt.load(path)


@FUZZ
@given(st.data())
def test_mutated_checkpoint_bytes_load_whole_or_not_at_all(tmp_path, run, data):
    good = (run / "last.pt").read_bytes()
    damaged = bytearray(good)
    for _ in range(data.draw(st.integers(1, 8), label="flips")):
        position = data.draw(st.integers(0, len(damaged) - 1), label="position")
        damaged[position] = data.draw(st.integers(0, 255), label="byte")
    if data.draw(st.booleans(), label="cut"):
        damaged = damaged[: data.draw(st.integers(0, len(damaged)), label="cut at")]
    if data.draw(st.booleans(), label="insert"):
        at = data.draw(st.integers(0, len(damaged)), label="insert at")
        damaged[at:at] = data.draw(st.binary(min_size=1, max_size=64), label="inserted")
    path = tmp_path / "damaged.pt"
    path.write_bytes(bytes(damaged))
    load_and_use(path)


# --------------------------------------------------------------------------- structure

HOSTILE_VALUES = [
    None, True, 0, -1, 10**30, -(10**30), 2**63, -0.5, float("nan"), float("inf"), "x", "",
    [], {}, [1, 2], (0.9, 0.999), torch.zeros(3), torch.zeros(0), torch.tensor(float("nan")),
    torch.zeros(2, 3, dtype=torch.int64), torch.ones(1, 4, 16),
    torch.zeros(5056, dtype=torch.uint8),
]  # fmt: skip
DELETE = object()


def paths_in(value, prefix=()):
    """Every place in a nested checkpoint: dict keys and (short) list positions."""
    yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from paths_in(inner, (*prefix, key))
    elif isinstance(value, (list, tuple)) and len(value) < 10:
        for index, inner in enumerate(value):
            yield from paths_in(inner, (*prefix, index))


def replaced(checkpoint: dict, path: tuple, value) -> dict:
    result = copy.deepcopy(checkpoint)
    parent = result
    for key in path[:-1]:
        if isinstance(parent[key], tuple):  # tuples cannot change in place: make a list
            parent[key] = list(parent[key])
        parent = parent[key]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return result


@pytest.mark.slow  # 150 checkpoints, each sampled and resumed: ~4 s
@settings(FUZZ, max_examples=150)
@given(st.data())
def test_a_checkpoint_with_any_value_replaced_is_used_or_refused(run, data):
    good = torch.load(run / "last.pt", weights_only=True)
    places = [p for p in paths_in(good) if p]
    path = data.draw(st.sampled_from(places), label="where")
    value = data.draw(st.sampled_from([*HOSTILE_VALUES, DELETE]), label="value")
    damaged = replaced(good, path, value)
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "last.pt"
        torch.save(damaged, file)
        load_and_use(file)
        with contextlib.suppress(CharRNNError):  # anything else fails the test
            checkpoint = ckpt.load(file, prefer=("last.pt",))
            overrides = {"max_steps": 9, "threads": 1}  # three steps past the checkpoint
            Trainer(*resume_configs(checkpoint, overrides), Path(folder), resume=checkpoint).run()


# --------------------------------------------------------------------------- every reader

TEXT = "ROMEO.\nBut soft, what light\n"
READERS = {
    "sample": lambda path: ("sample", path, "--length", 3, "--seed", 0),
    "inspect": lambda path: ("inspect", path),
    "inspect --json": lambda path: ("inspect", path, "--json"),
    "eval": lambda path: ("eval", path, "--corpus", path.parent / "text.txt", "--json"),
    "explain": lambda path: ("explain", path, "--text", TEXT, "--skip-unknown", "--json"),
}


def one_line_or_output(result) -> bool:
    """Exit 0, or exit 1 with one charrnn error line (no traceback, no "unexpected" error)."""
    assert result.exit_code in (0, 1), result.output
    if result.exit_code == 1:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert "unexpected" not in lines[0] and result.stdout == ""
    return result.exit_code == 0


def check_readers(folder: Path, good_run: Path) -> None:
    """Every reader over folder/run/last.pt: used or refused in one line, and they agree."""
    file = folder / "run" / "last.pt"
    (folder / "run" / "text.txt").write_text(TEXT, encoding="utf-8")
    outcomes = {name: one_line_or_output(run_cli(*args(file))) for name, args in READERS.items()}
    assert len(set(outcomes.values())) == 1, outcomes  # one check: all accept or all refuse
    if outcomes["inspect --json"]:
        shown = json.loads(run_cli("inspect", file, "--json").stdout)
        assert shown["step"] >= 0 and shown["vocab_size"] == len(shown["vocab"])
        scored = json.loads(run_cli(*READERS["eval"](file)).stdout)
        assert math.isfinite(scored["loss"]) and scored["loss"] >= 0
        explained = json.loads(run_cli(*READERS["explain"](file)).stdout)
        assert len(explained["values"]) == len(TEXT)
    shutil.copytree(good_run, folder / "good")
    listed = run_cli("runs", folder)
    assert listed.exit_code == 0 and "Traceback" not in listed.output, listed.output
    skipped = listed.stderr.strip().splitlines()
    assert "good" in listed.stdout
    assert (skipped == []) == outcomes["inspect"], skipped
    assert all(line.startswith("skipped run: ") for line in skipped)


@pytest.mark.slow  # 60 checkpoints, each through six commands: ~25 s
@settings(FUZZ, max_examples=60)
@given(st.data())
def test_every_reader_uses_or_refuses_a_checkpoint_with_any_value_replaced(run, data):
    good = torch.load(run / "last.pt", weights_only=True)
    places = [p for p in paths_in(good) if p]
    path = data.draw(st.sampled_from(places), label="where")
    value = data.draw(st.sampled_from([*HOSTILE_VALUES, DELETE]), label="value")
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "run").mkdir()
        torch.save(replaced(good, path, value), Path(folder) / "run" / "last.pt")
        check_readers(Path(folder), run)


@settings(FUZZ, max_examples=25)
@given(st.data())
def test_every_reader_uses_or_refuses_mutated_checkpoint_bytes(run, data):
    damaged = bytearray((run / "last.pt").read_bytes())
    end = len(damaged) - 1
    # Most bytes are weights, which the checksum test catches; the pickle at the start and the
    # zip directory at the end are where damage has found its way past the readers' checks.
    anywhere = st.one_of(st.integers(0, end), st.integers(0, min(end, 5000)),
                         st.integers(max(0, end - 2500), end))  # fmt: skip
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        position = data.draw(anywhere, label="position")
        damaged[position] = data.draw(st.integers(0, 255), label="byte")
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "run").mkdir()
        (Path(folder) / "run" / "last.pt").write_bytes(bytes(damaged))
        check_readers(Path(folder), run)


METRICS_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
    st.sampled_from([10**300, -(10**400), [], {}, [1.5]]),
)  # fmt: skip
METRICS_LINES = st.one_of(
    st.dictionaries(st.sampled_from(["step", "train_loss", "val_loss", "epoch", "lr", "x"]),
                    METRICS_VALUES, max_size=5).map(lambda d: json.dumps(d, default=str)),
    st.text(max_size=40).map(lambda text: text.replace("\n", " ")),
    st.sampled_from(["NaN", '{"step": 1, "val_loss": Infinity}', "[" * 3000, "{}", "null",
                     '{"step": ' + "9" * 5000 + "}", '{"step": 2, "val_loss": 1e308}']),
)  # fmt: skip


@settings(FUZZ, max_examples=40)
@given(st.lists(METRICS_LINES, max_size=12))
def test_inspect_draws_whatever_metrics_jsonl_holds(run, lines):
    with tempfile.TemporaryDirectory() as folder:
        copy = shutil.copytree(run, Path(folder) / "run")
        text = "\n".join(lines).encode("utf-8", "surrogatepass")
        (copy / "metrics.jsonl").write_bytes(text)
        result = run_cli("inspect", copy)
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output
        assert all(line.startswith("note: ") for line in result.stderr.splitlines())
        entries = json.loads(run_cli("inspect", copy, "--json").stdout)["metrics"]
        assert all(type(e["step"]) is int and e["step"] >= 0 for e in entries)
        for entry in entries:
            for key in ("train_loss", "val_loss"):
                assert entry.get(key) is None or 0 <= entry[key] <= 1e6


# --------------------------------------------------------------------------- configs

KEYS = [*config.all_fields(), "hiden_size", "model", '"quoted key"', "a.b", "x-y"]
VALUES = st.one_of(
    st.integers().map(str),
    st.floats().map(repr),  # nan, inf, 1e+300: all TOML
    st.text(max_size=12).map(json.dumps),
    st.sampled_from(
        [
            "true",
            "false",
            "1e400",
            "-1e400",
            "9" * 400,
            "9" * 5000,
            "-inf",
            "+nan",
            "0x1F",
            "0o17",
            "0b101",
            "1_000",
            "1979-05-27",
            "07:32:00",
            "[1, 2]",
            "[]",
            '["lstm"]',
            "{a = 1}",
            "'lstm'",
            "'gru'",
            '"""multi\nline"""',
            "''",
            "2.5",
            "-0.0",
            "1e-9",
        ]
    ),  # fmt: skip
)
LINES = st.one_of(
    st.sampled_from(["[model]", "[train]", "[other]", "[model.sub]", "[[train]]", "[]", ""]),
    st.tuples(st.sampled_from(KEYS), VALUES).map(lambda kv: f"{kv[0]} = {kv[1]}"),
    st.text(max_size=20).map(lambda text: "# " + text.replace("\n", " ")),
    st.text(max_size=20),
)


def resolve_or_config_error(path: Path) -> None:
    with contextlib.suppress(ConfigError):  # anything else fails the test
        config.resolve(str(path), {})


@settings(FUZZ, max_examples=300)
@given(st.lists(LINES, max_size=12))
def test_random_toml_like_text_is_a_config_or_a_config_error(tmp_path, lines):
    path = tmp_path / "fuzz.toml"
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    resolve_or_config_error(path)


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_are_a_config_error(tmp_path, data):
    path = tmp_path / "fuzz.toml"
    path.write_bytes(data)
    resolve_or_config_error(path)
