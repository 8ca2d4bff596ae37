"""What a resumed run takes from its checkpoint and its run directory, checked before use.

- the text: the file the run was trained on (or the copy ``--corpus`` names), in the run's
  vocabulary, and only if it is the same text (its fingerprint, recorded in the checkpoint);
- the weights, the optimiser's learned moments, the progress, the hidden state of this rank's
  rows and the random number generators;
- the best validation loss so far, from ``best.pt`` as well as from ``last.pt``: a kill between
  the two saves leaves best.pt better than last.pt knows, and a worse model must never
  replace it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from charrnn import checkpoint as ckpt
from charrnn import rundir
from charrnn.config import TrainConfig
from charrnn.corpus import Data, Vocabulary, load_data
from charrnn.devices import PRECISION_NAMES
from charrnn.distributed import World
from charrnn.errors import CheckpointError, CorpusError
from charrnn.model import CharModel, State
from charrnn.schedule import Progress


def resumed_data(checkpoint: dict[str, Any], config: TrainConfig) -> Data:
    """The run's text, split, in its vocabulary; refused when it is not the text the run was
    trained on. `config.corpus` differing from the saved one is a copy the user pointed to."""
    corpus = checkpoint.get("corpus_path", config.corpus)
    if config.corpus != checkpoint["train_config"].get("corpus") or not Path(corpus).is_file():
        corpus = config.corpus  # the copy --corpus names, or (moved since) the name first given
    data = load_data(corpus, config.val_fraction, Vocabulary.from_list(checkpoint["vocab"]))
    recorded = checkpoint.get("corpus_fingerprint")  # None: a checkpoint of an older version
    if recorded is not None and data.fingerprint != recorded:
        raise CorpusError(
            f"corpus {str(data.corpus_path)!r} changed since the run started: it is not the "
            "text the run was trained on; resume with that text, or point --corpus at an "
            "identical copy"
        )
    return data


def restore(
    checkpoint: dict[str, Any],
    model: CharModel,
    optimizer: torch.optim.Optimizer,
    rows: slice,
    device: torch.device,
) -> tuple[Progress, State | None]:
    """Load the weights, moments and RNG state; returns the progress and this rank's state."""
    try:
        model.load_state_dict(checkpoint["model"])
        # Only the learned moments come from the file. How the optimiser runs (rate, betas,
        # flags such as fused, which depend on the device) is this run's config and device.
        groups = optimizer.state_dict()["param_groups"]
        saved_state = checkpoint["optimizer"]["state"]
        optimizer.load_state_dict({"state": saved_state, "param_groups": groups})
        progress = Progress.from_dict(checkpoint["progress"])
        hidden = checkpoint["hidden_state"]  # a list of 1 or 2 tensors, or None
        state = None if hidden is None else tuple(h[:, rows].to(device) for h in hidden)
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if device.type == "cuda" and checkpoint["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise CheckpointError(f"cannot resume from this checkpoint: {first[:200]}") from None
    return progress, state


def adopt_saved_best(progress: Progress, run_dir: Path, world: World) -> None:
    """Make `progress`'s best the model best.pt holds, when that one is better (read by rank 0,
    whose disk holds the run, and shared with the other ranks, which must decide alike)."""
    names = list(PRECISION_NAMES.values())

    def read() -> list[float]:
        score = ckpt.best_score(Path(run_dir) / rundir.BEST)
        if score is None:
            return [math.nan, -1.0]
        loss, precision = score
        return [loss, float(names.index(precision)) if precision in names else -1.0]

    loss, precision = world.share_all(read, 2)
    if not math.isnan(loss) and (progress.best_val_loss is None or loss < progress.best_val_loss):
        progress.best_val_loss = loss
        progress.best_precision = names[int(precision)] if precision >= 0 else None
