"""The learning-rate schedule: linear warm-up, then a decay over the run's budget; and where a
run stands (``Progress``, saved in every checkpoint).

The decay follows the *progress* of the run, a number from 0 to 1: the larger of steps done /
``max_steps`` (or the steps of ``max_epochs``) and training seconds / the time budget. So a run
bounded by ``--max-time`` decays over its wall-clock budget, which is what a CPU user on a
budget wants. A run with no budget at all keeps the peak rate after warm-up.

Resuming with a larger (or smaller) budget stretches the rest of the schedule from that point:
the learning rate continues from where it was and decays to its floor over the new remaining
budget. That is an *anchor* ``(p0, f0)``: progress ``p0`` was reached when the budget fraction
under the new budget was ``f0``, and progress then grows linearly from ``p0`` to 1 as that
fraction goes from ``f0`` to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from charrnn.rundir import MAX_STEP


@dataclass(frozen=True)
class Budget:
    """How long a run may train, in total (earlier invocations included). None = unbounded."""

    max_steps: int | None
    max_seconds: float | None

    def fraction(self, step: int, seconds: float) -> float:
        parts = [0.0]
        if self.max_steps:
            parts.append(step / self.max_steps)
        if self.max_seconds:
            parts.append(seconds / self.max_seconds)
        return min(1.0, max(parts))

    def spent(self, step: int, seconds: float) -> bool:
        return (self.max_steps is not None and step >= self.max_steps) or (
            self.max_seconds is not None and seconds >= self.max_seconds
        )

    @classmethod
    def from_limits(
        cls, max_steps: int, max_epochs: float, steps_per_epoch: int, max_time: float, done: float
    ) -> Budget:
        """The budget of a run's limits (0 = none). ``max_time`` counts this invocation's time,
        so the seconds earlier invocations trained (``done``) are added to it."""
        limits = []
        if max_steps:
            limits.append(max_steps)
        if max_epochs:
            # min(): a huge --max-epochs times the epoch length would overflow to infinity,
            # and a saved budget over MAX_STEP is refused when the run is read back.
            limits.append(max(1, round(min(max_epochs * steps_per_epoch, MAX_STEP))))
        return cls(min(limits) if limits else None, done + max_time if max_time else None)


@dataclass(frozen=True)
class Anchor:
    progress: float = 0.0  # p0
    fraction: float = 0.0  # f0

    def progress_at(self, fraction: float) -> float:
        if self.fraction >= 1.0:
            return 1.0
        share = (fraction - self.fraction) / (1.0 - self.fraction)
        return min(1.0, self.progress + (1.0 - self.progress) * max(0.0, share))


@dataclass(frozen=True)
class Schedule:
    peak: float
    kind: str  # cosine | linear | constant
    min_fraction: float
    warmup_steps: int

    def learning_rate(self, step: int, progress: float) -> float:
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.kind == "cosine":
            decay = 0.5 * (1.0 + math.cos(math.pi * progress))
        elif self.kind == "linear":
            decay = 1.0 - progress
        else:
            decay = 1.0
        floor = self.min_fraction
        return self.peak * warm * (floor + (1.0 - floor) * decay)


@dataclass
class Progress:
    """Where a run is; saved in every checkpoint (see to_dict for the fields)."""

    step: int = 0
    seconds: float = 0.0  # training time over all invocations
    best_val_loss: float | None = None
    # The precision best_val_loss was scored in (None: not recorded, by an older version); only
    # scores in the same precision are compared with it.
    best_precision: str | None = None
    last_val_loss: float | None = None
    anchor: Anchor = field(default_factory=Anchor)
    budget_steps: int | None = None  # the budget the anchor was made for
    budget_seconds: float | None = None

    def fit(self, budget: Budget) -> None:
        """On resume with a different budget, stretch the rest of the schedule (see above)."""
        if (self.budget_steps, self.budget_seconds) == (budget.max_steps, budget.max_seconds):
            return
        if self.step > 0:
            old = Budget(self.budget_steps, self.budget_seconds)
            reached = self.anchor.progress_at(old.fraction(self.step, self.seconds))
            self.anchor = Anchor(reached, budget.fraction(self.step, self.seconds))
        self.budget_steps, self.budget_seconds = budget.max_steps, budget.max_seconds

    def to_dict(self, steps_per_epoch: int) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.step / steps_per_epoch,  # for readers (charrnn inspect); not read back
            "seconds": self.seconds,
            "best_val_loss": self.best_val_loss,
            "best_precision": self.best_precision,
            "last_val_loss": self.last_val_loss,
            "anchor": [self.anchor.progress, self.anchor.fraction],
            "budget_steps": self.budget_steps,
            "budget_seconds": self.budget_seconds,
        }

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> Progress:
        """What to_dict wrote (checked by checkpoint.check_resumable first)."""
        return cls(
            step=int(saved["step"]),
            seconds=float(saved["seconds"]),
            best_val_loss=saved["best_val_loss"],
            best_precision=saved.get("best_precision"),
            last_val_loss=saved["last_val_loss"],
            anchor=Anchor(*saved["anchor"]),
            budget_steps=saved["budget_steps"],
            budget_seconds=saved["budget_seconds"],
        )
