"""Checkpoints from strangers: the code in them never runs; damaged ones are refused in one line.

Every file goes through the real commands that read checkpoints (`sample`, `train --resume`,
`inspect`, `eval`, `explain`, given the file or its run directory; `runs` over a folder) and
the Python API. A refusal is exit 1, one line on stderr, nothing on stdout, no traceback, and
nothing written next to the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import random
import shlex
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from charrnn import checkpoint as ckpt
from charrnn import load_model
from charrnn.errors import CheckpointError
from tests.conftest import run_cli


class RunsCode:
    """Unpickling this runs `touch MARKER`: what a malicious checkpoint would do instead."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def folder_state(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_refused(result, *fragments: str) -> str:
    """Exit 1 with exactly one line on stderr (the error), nothing on stdout, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def good(tiny_run) -> dict:
    return torch.load(tiny_run / "last.pt", weights_only=True)


@pytest.fixture(scope="module")
def good_bytes(tiny_run) -> bytes:
    return (tiny_run / "last.pt").read_bytes()


# --------------------------------------------------------------------------- code execution


def raw_pickle(protocol: int):
    def build(good: dict, marker: Path, path: Path) -> None:
        path.write_bytes(pickle.dumps({**good, "vocab": RunsCode(marker)}, protocol=protocol))

    return build


def torch_archive(good: dict, marker: Path, path: Path) -> None:
    """A genuine torch archive of a real checkpoint, one of whose values runs code."""
    torch.save({**good, "model_config": RunsCode(marker)}, path)


def legacy_torch_file(good: dict, marker: Path, path: Path) -> None:
    torch.save({**good, "vocab": RunsCode(marker)}, path, _use_new_zipfile_serialization=False)


def swapped_data_pkl(good: dict, marker: Path, path: Path) -> None:
    """A real checkpoint archive whose data.pkl was replaced by a bare payload."""
    torch.save(good, path.with_suffix(".orig"))
    with zipfile.ZipFile(path.with_suffix(".orig")) as source, zipfile.ZipFile(path, "w") as out:
        for record in source.infolist():
            data = source.read(record.filename)
            if record.filename.endswith("/data.pkl"):
                data = pickle.dumps({"format_version": 1, "model": RunsCode(marker)}, protocol=2)
            out.writestr(record, data)
    path.with_suffix(".orig").unlink()


def unsafe_load(path: Path) -> None:
    """What a careless loader does: the control experiment that shows the payload is live."""
    # The payload runs while unpickling; whatever torch makes of the result afterwards.
    with contextlib.suppress(Exception):
        torch.load(path, weights_only=False)


HOSTILE = {
    "raw pickle, protocol 0": raw_pickle(0),
    "raw pickle, protocol 2": raw_pickle(2),
    "raw pickle, protocol 5": raw_pickle(5),
    "torch archive": torch_archive,
    "legacy torch file": legacy_torch_file,
    "swapped data.pkl": swapped_data_pkl,
}
COMMANDS = {
    "sample FILE": lambda file: run_cli("sample", file, "--length", 5),
    "sample RUN_DIR": lambda file: run_cli("sample", file.parent, "--length", 5),
    "train --resume FILE": lambda file: run_cli("train", "--resume", file),
    "train --resume RUN_DIR": lambda file: run_cli("train", "--resume", file.parent),
    "inspect FILE": lambda file: run_cli("inspect", file),
    "inspect RUN_DIR": lambda file: run_cli("inspect", file.parent),
    "eval FILE": lambda file: run_cli("eval", file, "--corpus", "shakespeare"),
    "explain FILE": lambda file: run_cli("explain", file, "--text", "To be"),
    "export FILE": lambda file: run_cli("export", file, "--out", file.parent / "model.onnx"),
}


@pytest.mark.parametrize("kind", HOSTILE)
def test_the_payload_is_live(tmp_path, good, kind):
    # Without this, "the marker was not created" below could pass for a payload that is inert.
    marker, path = tmp_path / "PWNED", tmp_path / "last.pt"
    HOSTILE[kind](good, marker, path)
    unsafe_load(path)
    assert marker.exists()


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", HOSTILE)
def test_code_in_a_checkpoint_never_runs(tmp_path, good, kind, command):
    marker, run = tmp_path / "PWNED", tmp_path / "run"
    run.mkdir()
    for name in ("last.pt", "best.pt"):  # whichever one the command picks
        HOSTILE[kind](good, marker, run / name)
    before = folder_state(run)
    line = assert_refused(COMMANDS[command](run / "last.pt"), "nothing in it was run")
    assert not marker.exists(), line
    assert folder_state(run) == before
    with pytest.raises(CheckpointError, match="nothing in it was run"):
        load_model(str(run))
    assert not marker.exists()


@pytest.mark.parametrize("kind", HOSTILE)
def test_runs_lists_a_hostile_run_as_unreadable_without_running_it(tmp_path, good, tiny_run, kind):
    marker, folder = tmp_path / "PWNED", tmp_path / "runs"
    (folder / "evil").mkdir(parents=True)
    HOSTILE[kind](good, marker, folder / "evil" / "last.pt")
    (folder / "good").mkdir()
    (folder / "good" / "last.pt").write_bytes((tiny_run / "last.pt").read_bytes())
    result = run_cli("runs", folder)
    assert result.exit_code == 0, result.output
    assert "skipped evil:" in result.stderr and "nothing in it was run" in result.stderr
    assert "good" in result.stdout and "Traceback" not in result.output
    assert not marker.exists()


def test_the_refusal_names_what_the_file_would_have_run(tmp_path, good):
    torch_archive(good, tmp_path / "PWNED", tmp_path / "evil.pt")
    line = assert_refused(run_cli("sample", tmp_path / "evil.pt"))
    assert "system" in line and "could run code" in line


# --------------------------------------------------------------------------- damaged files


def flip_a_weight_bit(good_bytes: bytes) -> bytes:
    archive = zipfile.ZipFile(io.BytesIO(good_bytes))
    record = next(r for r in archive.infolist() if "/data/" in r.filename)
    # The data follows the local header: 30 bytes, then the name and the (padding) extra field.
    name_length, extra_length = struct.unpack_from("<HH", good_bytes, record.header_offset + 26)
    data_start = record.header_offset + 30 + name_length + extra_length
    damaged = bytearray(good_bytes)
    damaged[data_start + 3] ^= 0x10
    return bytes(damaged)


def a_record_name_not_utf8(good_bytes: bytes) -> bytes:
    """The first record's name ends in a lone UTF-8 lead byte (a fuzzer found this one)."""
    name_length = struct.unpack_from("<H", good_bytes, 26)[0]
    damaged = bytearray(good_bytes)
    damaged[30 + name_length - 1] = 0xC2
    return bytes(damaged)


def a_weight_marked_as_a_folder(good_bytes: bytes) -> bytes:
    """A weight's central-directory entry with the MS-DOS folder bit set in its external
    attributes (a fuzzer found this one): torch then reads the weight from uninitialised
    memory, and Python's checksum test passes."""
    damaged = bytearray(good_bytes)
    entry = good_bytes.find(b"PK\x01\x02")
    while entry != -1:
        name_length = struct.unpack_from("<H", good_bytes, entry + 28)[0]
        if b"/data/" in good_bytes[entry + 46 : entry + 46 + name_length]:
            damaged[entry + 38] |= 0x10  # external attributes start 38 bytes in
            return bytes(damaged)
        entry = good_bytes.find(b"PK\x01\x02", entry + 46)
    raise AssertionError("no weight record in the archive")


def compressed_copy(good_bytes: bytes) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(good_bytes))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
        for record in source.infolist():
            out.writestr(record.filename, source.read(record.filename))
    return buffer.getvalue()


def not_a_checkpoint_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        out.writestr("notes/readme.txt", "holiday photos")
    return buffer.getvalue()


def edited(good: dict, **changes) -> dict:
    """A copy of the checkpoint with some top-level or model_config values changed."""
    result = {**good, "model_config": {**good["model_config"]}, "model": {**good["model"]}}
    for key, value in changes.items():
        if key in good["model_config"]:
            result["model_config"][key] = value
        else:
            result[key] = value
    return result


def first_weight(good: dict) -> str:
    return next(iter(good["model"]))


# (name, how to make the file from the good checkpoint, what the one line must say)
DAMAGED = [
    ("empty file", lambda g, b: b"", "is empty"),
    ("a text", lambda g, b: b"hello, world", "neither a torch archive nor a pickle"),
    ("cut in half", lambda g, b: b[: len(b) // 2], "is truncated"),
    ("first 100 bytes", lambda g, b: b[:100], "is truncated"),
    ("random bytes", lambda g, b: random.Random(1).randbytes(4096), "is not a"),
    ("a zip that is not a checkpoint", lambda g, b: not_a_checkpoint_zip(),
     "neither a torch archive"),
    ("a record name that is not UTF-8", lambda g, b: a_record_name_not_utf8(b),
     "not valid UTF-8"),
    ("a weight marked as a folder", lambda g, b: a_weight_marked_as_a_folder(b),
     "marked as a folder"),
    ("compressed records", lambda g, b: compressed_copy(b), "compressed records"),
    ("a flipped bit in a weight", lambda g, b: flip_a_weight_bit(b), "checksum"),
    ("a tensor, not a dict", lambda g, b: torch.ones(3), "not a dict"),
    ("missing keys", lambda g, b: {"format_version": 1, "model": {}}, "missing model_config"),
    ("newer format version", lambda g, b: edited(g, format_version=2), "newer than this"),
    ("malformed version", lambda g, b: edited(g, format_version="1"), "malformed format_version"),
    ("wrong weight shape",
     lambda g, b: edited(g, model={**g["model"], first_weight(g): torch.zeros(3, 3)}),
     "has shape [3, 3]"),
    ("a weight missing",
     lambda g, b: edited(g, model={k: v for k, v in g["model"].items() if k != first_weight(g)}),
     "do not fit"),
    ("an extra weight",
     lambda g, b: edited(g, model={**g["model"], "extra.weight": torch.zeros(2)}),
     "'extra.weight', which it has no place for"),
    ("an empty vocabulary", lambda g, b: edited(g, vocab=[]), "at least one character"),
    ("NaN weights",
     lambda g, b: edited(g, model={**g["model"], first_weight(g): g["model"][first_weight(g)]
                                   * float("nan")}),
     "NaN"),
    ("integer weights",
     lambda g, b: edited(g, model={**g["model"], first_weight(g): g["model"][first_weight(g)]
                                   .long()}),
     "not a finite float tensor"),
    ("a petabyte model in a small file", lambda g, b: edited(g, hidden_size=10**7),
     "more than half this machine's memory"),
    ("10**30 layers", lambda g, b: edited(g, num_layers=10**30), "layers but holds only"),
    ("an unknown cell", lambda g, b: edited(g, cell="transformer"), "cell must be one of"),
    # Older versions saved `bidirectional` (always false); a true one is still refused.
    ("a bidirectional model",
     lambda g, b: {**g, "model_config": {**g["model_config"], "bidirectional": True}},
     "bidirectional must be false"),
    ("a repeated character in the vocabulary",
     lambda g, b: edited(g, vocab=g["vocab"][:-1] + g["vocab"][:1]), "vocabulary"),
]  # fmt: skip


def write_damaged(path: Path, make, good: dict, good_bytes: bytes) -> None:
    made = make(good, good_bytes)
    if isinstance(made, bytes):
        path.write_bytes(made)
    else:
        torch.save(made, path)


READERS = {
    "sample": lambda path: ("sample", path, "--length", 5),
    "train --resume": lambda path: ("train", "--resume", path),
    "inspect": lambda path: ("inspect", path),
    "export": lambda path: ("export", path, "--out", path.parent / "model.onnx"),
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(("name", "make", "message"), DAMAGED, ids=[d[0] for d in DAMAGED])
def test_damaged_checkpoints_are_one_clear_line(tmp_path, good, good_bytes, name, make, message,
                                                reader):  # fmt: skip
    path = tmp_path / "last.pt"
    write_damaged(path, make, good, good_bytes)
    before = folder_state(tmp_path)
    assert_refused(run_cli(*READERS[reader](path)), message)
    assert folder_state(tmp_path) == before


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("missing", "does not exist"),
        ("empty dir", "holds no checkpoint"),
        ("fifo", "not a regular file"),
    ],  # fmt: skip
)
def test_paths_that_are_not_checkpoints(tmp_path, where, message):
    path = tmp_path / where
    if where == "empty dir":
        path.mkdir()
    elif where == "fifo":
        os.mkfifo(path)  # opening it would block forever: it must be refused unopened
    for command in READERS.values():
        assert_refused(run_cli(*command(path)), message)


def test_a_damaged_checkpoint_points_to_the_runs_other_one(tmp_path, tiny_run):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("best.pt", "last.pt"):
        (run / name).write_bytes((tiny_run / name).read_bytes())
    whole = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(whole[: len(whole) // 2])  # a copy that stopped part way
    line = assert_refused(run_cli("train", "--resume", run), "is truncated")
    assert f"other checkpoint {str(run / 'best.pt')!r} may be intact" in line
    # ... and it is: the suggested file resumes (the run's own last.pt is then rewritten).
    step = ckpt.load(run / "best.pt")["progress"]["step"]
    resumed = run_cli("train", "--resume", run / "best.pt", "--max-steps", step + 2)
    assert resumed.exit_code == 0, resumed.output
    assert ckpt.load(run / "last.pt")["progress"]["step"] == step + 2

    (run / "last.pt").unlink()  # only best.pt left: resume names it instead of giving up
    assert_refused(run_cli("train", "--resume", run),
                   "holds no checkpoint (last.pt)", f"give {str(run / 'best.pt')!r}")  # fmt: skip

    lone = tmp_path / "model.pt"  # a file outside a run has no other checkpoint to name
    lone.write_bytes(whole[:100])
    assert "other checkpoint" not in assert_refused(run_cli("sample", lone), "is truncated")


def test_an_onnx_export_given_as_a_checkpoint_says_what_it_is(tmp_path):
    onnx = tmp_path / "exported.onnx"  # (export's reader writes model.onnx beside it)
    onnx.write_bytes(b"\x08\x08\x12\x07pytorch")  # how an exported file starts
    for command in READERS.values():
        assert_refused(run_cli(*command(onnx)), "is an ONNX file, not a checkpoint",
                       "examples/sample_onnx.py")  # fmt: skip


def test_weights_only_checkpoint_samples_but_does_not_resume(tmp_path, good):
    weights_only = {k: good[k] for k in ckpt.REQUIRED_KEYS}
    torch.save(weights_only, tmp_path / "last.pt")
    sampled = run_cli("sample", tmp_path / "last.pt", "--length", 20, "--seed", 1)
    assert sampled.exit_code == 0 and len(sampled.stdout) > 20
    assert_refused(run_cli("train", "--resume", tmp_path), "cannot be resumed", "optimizer")


@pytest.mark.parametrize(
    ("part", "value", "message"),
    [
        ("hidden_state", [torch.zeros(1, 3, 5), torch.zeros(1, 3, 5)], "hidden state"),
        ("hidden_state", [torch.zeros(1)], "hidden state"),
        ("optimizer", {"state": {0: {"step": torch.tensor(1.0)}}}, "optimizer state"),
        ("optimizer", {"state": {99: {}}}, "optimizer state"),
        ("rng", torch.zeros(3), "random number generator"),
    ],
)
def test_what_only_a_resume_reads_is_checked_before_use(tmp_path, good, part, value, message):
    # (A malformed progress or corpus_path is refused by every reader: test_crafted_files.)
    damaged = {**good, part: value}
    torch.save(damaged, tmp_path / "last.pt")
    before = folder_state(tmp_path)
    assert_refused(run_cli("train", "--resume", tmp_path), "cannot be resumed", message)
    assert folder_state(tmp_path) == before
