"""Crafted checkpoints: files built to make a reader allocate, hang or trip, refused in one line.

Each file is a real checkpoint with one part replaced by what a stranger could craft: tensors
that declare more than they hold (expanded, stride-0, overlapping, sparse, shared), containers
that nest deep, never end when printed (a "billion laughs" of shared lists) or hold themselves,
and values of the wrong type or size in the configs, the progress and the vocabulary. Every
reader (`sample`, `eval`, `explain`, `inspect`, `train --resume`, and `runs` over a folder)
refuses each in one line, exit 1, nothing written, and `runs` still lists the good runs.
"""

from __future__ import annotations

import resource
import time
import zipfile
from pathlib import Path

import pytest
import torch

from charrnn import machine
from charrnn.config import ModelConfig
from charrnn.model import CharModel
from tests.conftest import run_cli
from tests.test_hostile_checkpoints import assert_refused, folder_state

READERS = {
    "sample": lambda path: ("sample", path, "--length", 5),
    "eval": lambda path: ("eval", path, "--corpus", "shakespeare"),
    "explain": lambda path: ("explain", path, "--text", "To be"),
    "inspect": lambda path: ("inspect", path),
    "train --resume": lambda path: ("train", "--resume", path),
}


@pytest.fixture(scope="module")
def good(tiny_run) -> dict:
    return torch.load(tiny_run / "last.pt", weights_only=True)


def with_weight(good: dict, make) -> dict:
    """The checkpoint with its first recurrent weight replaced by make(shape)."""
    name = "core.weight_hh_l0"
    return {**good, "model": {**good["model"], name: make(tuple(good["model"][name].shape))}}


def laughs(levels: int = 20) -> list:
    """10**levels strings when printed, 10 lists in memory (each holds the next 10 times)."""
    shared: list = ["lol"] * 10
    for _ in range(levels):
        shared = [shared] * 10
    return shared


def holds_itself() -> list:
    loop: list = []
    loop.append(loop)
    return loop


def with_part(good: dict, part: str, value) -> dict:
    """`part` is "key" or "key.inner": replace (or add) that value."""
    key, _, inner = part.partition(".")
    if not inner:
        return {**good, key: value}
    return {**good, key: {**good[key], inner: value}}


def shared_bias(good: dict) -> dict:
    """Two biases that are one tensor: the file holds half the bytes the model reads."""
    model = dict(good["model"])
    model["core.bias_hh_l0"] = model["core.bias_ih_l0"]
    return {**good, "model": model}


# (name, the crafted checkpoint, what the one line says)
CRAFTED = [
    ("an expanded weight",
     lambda g: with_weight(g, lambda shape: torch.zeros(1).expand(shape)), "expanded"),
    ("a stride-0 weight",
     lambda g: with_weight(g, lambda shape: torch.zeros(shape[1]).as_strided(shape, (0, 1))),
     "stride-0"),
    ("overlapping rows",
     lambda g: with_weight(g, lambda s: torch.zeros(s[0] + s[1]).as_strided(s, (1, 1))),
     "but holds"),
    ("a sparse weight", lambda g: with_weight(g, lambda shape: torch.zeros(shape).to_sparse()),
     "layout torch.sparse_coo"),
    ("two weights on one tensor", shared_bias, "tensors sharing one buffer"),
    ("a billion laughs in the configs", lambda g: with_part(g, "train_config.corpus", laughs()),
     "more than 4,000,000 values"),
    ("a billion laughs in the vocabulary", lambda g: with_part(g, "vocab", laughs()),
     "more than 4,000,000 values"),
    ("a billion laughs anywhere", lambda g: with_part(g, "notes", laughs()), "values"),
    ("a list that holds itself", lambda g: with_part(g, "progress.anchor", holds_itself()),
     "holds itself"),
    ("a string batch_size", lambda g: with_part(g, "train_config.batch_size", "32"),
     "batch_size must be int, got str '32'"),
    ("a float hidden_size", lambda g: with_part(g, "model_config.hidden_size", 32.0),
     "hidden_size must be int"),
    ("an unknown training setting", lambda g: with_part(g, "train_config.batch", 3),
     "unknown key 'batch'"),
    # torch's unpickler reads integers of up to 255 bytes (LONG1): about 600 digits.
    ("a 600-digit seed", lambda g: with_part(g, "train_config.seed", 10**600),
     "an integer of 601 digits"),
    ("a list for the configs", lambda g: with_part(g, "train_config", [1, 2]), "'train_config'"),
    ("a list for the progress", lambda g: with_part(g, "progress", [1, 2]), "malformed progress"),
    ("a negative step", lambda g: with_part(g, "progress.step", -7), "progress step"),
    ("a 600-digit step", lambda g: with_part(g, "progress.step", 10**600), "progress step"),
    ("a float step", lambda g: with_part(g, "progress.step", 3.0), "progress step"),
    ("NaN seconds", lambda g: with_part(g, "progress.seconds", float("nan")), "seconds"),
    ("negative seconds", lambda g: with_part(g, "progress.seconds", -1.0), "seconds"),
    ("an infinite epoch", lambda g: with_part(g, "progress.epoch", float("inf")), "epoch"),
    ("a string epoch", lambda g: with_part(g, "progress.epoch", "3"), "epoch"),
    ("a loss of 1e308", lambda g: with_part(g, "progress.best_val_loss", 1e308), "best_val_loss"),
    ("a vocabulary of numbers", lambda g: with_part(g, "vocab", list(range(5))), "vocabulary"),
    ("a vocabulary of words", lambda g: with_part(g, "vocab", ["ab", "cd"]), "vocabulary"),
    ("a number for corpus_path", lambda g: with_part(g, "corpus_path", 3.5), "corpus_path"),
    ("a tensor for the version", lambda g: with_part(g, "charrnn_version", torch.zeros(3)),
     "charrnn_version"),
    ("a zero format version", lambda g: with_part(g, "format_version", 0), "format_version"),
]  # fmt: skip


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(("name", "make", "message"), CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_checkpoints_are_one_line_for_every_reader(tmp_path, good, name, make, message,
                                                           reader):  # fmt: skip
    torch.save(make(good), tmp_path / "last.pt")
    before = folder_state(tmp_path)
    started = time.monotonic()
    assert_refused(run_cli(*READERS[reader](tmp_path / "last.pt")), message)
    assert time.monotonic() - started < 20  # no hang (printing the laughs would never end)
    assert folder_state(tmp_path) == before


def test_runs_lists_the_good_runs_and_names_each_bad_one_in_one_line(tmp_path, good, tiny_run):
    folder = tmp_path / "runs"
    for index, (_, make, _) in enumerate(CRAFTED):
        (folder / f"bad-{index:02d}").mkdir(parents=True)
        torch.save(make(good), folder / f"bad-{index:02d}" / "last.pt")
    for name in ("good-a", "good-b"):
        (folder / name).mkdir()
        (folder / name / "last.pt").write_bytes((tiny_run / "last.pt").read_bytes())
    result = run_cli("runs", folder)
    assert result.exit_code == 0, result.output
    skipped = result.stderr.strip().splitlines()
    assert len(skipped) == len(CRAFTED) and "Traceback" not in result.output
    for index, (_, _, message) in enumerate(CRAFTED):
        assert f"skipped bad-{index:02d}: " in skipped[index] and message in skipped[index]
    assert "good-a" in result.stdout and "good-b" in result.stdout
    assert "bad-" not in result.stdout


def test_a_model_beyond_half_the_memory_is_refused_before_it_is_built(tmp_path, good,
                                                                     monkeypatch):  # fmt: skip
    torch.save(good, tmp_path / "last.pt")
    assert run_cli("inspect", tmp_path / "last.pt").exit_code == 0
    monkeypatch.setattr(machine, "total_bytes", lambda: 20_000)  # the tiny model needs ~40 kB
    for command in READERS.values():
        assert_refused(run_cli(*command(tmp_path / "last.pt")),
                       "more than half this machine's memory")  # fmt: skip


def test_a_small_file_declaring_gigabytes_allocates_nothing(tmp_path, good):
    """hidden 16384: 4.4 GB of weights, each an expanded view of one stored number."""
    config = {**good["model_config"], "hidden_size": 16384}
    with torch.device("meta"):
        shapes = CharModel(ModelConfig(**config), len(good["vocab"])).state_dict()
    model = {name: torch.zeros(1).expand(meta.shape) for name, meta in shapes.items()}
    assert sum(t.numel() for t in model.values()) * 4 > 4e9
    torch.save({**good, "model_config": config, "model": model}, tmp_path / "last.pt")
    assert (tmp_path / "last.pt").stat().st_size < 100_000
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    for command in READERS.values():
        assert_refused(run_cli(*command(tmp_path / "last.pt")))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200_000  # < 200 MB


def swapped_value(path: Path, placeholder: str, opcodes: bytes) -> None:
    """Rewrite the archive's pickle, putting raw `opcodes` where the string `placeholder` was."""
    path.with_suffix(".orig").write_bytes(path.read_bytes())
    with zipfile.ZipFile(path.with_suffix(".orig")) as source, zipfile.ZipFile(path, "w") as out:
        for record in source.infolist():
            data = source.read(record.filename)
            if record.filename.endswith("/data.pkl"):
                encoded = placeholder.encode()
                string = b"X" + len(encoded).to_bytes(4, "little") + encoded
                assert data.count(string) == 1
                data = data.replace(string, opcodes)
            out.writestr(record, data)
    path.with_suffix(".orig").unlink()


@pytest.mark.slow  # every reader walks 400,000 opcodes
def test_lists_nested_200000_deep_are_refused(tmp_path, good):
    # torch.save itself cannot write this (its pickler recurses); a stranger's pickle can.
    path = tmp_path / "last.pt"
    torch.save({**good, "notes": "PLACEHOLDER"}, path)
    depth = 200_000
    swapped_value(path, "PLACEHOLDER", b"]" * depth + b"a" * (depth - 1))
    for command in READERS.values():
        assert_refused(run_cli(*command(path)), "more than 32 deep")


def test_weights_that_share_one_buffer_without_overlap_are_read(tmp_path, good, tiny_run):
    """cuDNN keeps an LSTM's weights as views of one flat buffer: that holds what it declares."""
    flat = torch.cat([tensor.flatten() for tensor in good["model"].values()])
    model, offset = {}, 0
    for name, tensor in good["model"].items():
        model[name] = flat[offset : offset + tensor.numel()].view(tensor.shape)
        offset += tensor.numel()
    torch.save({**good, "model": model}, tmp_path / "last.pt")
    loaded = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    assert len({t.untyped_storage().data_ptr() for t in loaded.values()}) == 1  # still shared
    corpus = tiny_run.parent / "corpus.txt"
    for command in (("sample", "--length", 5), ("inspect",), ("explain", "--text", "To be"),
                    ("eval", "--corpus", corpus)):  # fmt: skip
        result = run_cli(command[0], tmp_path / "last.pt", *command[1:])
        assert result.exit_code == 0, result.output
