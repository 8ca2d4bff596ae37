"""Checkpoints: plain dicts of tensors and Python values, saved atomically, loaded safely.

A checkpoint holds no pickled classes: ``torch.load(path, weights_only=True)`` reads it, so a
file from a stranger cannot run code (a crafted pickle is refused, not executed). Saving writes
a temporary file in the same folder, flushes and fsyncs it, then ``os.replace``s it over the
old one: a crash at any moment leaves either the old or the new checkpoint, never half of one.

Loading trusts nothing in the file: every record is checked against its CRC-32 (torch does
not, so a flipped bit would load silently), and the weights must be exactly the finite tensors
of the model the file describes before that model is built (so a few bytes cannot ask for a
model of terabytes).
"""

from __future__ import annotations

import math
import pickle
import re
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from charrnn import __version__, averaging, rundir
from charrnn import config as config_module
from charrnn.cell_kinds import cell_kind
from charrnn.corpus import Vocabulary
from charrnn.errors import CharRNNError, CheckpointError, ConfigError
from charrnn.files import write_atomically
from charrnn.model import CharModel

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model_config", "train_config", "vocab", "model")


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
        # AssertionError): whichever it is, the file is not a checkpoint it can read.
        raise CheckpointError(
            f"{str(path)!r} is not a readable checkpoint (truncated or corrupt?): {_first(error)}"
        ) from None
    check(checkpoint, path)
    return checkpoint


def _verify_archive(path: Path) -> None:
    """Check every record of a torch zip archive against its CRC-32 (torch reads without)."""
    try:
        if not zipfile.is_zipfile(path):
            return  # not a zip at all: torch.load says what is wrong with it
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
            # torch stores records uncompressed; refusing compressed ones keeps a
            # decompression bomb from being inflated by the check below.
            compressed = [r.filename for r in records if r.compress_type != zipfile.ZIP_STORED]
            damaged = None if compressed else archive.testzip()
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, NotImplementedError,
            RuntimeError, struct.error, OverflowError, UnicodeDecodeError) as error:  # fmt: skip
        raise CheckpointError(
            f"{str(path)!r} is not a readable checkpoint (truncated or corrupt?): {_first(error)}"
        ) from None
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


def _first(error: BaseException) -> str:
    """The first line of an error message, short enough for one line of the CLI."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def check(checkpoint: Any, path: Path) -> None:
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{str(path)!r} is not a charrnn checkpoint (not a dict)")
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"{str(path)!r} is not a charrnn checkpoint: missing {', '.join(missing)}"
        )
    version = checkpoint["format_version"]
    if not isinstance(version, int):
        raise CheckpointError(f"{str(path)!r} has a malformed format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has format version {version}, newer than this charrnn reads "
            f"({FORMAT_VERSION}); upgrade charrnn (it was written by "
            f"{checkpoint.get('charrnn_version', 'a newer version')})"
        )
    for key in ("model_config", "train_config", "model"):
        if not isinstance(checkpoint[key], dict):
            raise CheckpointError(f"{str(path)!r} has a malformed {key!r}")
    _check_weights(checkpoint, path)


def _check_weights(checkpoint: dict[str, Any], path: Path) -> None:
    """The weights must be exactly the finite tensors of the model the checkpoint describes.

    The model is built on the meta device (shapes, no memory), so a file that describes a huge
    model but holds small weights is refused before anything is allocated.
    """
    expected = _described_model(checkpoint).state_dict()
    weights = checkpoint["model"]
    missing = [name for name in expected if name not in weights]
    extra = [name for name in weights if name not in expected]
    if missing or extra:
        problem = f"missing {missing[0]!r}" if missing else f"unexpected {str(extra[0])!r}"
        raise CheckpointError(
            f"{str(path)!r}: the weights do not fit the model it describes ({problem})"
        )
    for name, tensor in weights.items():
        needed = tuple(expected[name].shape)
        if isinstance(tensor, torch.Tensor) and tuple(tensor.shape) != needed:
            raise CheckpointError(
                f"{str(path)!r}: weight {name!r} has shape {list(tensor.shape)}, the model it "
                f"describes needs {list(needed)}"
            )
        if not _finite_tensor(tensor, needed):
            raise CheckpointError(
                f"{str(path)!r}: weight {name!r} is not a finite float tensor (NaN, infinity or "
                "not numbers); it cannot write text"
            )


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
    model = _described_model(checkpoint)
    shapes = [tuple(p.shape) for p in model.parameters()]
    problem = (
        _optimizer_problem(checkpoint["optimizer"], shapes)
        or _progress_problem(checkpoint["progress"])
        or _hidden_problem(checkpoint["hidden_state"], model.config, batch_size)
        or _rng_problem(checkpoint["rng"])
        or averaging.resume_problem(checkpoint, model.state_dict())
        or (None if isinstance(checkpoint.get("corpus_path", ""), str) else "corpus_path")
        or _fingerprint_problem(checkpoint.get("corpus_fingerprint"))
    )
    if problem:
        raise CheckpointError(f"the checkpoint cannot be resumed: malformed {problem}")


def _described_model(checkpoint: dict[str, Any]) -> CharModel:
    """The model a checkpoint describes, on the meta device: its shapes, and no memory."""
    model_config, vocab = describe_model(checkpoint)
    # Every layer has weights, so a file cannot ask for more layers than it holds weights
    # (building 10**30 layers would never finish, even without memory).
    if model_config.num_layers > len(checkpoint["model"]):
        raise CheckpointError(
            f"the checkpoint describes {model_config.num_layers} layers but holds only "
            f"{len(checkpoint['model'])} weights"
        )
    try:
        with torch.device("meta"):
            return CharModel(model_config, len(vocab))
    except (RuntimeError, OverflowError, ValueError, TypeError) as error:  # beyond any tensor
        raise CheckpointError(
            f"the checkpoint describes an impossible model: {_first(error)}"
        ) from None


def _finite_float(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def _finite_tensor(value: Any, shape: tuple[int, ...] | None = None) -> bool:
    """A floating-point tensor without NaN or infinity (of `shape`, if given)."""
    return (
        isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and (shape is None or tuple(value.shape) == shape)
        and bool(torch.isfinite(value).all())
    )


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
            if not _finite_tensor(value, shape):
                return f"optimizer state {key!r} of weight {index}"
    return None


def _progress_problem(saved: Any) -> str | None:
    if not isinstance(saved, dict):
        return "progress"
    step, anchor = saved.get("step"), saved.get("anchor")
    if type(step) is not int or step < 0:
        return "progress step"
    if not (_finite_float(saved.get("seconds")) and saved["seconds"] >= 0):
        return "progress seconds"
    for key in ("best_val_loss", "last_val_loss", "budget_seconds"):
        if key not in saved or not (saved[key] is None or _finite_float(saved[key])):
            return f"progress {key}"
    if saved.get("best_precision") not in (None, "fp32", "bf16", "fp16"):
        return "progress best_precision"
    budget_steps = saved.get("budget_steps", "missing")
    if not (budget_steps is None or (type(budget_steps) is int and budget_steps >= 0)):
        return "progress budget_steps"
    if not (isinstance(anchor, (list, tuple)) and len(anchor) == 2
            and all(map(_finite_float, anchor))):  # fmt: skip
        return "progress anchor"
    return None


def _fingerprint_problem(value: Any) -> str | None:
    """None (a checkpoint of an older version) or 64 hexadecimal digits (a sha256)."""
    if value is None or (isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value)):
        return None
    return "corpus_fingerprint"


def non_finite(checkpoint: dict[str, Any]) -> str | None:
    """What of a checkpoint about to be saved holds NaN or infinity (None: nothing).

    Saved, it could not be resumed (check_resumable refuses it) nor write text, and it would
    replace a good checkpoint: a diverged run stops instead of saving it.
    """
    for name, tensor in checkpoint["model"].items():
        if not _finite_tensor(tensor):
            return f"the weight {name!r}"
    for index, entry in checkpoint["optimizer"]["state"].items():
        if not all(_finite_tensor(value) for value in entry.values()):
            return f"the optimiser state of weight {index}"
    if not all(_finite_tensor(h) for h in checkpoint["hidden_state"] or ()):
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
    if _progress_problem(progress) or progress["best_val_loss"] is None:
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
            and all(_finite_tensor(h, shape) for h in hidden)):  # fmt: skip
        return f"hidden state (it must be {parts} finite tensor(s) of shape {list(shape)})"
    return None


def describe_model(checkpoint: dict[str, Any]) -> tuple[config_module.ModelConfig, Vocabulary]:
    """The model config and vocabulary a checkpoint names, validated."""
    try:
        model_config = config_module.from_saved(
            config_module.ModelConfig, checkpoint["model_config"]
        )
        vocab = Vocabulary.from_list(checkpoint["vocab"])
    except CharRNNError as error:
        raise CheckpointError(f"checkpoint has an invalid model description: {error}") from None
    return model_config, vocab


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
    model_config, vocab = describe_model(checkpoint)
    model = CharModel(model_config, len(vocab))
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint weights do not fit its model: {_first(error)}") from None
    return model, vocab
