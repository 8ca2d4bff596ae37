"""Checkpoints: plain dicts of tensors and Python values, saved atomically, loaded safely.

A checkpoint holds no pickled classes: ``torch.load(path, weights_only=True)`` reads it, so a
file from a stranger cannot run code (a crafted pickle is refused, not executed). Saving writes
a temporary file in the same folder, flushes and fsyncs it, then ``os.replace``s it over the
old one: a crash at any moment leaves either the old or the new checkpoint, never half of one.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from charrnn import __version__
from charrnn.errors import CheckpointError

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model_config", "train_config", "vocab", "model")


def save(checkpoint: dict[str, Any], path: Path) -> None:
    """Write `checkpoint` to `path` atomically. Raises CheckpointError; the old file survives."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _fsync_directory(path.parent)
    except (OSError, RuntimeError) as error:
        temporary.unlink(missing_ok=True)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise CheckpointError(
            f"could not write checkpoint {str(path)!r}: {reason}; the previous one is intact"
        ) from None


def _fsync_directory(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform, harmless to skip there.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def resolve(path: str | Path, prefer: tuple[str, ...] = ("best.pt", "last.pt")) -> Path:
    """A .pt file, or a run directory (then the first of `prefer` that exists)."""
    path = Path(path).expanduser()
    if path.is_dir():
        for name in prefer:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(
            f"{str(path)!r} holds no checkpoint ({' or '.join(prefer)}); "
            "give a run directory of charrnn train or a .pt file"
        )
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    return path


def latest_run(root: Path = Path("checkpoints")) -> Path:
    """The most recently written run directory under `root` (what `charrnn sample` defaults to)."""
    runs = [p for p in root.glob("*/last.pt")] + [p for p in root.glob("*/best.pt")]
    if not runs:
        raise CheckpointError(
            f"no runs in {str(root)!r}; train one with `charrnn train` or name a checkpoint"
        )
    return max(runs, key=lambda p: p.stat().st_mtime).parent


def load(path: str | Path, prefer: tuple[str, ...] = ("best.pt", "last.pt")) -> dict[str, Any]:
    """Read and validate a checkpoint on the CPU. Never executes code from the file."""
    path = resolve(path, prefer)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{str(path)!r} is not a charrnn checkpoint: it holds objects other than tensors "
            "and plain values, which could run code, so it was not loaded"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError,
            IndexError, TypeError, AttributeError, UnicodeDecodeError) as error:  # fmt: skip
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{str(path)!r} is not a readable checkpoint (truncated or corrupt?): {first[:200]}"
        ) from None
    check(checkpoint, path)
    return checkpoint


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


def header() -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "charrnn_version": __version__}


def restore_model(checkpoint: dict[str, Any]):
    """The model and vocabulary a checkpoint describes, with its weights loaded (on the CPU)."""
    from charrnn import config as config_module
    from charrnn.corpus import Vocabulary
    from charrnn.errors import CharRNNError
    from charrnn.model import CharModel

    try:
        model_config = config_module.build(config_module.ModelConfig, checkpoint["model_config"])
        vocab = Vocabulary.from_list(checkpoint["vocab"])
    except CharRNNError as error:
        raise CheckpointError(f"checkpoint has an invalid model description: {error}") from None
    model = CharModel(model_config, len(vocab))
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError, TypeError) as error:
        first = str(error).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint weights do not fit its model: {first[:200]}") from None
    return model, vocab
