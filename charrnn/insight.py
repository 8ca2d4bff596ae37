"""What a run is: a checkpoint's facts (corpus, vocabulary, model, training progress), the run's
loss curves from ``metrics.jsonl``, and a side-by-side list of the runs in a folder.

Everything here is read from files a run wrote; nothing is trained or evaluated. The CLI draws
these facts (``charrnn inspect``, ``charrnn runs``); ``to_json`` gives them to scripts.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from charrnn import checkpoint as ckpt
from charrnn import config, rundir, validate
from charrnn.cell_kinds import cell_kind
from charrnn.errors import CharRNNError, CheckpointError
from charrnn.model import count_parameters
from charrnn.scoring import bits_per_char


@dataclass(frozen=True)
class CheckpointSummary:
    """The facts of one checkpoint and of the run it belongs to."""

    path: Path
    corpus: str
    vocab: list[str]
    model_config: dict[str, Any]
    train_config: dict[str, Any]
    parameters: int
    parameters_by_part: dict[str, int]
    step: int
    epoch: float
    seconds: float
    best_val_loss: float | None
    last_val_loss: float | None
    written: datetime
    charrnn_version: str | None
    metrics: list[dict[str, Any]]
    corpus_files: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    corpus_fingerprint: str | None = None
    init_from: dict[str, Any] | None = None  # a fine-tune's start
    metrics_notes: list[str] = dataclasses.field(default_factory=list)  # lines left out, why

    @property
    def run_name(self) -> str:
        return self.path.parent.name

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.path),
            "run": self.run_name,
            "corpus": self.corpus,
            "vocab_size": len(self.vocab),
            "vocab": self.vocab,
            "cell": self.model_config.get("cell"),
            "hidden_size": self.model_config.get("hidden_size"),
            "num_layers": self.model_config.get("num_layers"),
            "parameters": self.parameters,
            "parameters_by_part": self.parameters_by_part,
            "step": self.step,
            "epoch": self.epoch,
            "seconds": self.seconds,
            "best_val_loss": self.best_val_loss,
            "best_val_bpc": _bpc(self.best_val_loss),
            "last_val_loss": self.last_val_loss,
            "last_val_bpc": _bpc(self.last_val_loss),
            "written": self.written.isoformat(timespec="seconds"),
            "charrnn_version": self.charrnn_version,
            "model_config": self.model_config,
            "train_config": self.train_config,
            "metrics": self.metrics,
            "corpus_files": self.corpus_files,
            "corpus_fingerprint": self.corpus_fingerprint,
            "init_from": self.init_from,
            "metrics_notes": self.metrics_notes,
        }


def _bpc(nats: float | None) -> float | None:
    return None if nats is None else bits_per_char(nats)


def summarize(path: str | Path) -> CheckpointSummary:
    """Read a .pt file or a run directory (its last.pt, else best.pt). Raises CheckpointError.

    Every fact comes from values charrnn.validate accepted (when the checkpoint was loaded),
    never from the file's raw dicts.
    """
    file = rundir.find_checkpoint(path, rundir.FOR_DESCRIBING)
    checkpoint = ckpt.load(file)
    # Building the model checks that the weights fit the description, and counts what is there.
    model, vocab = ckpt.restore_model(checkpoint)
    train_config = validate.train_config(checkpoint)
    progress = validate.progress(checkpoint)
    metrics = rundir.read_metrics(file.parent)
    return CheckpointSummary(
        path=file,
        # the first file, or (none recorded) the corpus setting's names, a tuple since a run
        # may read several
        corpus=checkpoint.get("corpus_path") or ", ".join(train_config.corpus),
        vocab=vocab.to_list(),
        model_config=config.to_dict(model.config),
        train_config=config.to_dict(train_config),
        parameters=count_parameters(model),
        parameters_by_part={
            name: count_parameters(part)
            for name, part in model.named_children()
            if count_parameters(part)
        },  # fmt: skip
        step=progress.step,
        epoch=progress.epoch,
        seconds=progress.seconds,
        best_val_loss=progress.best_val_loss,
        last_val_loss=progress.last_val_loss,
        written=datetime.fromtimestamp(file.stat().st_mtime),
        charrnn_version=checkpoint.get("charrnn_version"),
        corpus_files=_list_of_dicts(checkpoint.get("corpus_files")),
        corpus_fingerprint=_text_or_none(checkpoint.get("corpus_fingerprint")),
        init_from=checkpoint.get("init_from")
        if isinstance(checkpoint.get("init_from"), dict)
        else None,
        metrics=metrics.entries,
        metrics_notes=metrics.notes,
    )


def _list_of_dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def architecture(model_config: dict[str, Any], vocab_size: int) -> list[str]:
    """The model as the lesson builds it, in its shapes: B rows of T characters a batch
    (batch_size x seq_length), E the embedding, H the units, L the layers, V the vocabulary."""
    kind = cell_kind(model_config["cell"])
    hidden, layers, embedding = (model_config["hidden_size"], model_config["num_layers"],
                                 model_config["embedding_dim"])  # fmt: skip
    inputs = f"embedding (B, T, {embedding})" if embedding else f"one-hot (B, T, {vocab_size})"
    extra = {"rnn": f", nonlinearity={model_config.get('nonlinearity')!r}",
             "peephole-lstm": ", peephole=True"}.get(kind.name, "")  # fmt: skip
    core = f"{kind.module}({embedding or vocab_size}, {hidden}, num_layers={layers}{extra})"
    state = "(h, c), each" if kind.state_count == 2 else "h"
    lines = [
        f"ids (B, T) -> {inputs} -> {core} -> outputs (B, T, {hidden}) -> "
        f"nn.Linear({hidden}, {vocab_size}) at every step -> logits (B, T, {vocab_size})",
        f"state {state} ({layers}, B, {hidden}), carried from one batch to the next; the "
        f"Linear over (B, T, {hidden}) is the lesson's reshape to (B*T, {hidden}) and Linear",
    ]
    if model_config["dropout"]:
        lines.append(f"dropout {model_config['dropout']} between layers and on the outputs "
                     "before the head")  # fmt: skip
    if model_config.get("weight_drop"):
        lines.append(f"weight drop {model_config['weight_drop']} on the hidden-to-hidden weights")
    if kind.name == "peephole-lstm":
        lines.append(f"peepholes: 3 x {hidden} diagonal weights a layer (i and f see c_{{t-1}}, "
                     "o sees c_t)")  # fmt: skip
    return lines


def loss_curves(metrics: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """(step, loss) points of the train and val curves, leaving out missing or non-finite ones."""
    curves: dict[str, list[tuple[float, float]]] = {"train": [], "val": []}
    for entry in metrics:
        for name in curves:
            value = entry.get(f"{name}_loss")
            if isinstance(value, (int, float)) and math.isfinite(value):
                curves[name].append((float(entry["step"]), float(value)))
    return curves


# Why a run directory without a checkpoint is left out of a listing (it has no facts to show).
NOT_SAVED_YET = "no checkpoint yet (still training, or stopped before its first save)"


@dataclass(frozen=True)
class RunListing:
    """The runs of a folder, newest first; the ones that could not be read (and why); and the
    names of the runs with no checkpoint yet (NOT_SAVED_YET)."""

    runs: list[CheckpointSummary]
    unreadable: dict[str, str]
    not_saved_yet: list[str] = dataclasses.field(default_factory=list)


def list_runs(root: str | Path) -> RunListing:
    """Summaries of every run under `root`. Raises CheckpointError when `root` is not a folder
    of runs (missing, a file, a run itself) or holds none at all."""
    root = Path(root).expanduser()
    _check_folder_of_runs(root)
    folders, unsaved = rundir.run_dirs(root), rundir.unsaved_run_dirs(root)
    if not folders and not unsaved:
        raise CheckpointError(
            f"no runs in {str(root)!r}; train one with `charrnn train` or name a folder of runs"
        )
    runs, unreadable = [], {}
    for folder in folders:
        try:
            runs.append(summarize(folder))
        except CharRNNError as error:
            # One broken run should not hide the others: list it with its reason.
            unreadable[folder.name] = str(error)
    runs.sort(key=lambda run: run.written, reverse=True)
    return RunListing(runs, unreadable, [folder.name for folder in unsaved])


def _check_folder_of_runs(root: Path) -> None:
    """`root` is a folder that may hold runs, or a CheckpointError says what it is instead."""
    shown = str(root)
    if not root.exists():
        raise CheckpointError(
            f"{shown!r} does not exist; train a run with `charrnn train` (it writes runs under "
            "checkpoints/) or name a folder of runs"
        )
    if root.is_file():
        hint = (
            f"; `charrnn inspect {shlex.quote(shown)}` describes it" if root.suffix == ".pt" else ""
        )
        raise CheckpointError(f"{shown!r} is a file, not a folder of runs{hint}")
    if not root.is_dir():  # a FIFO, a device, a socket
        raise CheckpointError(f"{shown!r} is not a folder; name a folder of runs")
    if rundir.is_run(root):
        raise CheckpointError(
            f"{shown!r} is a run, not a folder of runs: `charrnn inspect {shlex.quote(shown)}` "
            f"describes it, `charrnn runs {shlex.quote(str(root.parent))}` lists the runs beside it"
        )
    if rundir.is_unsaved_run(root) and not rundir.run_dirs(root):
        raise CheckpointError(f"{shown!r} is a run with {NOT_SAVED_YET}, not a folder of runs")
