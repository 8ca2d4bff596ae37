"""The quality benchmark's training run: `charrnn train`'s Trainer, plus copies of the weights at
log-spaced early steps, so that the time to a loss is measured, not bounded by the first
periodic evaluation.

    python -m benchmarks.driver --config default --corpus PATH --max-time 600 --out DIR \\
        [--set learning_rate=3e-3 ...]

The run is the one `charrnn train --config C --corpus PATH --max-time S --out DIR` makes (the
same Trainer with the same settings, writing the same files). The only addition: right after
each step of ``snapshot_steps()``, the weights that evaluation would score are written to
DIR/snapshots/ (a few milliseconds each for the default model: the writes run inside the
budget, on the training clock, and their total time is recorded; written rather than kept, so
they do not add to the run's peak memory). DIR/snapshots/index.json lists them with the
training time each was taken at; benchmarks.quality scores them after the run, outside the
budget.
"""

from __future__ import annotations

import argparse
import json
import time
import tomllib
from pathlib import Path
from typing import Any

import torch

from charrnn import averaging, config
from charrnn.train import Trainer

SNAPSHOTS = "snapshots"  # the folder, in the run directory


def snapshot_steps(last: int = 512) -> list[int]:
    """Steps 4, 6, 8, 11, 16, 23, 32, ... up to `last`: two a doubling (log-spaced)."""
    steps, k = [], 4
    while round(2 ** (k / 2)) <= last:
        steps.append(round(2 ** (k / 2)))
        k += 1
    return steps


class SnapshotTrainer(Trainer):
    """A Trainer that writes the evaluated weights to run_dir/snapshots/ after `steps`."""

    def __init__(self, *args: Any, steps: list[int], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.snapshot_steps = set(steps)
        self.snapshots: list[dict[str, Any]] = []  # step, seconds, file
        self.snapshot_seconds = 0.0  # wall time spent writing them, inside the budget

    def _agree(self, stop: bool) -> bool:
        # Called once the step count and the training clock are updated (and again after an
        # evaluation of the same step, which takes no second copy).
        stopping = super()._agree(stop)
        step = self.progress.step
        taken = self.snapshots and self.snapshots[-1]["step"] == step
        if step in self.snapshot_steps and not taken:
            start = time.perf_counter()
            folder = self.run_dir / SNAPSHOTS
            folder.mkdir(exist_ok=True)
            path = folder / f"step-{step:06d}.pt"
            torch.save(averaging.checkpoint_entries(self.model, self.average)["model"], path)
            self.snapshots.append({"step": step, "seconds": self.progress.seconds,
                                   "file": path.name})  # fmt: skip
            self.snapshot_seconds += time.perf_counter() - start
        return stopping

    def write_index(self) -> None:
        (self.run_dir / SNAPSHOTS / "index.json").write_text(json.dumps(self.snapshots))


def read_snapshots(run_dir: Path) -> list[dict[str, Any]]:
    """The snapshots of a run (step, seconds, file), each with its weights ("model")."""
    folder = Path(run_dir) / SNAPSHOTS
    index = json.loads((folder / "index.json").read_text())
    return [{**s, "model": torch.load(folder / s["file"], weights_only=True)} for s in index]


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs, values read as TOML (3e-3, true, "adam"; a bare word is a string)."""
    overrides = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            overrides[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key.strip()] = value
    return overrides


def train(config_name: str, corpus: str, seconds: float, out: Path, sets: dict[str, Any]) -> dict:
    overrides = {**sets, "corpus": corpus, "max_time": seconds}
    model_config, train_config = config.resolve(config_name, overrides)
    given = config.given_keys(config_name, overrides)
    trainer = SnapshotTrainer(model_config, train_config, out, progress_bar=False,
                              steps=snapshot_steps(), given=given)  # fmt: skip
    sizing = trainer.sizing
    result = trainer.run()
    trainer.write_index()
    amp = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(trainer.amp, "fp32")
    return {
        "precision": amp,  # what the run's autocast really was (auto resolved)
        "steps": result.step,
        "seconds": result.seconds,
        "snapshot_count": len(trainer.snapshots),
        "snapshot_seconds": trainer.snapshot_seconds,
        "settings": {**config.to_dict(trainer.model_config), **config.to_dict(trainer.config)},
        # auto_size's choice (None: off): its timing is inside `seconds`
        "sizing": None
        if sizing is None
        else {
            "reason": sizing.reason,
            "probe_seconds": sizing.probe_seconds,
            "candidates": [
                {
                    "shape": m.candidate.name,
                    "chars_per_second": m.chars_per_second,
                    "chars": m.chars,
                    "chars_per_weight": m.chars_per_weight,
                    "epochs": m.epochs,
                    "precision": m.precision.name,  # the faster, where two were timed
                    "precision_speeds": m.precision.speeds,
                }
                for m in sizing.measured
            ],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--max-time", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting, as in a config's [model] or [train] table")  # fmt: skip
    args = parser.parse_args()
    print(json.dumps(train(args.config, args.corpus, args.max_time, args.out,
                           parse_sets(args.set))))  # fmt: skip


if __name__ == "__main__":
    main()
