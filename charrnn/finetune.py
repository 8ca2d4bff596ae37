"""Fine-tuning: a new run that starts from a trained model's weights, on another corpus.

    charrnn train --init-from checkpoints/plays-run --corpus letters/ --max-time 120
    charrnn.fine_tune("checkpoints/plays-run", "letters/", max_time=120)   # -> the run directory

A run directory means its ``best.pt``. What comes from where:

- **the model's shape** (cell, hidden_size, num_layers, embedding_dim, bias, nonlinearity):
  from the checkpoint. Typing one is refused, and so is a config file that sets one otherwise.
- **dropout, weight_drop and every training setting**: from ``--config`` (by default the
  bundled ``finetune`` config: a lower peak learning rate than training from scratch, since the
  weights are already good and a large first step would undo them; a short warm-up, since the
  optimiser's moments start afresh) and the flags, as for any run.
- **the vocabulary**: the checkpoint's characters keep their ids; the new corpus's other
  characters are appended, sorted. Their new rows of the embedding and of the output layer
  (and of the first layer's input weights of a one-hot model) start as the **mean of the
  existing rows**: a new character starts as "an average character" (its logit is about the
  average logit, so it is neither ruled out nor favoured) and training moves it from there.
- **the optimiser and schedule**: fresh; the step count starts at 0.

The run records where it started (checkpoint path, its step and best loss, the characters
added); ``charrnn inspect`` shows it, and a resumed fine-tune keeps it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from charrnn import checkpoint as ckpt
from charrnn import config as config_module
from charrnn import rundir
from charrnn.config import ModelConfig, TrainConfig
from charrnn.errors import CheckpointError, ConfigError
from charrnn.model import CharModel
from charrnn.vocab import Vocabulary

CONFIG = "finetune"  # the bundled config a fine-tune uses when --config is not given


@dataclass(frozen=True)
class Start:
    """The checkpoint a fine-tune starts from."""

    path: Path
    checkpoint: dict[str, Any]
    model_config: ModelConfig
    vocab: Vocabulary

    @classmethod
    def load(cls, run_or_checkpoint: str | Path) -> Start:
        path = rundir.find_checkpoint(run_or_checkpoint, rundir.FOR_USING)
        checkpoint = ckpt.load(path)
        model_config, vocab = ckpt.describe_model(checkpoint)
        return cls(path.resolve(), checkpoint, model_config, vocab)

    def transplant(self, model: CharModel, vocab: Vocabulary) -> None:
        """Load the checkpoint's weights into `model`, built for `vocab` (this vocabulary with
        characters appended): rows for the new characters are the mean of the old ones."""
        if vocab.chars[: len(self.vocab)] != self.vocab.chars:
            raise CheckpointError("a fine-tune's vocabulary must extend its checkpoint's")
        weights = {}
        for name, target in model.state_dict().items():
            source = self.checkpoint["model"][name]
            weights[name] = grow(source, tuple(target.shape), len(self.vocab))
        model.load_state_dict(weights)

    def record(self, added: Sequence[str]) -> dict[str, Any]:
        """What the new run records of its start."""
        progress = self.checkpoint.get("progress") or {}
        return {
            "path": str(self.path),
            "step": progress.get("step"),
            "best_val_loss": progress.get("best_val_loss"),
            "corpus": self.checkpoint.get("corpus_path"),
            "corpus_fingerprint": self.checkpoint.get("corpus_fingerprint"),
            "vocab_size": len(self.vocab),
            "added": list(added),
        }


def grow(weight: torch.Tensor, shape: tuple[int, ...], old_vocab: int) -> torch.Tensor:
    """`weight` extended to `shape` along its vocabulary dimension (the one that differs, of
    size `old_vocab`), the new slices being the mean of the old ones."""
    if tuple(weight.shape) == shape:
        return weight
    grown = weight
    for dim, (have, want) in enumerate(zip(weight.shape, shape, strict=True)):
        if have == want:
            continue
        if have != old_vocab or want < have:
            raise CheckpointError(
                f"cannot grow a weight of shape {list(weight.shape)} to {list(shape)}"
            )
        mean = grown.mean(dim=dim, keepdim=True)
        extra = list(grown.shape)
        extra[dim] = want - have
        grown = torch.cat([grown, mean.expand(extra)], dim=dim)
    return grown.contiguous()


def configs(
    start: Start, config_file: str | None, overrides: dict[str, Any]
) -> tuple[ModelConfig, TrainConfig]:
    """A fine-tune's settings: the checkpoint's shape, the rest from the config and flags."""
    shape = config_module.shape_fields()
    typed = [name for name in overrides if name in shape]
    if typed:
        raise ConfigError(
            f"--{typed[0].replace('_', '-')} cannot be set with --init-from: the model's shape "
            f"comes from the checkpoint ({_shape_text(start.model_config)})"
        )
    model_config, train_config = config_module.resolve(config_file or CONFIG, overrides)
    from_file = config_module.load_toml(config_file).get("model", {}) if config_file else {}
    for name, value in from_file.items():
        if name in shape and getattr(start.model_config, name) != value:
            # A bundled config cannot be edited: the way out is to drop it.
            fix = ("leave it out of the config" if Path(config_file).expanduser().is_file()
                   else f"leave out --config (a fine-tune uses the bundled {CONFIG!r}), or "
                   "give a config file without it")  # fmt: skip
            raise ConfigError(
                f"config {config_file!r} sets {name} = {value!r}, but with --init-from the "
                f"model's shape comes from the checkpoint ({name} = "
                f"{getattr(start.model_config, name)!r}); {fix}"
            )
    keep = {name: getattr(start.model_config, name) for name in shape}
    return dataclasses.replace(model_config, **keep), train_config


def _shape_text(model: ModelConfig) -> str:
    return f"{model.cell}, {model.num_layers}x{model.hidden_size}, embedding {model.embedding_dim}"


def fine_tune(
    checkpoint: str | Path,
    corpus: str | Sequence[str],
    *,
    out: str | Path | None = None,
    config: str | None = None,
    log: Callable[[str], None] = lambda line: None,
    progress_bar: bool = False,
    **settings: Any,
) -> Path:
    """Train a new run from `checkpoint`'s weights (a run directory: its best.pt) on `corpus`.

    `settings` are any training settings and dropout / weight_drop (``max_time=120``,
    ``learning_rate=1e-3``), over the `config` file (default: the bundled ``finetune``).
    The model's shape comes from the checkpoint. Returns the new run's directory (`out`, or
    ``checkpoints/<corpus>-<cell>-<time>``). Raises charrnn.errors exceptions.
    """
    from charrnn.train import Trainer

    start = Start.load(checkpoint)
    model_config, train_config = configs(start, config, {"corpus": corpus, **settings})
    run_dir = (
        Path(out) if out is not None else rundir.default_dir(train_config.corpus, model_config.cell)
    )
    if (run_dir / rundir.LAST).exists():
        raise ConfigError(f"{str(run_dir)!r} already holds a run; choose another out")
    trainer = Trainer(model_config, train_config, run_dir, start=start, log=log,
                      progress_bar=progress_bar)  # fmt: skip
    trainer.run()
    return run_dir
