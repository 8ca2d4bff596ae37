"""What a checkpoint may hold, checked in one place before any reader uses any of it.

``checkpoint.load`` hands every file it unpickled to ``checkpoint`` below, so ``sample``,
``eval``, ``explain``, ``inspect``, ``runs``, ``export`` and ``train --resume`` all read values
that passed the same checks, in this order:

1. The shape of the whole object: containers nested at most ``MAX_DEPTH`` deep, at most
   ``MAX_ITEMS`` values in all, counting a list that is referenced from many places once per
   place (a "billion laughs" of shared lists is tiny in the file and endless to print), and no
   container inside itself.
2. Every tensor holds the bytes it declares: a strided layout (no sparse or nested tensors),
   no stride-0 (expanded) dimension, a storage at least as large as its elements, and all
   tensors together no larger than their distinct storages (no two weights on one buffer).
   Nothing has been computed on a tensor before this, so nothing was materialised.
3. The header, the configs (``model_config`` and ``train_config``: keys, types, bounds, as
   declared in charrnn.config), the vocabulary, the progress and the small facts.
4. The model the file describes, built on the meta device (no memory), is at most half the
   machine's memory; the weights are exactly its tensors, finite.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from itertools import chain
from typing import Any

import torch

from charrnn import config as config_module
from charrnn import machine, rundir
from charrnn.corpus import Vocabulary
from charrnn.errors import CharRNNError, CheckpointError, shown
from charrnn.model import CharModel

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model_config", "train_config", "vocab", "model")
MAX_DEPTH = 32  # a checkpoint nests 5 deep (optimizer -> state -> 0 -> exp_avg)
# Values in all, shared containers counted once per place: a vocabulary of every Unicode
# character (1.1 million) fits with room to spare.
MAX_ITEMS = 4_000_000
MAX_STEP, MAX_SECONDS, MAX_LOSS = rundir.MAX_STEP, rundir.MAX_SECONDS, rundir.MAX_LOSS


def checkpoint(saved: Any, where: str) -> None:
    """Refuse (CheckpointError) anything a reader of the checkpoint could stumble on."""
    check_structure(saved, where)
    if not isinstance(saved, dict):
        raise CheckpointError(f"{where} is not a charrnn checkpoint (not a dict)")
    missing = [key for key in REQUIRED_KEYS if key not in saved]
    if missing:
        raise CheckpointError(f"{where} is not a charrnn checkpoint: missing {', '.join(missing)}")
    version = saved["format_version"]
    if type(version) is not int or version < 1:
        raise CheckpointError(f"{where} has a malformed format_version {shown(version)}")
    if version > FORMAT_VERSION:
        written_by = saved.get("charrnn_version")
        raise CheckpointError(
            f"{where} has format version {version}, newer than this charrnn reads "
            f"({FORMAT_VERSION}); upgrade charrnn (it was written by "
            f"{shown(written_by) if written_by is not None else 'a newer version'})"
        )
    for key in ("model_config", "train_config", "model"):
        if not isinstance(saved[key], dict):
            raise CheckpointError(f"{where} has a malformed {key!r}")
    train_config(saved)
    problem = _facts_problem(saved) or ("progress" in saved and progress_problem(saved["progress"]))
    if problem:
        raise CheckpointError(f"{where} has a malformed {problem}")
    _check_weights(saved, where)


# --------------------------------------------------------------------------- structure


def check_structure(value: Any, where: str) -> None:
    """Bounded nesting and size, no cycles, and tensors that hold what they declare."""
    walk = _Walk(where)
    walk.size(value, 0)
    held = sum(walk.storages.values())
    if walk.declared > held:
        raise CheckpointError(
            f"{where} is not a charrnn checkpoint: its tensors declare {walk.declared:,} bytes "
            f"but hold {held:,} (tensors sharing one buffer); it was refused before any of it "
            "was used"
        )


class _Walk:
    """One pass over an unpickled object: sizes of containers (memoised by identity, so a
    shared list is walked once however many places hold it) and the tensors' storages."""

    def __init__(self, where: str):
        self.where = where
        self.sizes: dict[int, int] = {}  # id -> values inside, shared ones counted per place
        self.open: set[int] = set()  # the containers on the current path (a cycle's test)
        self.storages: dict[int, int] = {}  # distinct storages: data pointer -> bytes
        self.declared = 0  # bytes the tensors declare, each counted where it appears

    def size(self, value: Any, depth: int) -> int:
        if isinstance(value, torch.Tensor):
            self.tensor(value)
            return 1
        if not isinstance(value, (dict, list, tuple, set, frozenset)):
            return 1
        key = id(value)
        if key in self.sizes:
            return self.sizes[key]
        if key in self.open:
            self.refuse("a container holds itself")
        if depth >= MAX_DEPTH:  # checked before going deeper: the recursion stays shallow
            self.refuse(f"it nests containers more than {MAX_DEPTH} deep")
        self.open.add(key)
        total = 1
        for item in chain.from_iterable(value.items()) if isinstance(value, dict) else value:
            total += self.size(item, depth + 1)
            if total > MAX_ITEMS:
                self.refuse(f"it holds more than {MAX_ITEMS:,} values (shared lists counted "
                            "once per place)")  # fmt: skip
        self.open.discard(key)
        self.sizes[key] = total
        return total

    def tensor(self, tensor: torch.Tensor) -> None:
        problem = tensor_problem(tensor)
        if problem:
            self.refuse(f"a tensor of shape {list(tensor.shape)} {problem}")
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        self.storages[pointer] = max(self.storages.get(pointer, 0), storage.nbytes())
        self.declared += tensor.numel() * tensor.element_size()

    def refuse(self, problem: str) -> None:
        raise CheckpointError(
            f"{self.where} is not a charrnn checkpoint: {problem}; it was refused before any "
            "of it was used"
        )


def tensor_problem(tensor: torch.Tensor) -> str | None:
    """Why `tensor` does not hold the elements it declares (None: it does). Reads no element."""
    if tensor.layout != torch.strided or tensor.is_nested or tensor.is_quantized:
        return f"has layout {tensor.layout} (charrnn writes only dense tensors)"
    if tensor.numel() == 0:
        return None
    if any(stride == 0 for size, stride in zip(tensor.shape, tensor.stride(), strict=True)
           if size > 1):  # fmt: skip
        return "repeats one stored value (an expanded, stride-0 view)"
    needed, held = tensor.numel() * tensor.element_size(), tensor.untyped_storage().nbytes()
    if held < needed:
        return f"declares {needed:,} bytes but holds {held:,}"
    return None


# --------------------------------------------------------------------------- values


def _facts_problem(saved: dict[str, Any]) -> str | None:
    """The small facts a reader shows or uses: None, or the malformed one's name."""
    if not isinstance(saved.get("corpus_path", ""), str):
        return "corpus_path"
    if not isinstance(saved.get("charrnn_version", ""), (str, type(None))):
        return "charrnn_version"
    return _corpus_record_problem(saved)


SHA256 = re.compile(r"[0-9a-f]{64}")
# What a fine-tune records of its start (finetune.Start.record), each a plain value.
START_FACTS = {"path": str, "step": (int, type(None)), "best_val_loss": (float, type(None)),
               "corpus": (str, type(None)), "corpus_fingerprint": (str, type(None)),
               "vocab_size": int, "added": list}  # fmt: skip


def _corpus_record_problem(saved: dict[str, Any]) -> str | None:
    """What a run records of its text (sources, files, fingerprints) and of its start."""
    for prefix in ("corpus", "val_corpus"):
        sources = saved.get(f"{prefix}_sources", [])
        if not (isinstance(sources, list) and all(isinstance(s, str) for s in sources)):
            return f"{prefix}_sources"
        print_ = saved.get(f"{prefix}_fingerprint")
        if not (print_ is None or (isinstance(print_, str) and SHA256.fullmatch(print_))):
            return f"{prefix}_fingerprint"
        files = saved.get(f"{prefix}_files", [])
        if not (isinstance(files, list) and all(map(_file_record, files))):
            return f"{prefix}_files"
    start = saved.get("init_from")
    if start is None:
        return None
    plain = isinstance(start, dict) and start.keys() <= START_FACTS.keys() and all(
        isinstance(value, START_FACTS[key]) and not isinstance(value, bool)
        for key, value in start.items()
    )  # fmt: skip
    added = start.get("added", []) if isinstance(start, dict) else None
    return None if plain and all(isinstance(c, str) for c in added) else "init_from"


def _file_record(entry: Any) -> bool:
    """{path, size, sha256} of one file of a corpus."""
    return (
        isinstance(entry, dict)
        and entry.keys() == {"path", "size", "sha256"}
        and isinstance(entry["path"], str)
        and type(entry["size"]) is int
        and entry["size"] >= 0
        and isinstance(entry["sha256"], str)
        and SHA256.fullmatch(entry["sha256"]) is not None
    )


def finite_float(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def _number(value: Any, kind: type, high: float) -> bool:
    """An int (or, for kind float, an int or a float), finite, in [0, high]."""
    if type(value) is bool or not isinstance(value, (int, float) if kind is float else int):
        return False
    return (not isinstance(value, float) or math.isfinite(value)) and 0 <= value <= high


def progress_problem(saved: Any) -> str | None:
    """None for a progress as the trainer writes it, else what is malformed ("progress step")."""
    if not isinstance(saved, dict):
        return "progress"
    if not _number(saved.get("step"), int, MAX_STEP):
        return "progress step"
    seconds = saved.get("seconds")
    if not (finite_float(seconds) and 0 <= seconds <= MAX_SECONDS):
        return "progress seconds"
    if not _number(saved.get("epoch", 0.0), float, MAX_STEP):
        return "progress epoch"
    for key in ("best_val_loss", "last_val_loss"):
        if key not in saved or not (saved[key] is None or _number(saved[key], float, MAX_LOSS)):
            return f"progress {key}"
    if saved.get("best_precision") not in (None, "fp32", "bf16", "fp16"):
        return "progress best_precision"
    budget_seconds = saved.get("budget_seconds", "missing")
    if not (budget_seconds is None or finite_float(budget_seconds)):
        return "progress budget_seconds"
    budget_steps = saved.get("budget_steps", "missing")
    if not (budget_steps is None or _number(budget_steps, int, MAX_STEP)):
        return "progress budget_steps"
    anchor = saved.get("anchor")
    if not (isinstance(anchor, (list, tuple)) and len(anchor) == 2
            and all(map(finite_float, anchor))):  # fmt: skip
        return "progress anchor"
    return None


@dataclass(frozen=True)
class Progress:
    """How far a run got, as readers show it (zeros for a file without progress)."""

    step: int = 0
    epoch: float = 0.0
    seconds: float = 0.0
    best_val_loss: float | None = None
    last_val_loss: float | None = None


def progress(saved: dict[str, Any]) -> Progress:
    """The progress of a checkpoint that `checkpoint` accepted."""
    if "progress" not in saved:
        return Progress()
    p = saved["progress"]

    def loss(value: float | None) -> float | None:
        return None if value is None else float(value)

    return Progress(p["step"], float(p.get("epoch", 0.0)), p["seconds"],
                    loss(p["best_val_loss"]), loss(p["last_val_loss"]))  # fmt: skip


def train_config(saved: dict[str, Any]) -> config_module.TrainConfig:
    """The run's training settings, as declared in charrnn.config."""
    try:
        return config_module.from_saved(config_module.TrainConfig, saved["train_config"])
    except CharRNNError as error:
        raise CheckpointError(f"checkpoint has invalid training settings: {error}") from None


def describe_model(saved: dict[str, Any]) -> tuple[config_module.ModelConfig, Vocabulary]:
    """The model config and vocabulary a checkpoint names, validated."""
    try:
        model_config = config_module.from_saved(config_module.ModelConfig, saved["model_config"])
        # A model trained with --max-vocab read the characters it left out as U+FFFD: so do
        # its readers (a weights-only file, without its settings, refuses them instead).
        trained = saved.get("train_config")
        max_vocab = trained.get("max_vocab") if isinstance(trained, dict) else None
        mapped = isinstance(max_vocab, int) and not isinstance(max_vocab, bool) and max_vocab > 0
        vocab = Vocabulary.from_list(saved["vocab"], maps_unknown=mapped)
    except CharRNNError as error:
        raise CheckpointError(f"checkpoint has an invalid model description: {error}") from None
    if not vocab:  # no model can be built for it (torch would warn before refusing)
        raise CheckpointError(
            "checkpoint has an invalid model description: its vocabulary must hold at least "
            "one character"
        )
    return model_config, vocab


# --------------------------------------------------------------------------- the model


def described_model(saved: dict[str, Any]) -> CharModel:
    """The model a checkpoint describes, on the meta device: its shapes, and no memory."""
    model_config, vocab = describe_model(saved)
    # Every layer has weights, so a file cannot ask for more layers than it holds weights
    # (building 10**30 layers would never finish, even without memory).
    if model_config.num_layers > len(saved["model"]):
        raise CheckpointError(
            f"the checkpoint describes {model_config.num_layers} layers but holds only "
            f"{len(saved['model'])} weights"
        )
    try:
        with torch.device("meta"):
            model = CharModel(model_config, len(vocab))
    except (RuntimeError, OverflowError, ValueError, TypeError) as error:  # beyond any tensor
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise CheckpointError(f"the checkpoint describes an impossible model: {first}") from None
    weight_bytes = sum(p.numel() * 4 for p in model.parameters())  # fp32 once built
    too_big = machine.beyond_half(weight_bytes, free=False)
    if too_big:
        raise CheckpointError(
            f"the checkpoint describes a model of {weight_bytes // 4:,} parameters: {too_big}"
        )
    return model


def _check_weights(saved: dict[str, Any], where: str) -> None:
    """The weights must be exactly the finite tensors of the model the checkpoint describes.

    The model is built on the meta device (shapes, no memory), so a file that describes a huge
    model but holds small weights is refused before anything is allocated.
    """
    expected = described_model(saved).state_dict()
    weights = saved["model"]
    missing = [name for name in expected if name not in weights]
    extra = [name for name in weights if name not in expected]
    if missing or extra:
        problem = (
            f"missing {missing[0]!r}"
            if missing
            else f"{shown(extra[0])}, which it has no place for"
        )
        raise CheckpointError(f"{where}: the weights do not fit the model it describes ({problem})")
    for name, tensor in weights.items():
        needed = tuple(expected[name].shape)
        if isinstance(tensor, torch.Tensor) and tuple(tensor.shape) != needed:
            raise CheckpointError(
                f"{where}: weight {name!r} has shape {list(tensor.shape)}, the model it "
                f"describes needs {list(needed)}"
            )
        if not finite_tensor(tensor, needed):
            raise CheckpointError(
                f"{where}: weight {name!r} is not a finite float tensor (NaN, infinity or "
                "not numbers); it cannot write text"
            )


def finite_tensor(value: Any, shape: tuple[int, ...] | None = None) -> bool:
    """A floating-point tensor without NaN or infinity (of `shape`, if given)."""
    return (
        isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and (shape is None or tuple(value.shape) == shape)
        and bool(torch.isfinite(value).all())
    )
