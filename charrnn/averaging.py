"""Weight averaging: an exponential moving average (EMA) of the weights over training, which is
what evaluation scores and what best.pt and last.pt hold as the model.

Late in a run the weights jitter around a minimum with every batch (the learning rate never
reaches zero); an average of the recent weights sits nearer its middle, often a slightly lower
validation loss for no extra training step (Polyak averaging; SWA averages the tail of a run
the same way). After every optimiser step::

    ema <- d * ema + (1 - d) * w        d = min(ema setting, (1 + n) / (10 + n))

where n counts the updates so far. The ramp of d (TensorFlow's ExponentialMovingAverage
``num_updates``) keeps the average close to the fast-moving early weights, so early
evaluations (and best.pt) stay meaningful: its window, 1 / (1 - d) = (10 + n) / 9 steps, is
about the last tenth of the steps until the setting caps it (0.99 after ~900 steps, 0.999 after
~9,000: in a 3,000-step run every setting above ~0.997 averages the same way).

In a checkpoint, ``model`` is the average: sample, eval, explain and export read it like any
other weights. ``averaging`` keeps what resuming needs: the raw weights the optimiser trains
(``raw``) and the update count (``updates``), so a resumed run continues bit for bit. A
checkpoint of a run without averaging has no ``averaging`` entry, as before this existed.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from charrnn.model import CharModel

RAMP = 10  # d = (1 + n) / (RAMP + n) before the setting caps it


class WeightAverage:
    """The EMA of a model's weights, kept in a copy of the model (in eval mode)."""

    def __init__(self, model: CharModel, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)
        self.updates = 0

    @classmethod
    def for_config(cls, decay: float, model: CharModel) -> WeightAverage | None:
        """An average for a run whose `ema` setting is `decay`; None when it is 0 (off)."""
        return cls(model, decay) if decay > 0 else None

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (RAMP + self.updates))

    @torch.no_grad()
    def update(self, model: CharModel) -> None:
        """Fold the model's weights (just stepped) into the average."""
        weight = 1.0 - self.current_decay()
        averaged, raw = self._tensors(self.model), self._tensors(model)
        torch._foreach_lerp_(averaged, raw, weight)  # ema + (1 - d) * (w - ema)
        self.updates += 1

    @staticmethod
    def _tensors(model: CharModel) -> list[torch.Tensor]:
        return [t for t in model.state_dict().values() if t.is_floating_point()]

    def checkpoint_entries(self, model: CharModel) -> dict[str, Any]:
        """``model`` (the average) and ``averaging`` (raw weights, update count) for a file."""
        return {
            "model": _cpu_weights(self.model),
            "averaging": {"raw": _cpu_weights(model), "updates": self.updates},
        }

    def restore(self, checkpoint: dict[str, Any], model: CharModel) -> None:
        """Load the raw weights into `model` and the average into this one (checked first by
        ``resume_problem``)."""
        model.load_state_dict(checkpoint["averaging"]["raw"])
        self.model.load_state_dict(checkpoint["model"])
        self.updates = checkpoint["averaging"]["updates"]


def _cpu_weights(model: CharModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def checkpoint_entries(model: CharModel, average: WeightAverage | None) -> dict[str, Any]:
    """What a checkpoint holds as its weights: the model's own, or the average and the raw."""
    if average is None:
        return {"model": _cpu_weights(model)}
    return average.checkpoint_entries(model)


def resume_problem(checkpoint: dict[str, Any], expected: dict[str, torch.Tensor]) -> str | None:
    """What is malformed in a checkpoint's ``averaging`` entry for a resume, or None.

    Needed when the run averages (its train_config's ``ema`` > 0); `expected` is the described
    model's state dict (shapes only; on the meta device).
    """
    train_config = checkpoint.get("train_config")
    ema = train_config.get("ema", 0.0) if isinstance(train_config, dict) else 0.0
    if not ema:
        return None
    entry = checkpoint.get("averaging")
    if not isinstance(entry, dict) or not isinstance(entry.get("raw"), dict):
        return "averaging (the raw weights of a run with ema)"
    updates = entry.get("updates")
    if type(updates) is not int or updates < 0:
        return "averaging update count"
    raw = entry["raw"]
    if raw.keys() != expected.keys():
        return "averaging raw weights (not the model's)"
    for name, tensor in raw.items():
        if not (
            isinstance(tensor, torch.Tensor)
            and tensor.is_floating_point()
            and tensor.shape == expected[name].shape
            and bool(torch.isfinite(tensor).all())
        ):
            return f"averaging raw weight {name!r}"
    return None
