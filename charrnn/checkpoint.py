"""Checkpoints: plain dicts of tensors and Python values, saved atomically, loaded safely.

A checkpoint holds no pickled classes: ``torch.load(path, weights_only=True)`` reads it, so a
file from a stranger cannot run code (a crafted pickle is refused, not executed). Saving writes
a temporary file in the same folder, flushes and fsyncs it, then ``os.replace``s it over the
old one: a crash at any moment leaves either the old or the new checkpoint, never half of one.

Loading trusts nothing in the file: every record is checked against its CRC-32 (torch does
not, so a flipped bit would load silently), and what was unpickled goes through
charrnn.validate (bounded nesting and size, tensors that hold what they declare, the configs,
the progress, and weights that are exactly the finite tensors of the model the file describes)
before any reader sees it.
"""

from __future__ import annotations

import pickle
import re
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from charrnn import __version__, averaging, rundir, validate
from charrnn import config as config_module
from charrnn.cell_kinds import cell_kind
from charrnn.errors import CheckpointError, ConfigError
from charrnn.files import write_atomically
from charrnn.model import CharModel

FORMAT_VERSION, REQUIRED_KEYS = validate.FORMAT_VERSION, validate.REQUIRED_KEYS
describe_model = validate.describe_model  # the readers' name for it


def save(checkpoint: dict[str, Any], path: Path) -> None:
    """Write `checkpoint` to `path` atomically. Raises CheckpointError; the old file survives."""
    path = Path(path)
    try:
        write_atomically(path, lambda file: torch.save(checkpoint, file))
    except (OSError, RuntimeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        kept = "the previous one is intact" if path.exists() else "there was none before"
        raise CheckpointError(
            f"could not write checkpoint {str(path)!r}: {reason}; {kept}"
        ) from None


def load(path: str | Path, prefer: tuple[str, ...] = rundir.FOR_USING) -> dict[str, Any]:
    """Read and validate a checkpoint (a file, or a run's `prefer`red one) on the CPU.

    Never executes code from the file.
    """
    path = rundir.find_checkpoint(path, prefer)
    try:
        return _load_file(path)
    except CheckpointError as error:
        sibling = rundir.other_checkpoint(path)
        if sibling is None:
            raise
        # A damaged last.pt is not the end of the run: its best.pt (or the other way round)
        # was written at another moment and is often whole.
        raise CheckpointError(
            f"{error}; the run's other checkpoint {str(sibling)!r} may be intact: give that file"
        ) from None


def _load_file(path: Path) -> dict[str, Any]:
    """Read and validate one checkpoint file (see `load`)."""
    if path.suffix.lower() == ".onnx":  # `charrnn export`'s output, given back to charrnn
        raise CheckpointError(
            f"{str(path)!r} is an ONNX file, not a checkpoint: run it with "
            "examples/sample_onnx.py, or give the run it was exported from"
        )
    _verify_archive(path)
    try:
        # torch warns about the pickle protocol of files it then refuses; the user gets our
        # one-line reason instead of its warnings.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        blocked = re.search(r"GLOBAL (\S+)", str(error))
        reason = (
            f"loading it would call {blocked.group(1)}, which could run code"
            if blocked
            else "it holds something other than tensors and plain values"
        )
        raise CheckpointError(
            f"{str(path)!r} is not a charrnn checkpoint: {reason}; it was refused and nothing "
            "in it was run"
        ) from None
    except Exception as error:
        # torch's reader fails on garbage in many ways (EOFError, struct.error, even
        # AssertionError, "pop from empty list"): whichever it is, the file is not a checkpoint
        # it can read. Its first bytes often say what it is instead.
        raise CheckpointError(f"{str(path)!r} {_what_else(path, error)}") from None
    validate.checkpoint(checkpoint, repr(str(path)))
    return checkpoint


def _verify_archive(path: Path) -> None:
    """Check every record of a torch zip archive against its CRC-32 (torch reads without)."""
    try:
        if not zipfile.is_zipfile(path):
            with path.open("rb") as file:
                started = file.read(4) == b"PK\x03\x04"
            if started:  # the start of an archive without its directory, which comes last
                raise CheckpointError(
                    f"{str(path)!r} is truncated: it is the start of a checkpoint without its "
                    "end (a copy, download or disk that stopped part way?)"
                )
            return  # not a zip at all: torch.load says what is wrong with it
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
            # torch stores records uncompressed; refusing compressed ones keeps a
            # decompression bomb from being inflated by the check below.
            compressed = [r.filename for r in records if r.compress_type != zipfile.ZIP_STORED]
            # torch's zip reader (miniz) takes a record whose MS-DOS attributes carry the folder
            # bit for a folder and hands back uninitialised memory for its data, which passes
            # the checksum test below (Python's reader ignores the bit): one flipped bit in the
            # directory would otherwise load different garbage weights at each reading.
            folders = [r.filename for r in records
                       if r.external_attr & 0x10 or r.filename.endswith("/")]  # fmt: skip
            damaged = None if compressed else archive.testzip()
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, NotImplementedError,
            RuntimeError, struct.error, OverflowError, UnicodeDecodeError) as error:  # fmt: skip
        raise CheckpointError(
            f"{str(path)!r} is not a readable checkpoint (truncated or corrupt?): {_first(error)}"
        ) from None
    if folders:
        raise CheckpointError(
            f"{str(path)!r} is corrupt: its record {folders[0]!r} is marked as a folder, which "
            "torch would read as garbage (a damaged copy or disk?); use another copy of the run"
        )
    if compressed:
        raise CheckpointError(
            f"{str(path)!r} is not a charrnn checkpoint: it holds compressed records "
            f"({compressed[0]!r}), which torch never writes"
        )
    if damaged is not None:
        raise CheckpointError(
            f"{str(path)!r} is corrupt: its record {damaged!r} does not match its checksum "
            "(a damaged copy or disk?); use another copy of the run"
        )


def _what_else(path: Path, error: BaseException) -> str:
    """What a file torch could not read is, as far as its first bytes tell."""
    with path.open("rb") as file:
        start = file.read(1)
    if not start:
        return "is empty (a copy or save that never got under way?); use another copy of the run"
    if start != b"\x80":  # every torch file is a zip or a pickle of protocol 2+
        return (
            "is not a checkpoint: it is neither a torch archive nor a pickle (a text, or "
            "another kind of file?); give a run directory of charrnn train or its .pt file"
        )
    return f"is not a readable checkpoint (truncated or corrupt?): {_first(error)}"


def _first(error: BaseException) -> str:
    """The first line of an error message, short enough for one line of the CLI."""
    if isinstance(error, UnicodeDecodeError):
        # The codec's own text ("unexpected end of data") reads like a bug in charrnn.
        return "a name or text in it is not valid UTF-8"
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = text.splitlines()[0]
    # torch's reader explains itself at length ("This is an internal miniz error. If you are
    # seeing ..."): its first sentence says what failed.
    return (line.split(". ")[0] if len(line) > 120 else line)[:200]


def header() -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "charrnn_version": __version__}


def check_resumable(checkpoint: dict[str, Any], batch_size: int) -> None:
    """Check what `train --resume` reads beyond the weights, before any of it is used.

    torch's ``optimizer.load_state_dict`` trusts what it is given: a damaged or crafted
    optimizer state, hidden state or progress would otherwise fail in the middle of a training
    step with a traceback (or train on nonsense) instead of being refused here in one line.
    """
    missing = [
        key for key in ("optimizer", "progress", "hidden_state", "rng") if key not in checkpoint
    ]
    if missing:
        raise CheckpointError(
            f"the checkpoint cannot be resumed: it has no {', '.join(missing)} (weights only?)"
        )
    model = validate.described_model(checkpoint)
    shapes = [tuple(p.shape) for p in model.parameters()]
    problem = (
        _optimizer_problem(checkpoint["optimizer"], shapes)
        or validate.progress_problem(checkpoint["progress"])
        or _hidden_problem(checkpoint["hidden_state"], model.config, batch_size)
        or _rng_problem(checkpoint["rng"])
        or averaging.resume_problem(checkpoint, model.state_dict())
    )
    if problem:
        raise CheckpointError(f"the checkpoint cannot be resumed: malformed {problem}")


def _optimizer_problem(saved: Any, shapes: list[tuple[int, ...]]) -> str | None:
    """The learned moments of Adam(W), one entry per weight (its settings come from the run)."""
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict):
        return "optimizer state"
    for index, entry in saved["state"].items():
        if type(index) is not int or index not in range(len(shapes)) or not isinstance(entry, dict):
            return "optimizer state"
        if entry and entry.keys() != {"step", "exp_avg", "exp_avg_sq"}:  # what Adam(W) keeps
            return f"optimizer state of weight {index}"
        for key, value in entry.items():
            shape = () if key == "step" else shapes[index]
            if not validate.finite_tensor(value, shape):
                return f"optimizer state {key!r} of weight {index}"
    return None


def non_finite(checkpoint: dict[str, Any]) -> str | None:
    """What of a checkpoint about to be saved holds NaN or infinity (None: nothing).

    Saved, it could not be resumed (check_resumable refuses it) nor write text, and it would
    replace a good checkpoint: a diverged run stops instead of saving it.
    """
    for name, tensor in checkpoint["model"].items():
        if not validate.finite_tensor(tensor):
            return f"the weight {name!r}"
    for index, entry in checkpoint["optimizer"]["state"].items():
        if not all(validate.finite_tensor(value) for value in entry.values()):
            return f"the optimiser state of weight {index}"
    if not all(validate.finite_tensor(h) for h in checkpoint["hidden_state"] or ()):
        return "the hidden state"
    return None


def best_score(path: Path) -> tuple[float, str | None] | None:
    """The validation loss a best.pt was saved for, and the precision it was scored in.

    None when there is no such file, or it cannot be read (then it is worth nothing, and the
    next best replaces it).
    """
    if not Path(path).is_file():
        return None
    try:
        progress = load(path)["progress"]
    except (CheckpointError, KeyError):
        return None
    if validate.progress_problem(progress) or progress["best_val_loss"] is None:
        return None
    return progress["best_val_loss"], progress.get("best_precision")


def _rng_problem(rng: Any) -> str | None:
    if not isinstance(rng, dict) or not all(
        value is None or (isinstance(value, torch.Tensor) and value.dtype == torch.uint8)
        for value in (rng.get("torch"), rng.get("cuda"))
    ):
        return "random number generator state"
    return None if rng.get("torch") is not None else "random number generator state"


def _hidden_problem(hidden: Any, model_config: Any, batch_size: int) -> str | None:
    if hidden is None:  # saved at an epoch boundary, or before the first step
        return None
    parts = cell_kind(model_config.cell).state_count
    shape = (model_config.num_layers, batch_size, model_config.hidden_size)
    if not (isinstance(hidden, (list, tuple)) and len(hidden) == parts
            and all(validate.finite_tensor(h, shape) for h in hidden)):  # fmt: skip
        return f"hidden state (it must be {parts} finite tensor(s) of shape {list(shape)})"
    return None


def resume_configs(
    checkpoint: dict[str, Any], overrides: dict[str, Any]
) -> tuple[config_module.ModelConfig, config_module.TrainConfig]:
    """The run's saved configs with the run-control `overrides` applied; others are refused."""
    try:
        model_config = config_module.from_saved(
            config_module.ModelConfig, checkpoint["model_config"]
        )
        train_config = config_module.from_saved(
            config_module.TrainConfig, checkpoint["train_config"]
        )
    except (ConfigError, KeyError) as error:
        raise CheckpointError(f"checkpoint has invalid configs: {error}") from None
    return config_module.resume(model_config, train_config, overrides)


def restore_model(checkpoint: dict[str, Any]):
    """The model and vocabulary a checkpoint describes, with its weights loaded (on the CPU)."""
    model_config, vocab = validate.describe_model(checkpoint)
    model = CharModel(model_config, len(vocab))
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint weights do not fit its model: {_first(error)}") from None
    return model, vocab
