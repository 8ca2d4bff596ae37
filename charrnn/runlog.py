"""What a training run reports while it runs: a line of metrics.jsonl per evaluation, with the
training speed since the one before, and the progress bar on stderr; and how it ended (Result).

A write that fails here (a full disk) does not stop the run: the line is left out, and the
trainer is told (``warn``), to say so in one line and list it in the run's result.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from charrnn.scoring import bits_per_char


@dataclass
class Result:
    """How a run ended: where it stands, and what it could not write without stopping."""

    run_dir: Path
    step: int
    epoch: float
    seconds: float
    best_val_loss: float | None
    final_val_loss: float | None
    stopped_by: str  # budget | signal
    signal: int | None = None
    final_val_scope: str = "all"  # all | sample (of a large validation text): see scoring
    checkpoint_warnings: list[str] = field(default_factory=list)


class MetricsLog:
    """metrics.jsonl, one JSON line per evaluation, and the training speed between evaluations.

    A line is appended whole or not at all: when the disk refuses it (full, say), it is left out
    with a warning and the run goes on, like a failed periodic checkpoint: a missing metrics
    line beats a lost run.
    """

    def __init__(self, path: Path | str, chars_per_step: int, warn: Callable[[str], None]):
        # Unbuffered: a line that fails to be written (disk full) is dropped, not kept in a
        # buffer that would fail again when the file is closed.
        self.file = open(path, "ab", buffering=0)  # noqa: SIM115
        self.chars_per_step = chars_per_step
        self.warn = warn
        self.start_window()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.file.close()

    def start_window(self) -> None:
        """Start timing anew (after an evaluation, so that its time is not counted)."""
        self.window_start, self.window_steps = time.perf_counter(), 0

    def count_step(self) -> None:
        self.window_steps += 1

    def rate(self) -> float:
        """Characters trained per second since the window started."""
        seconds = time.perf_counter() - self.window_start
        return self.window_steps * self.chars_per_step / max(seconds, 1e-9)

    def record(
        self,
        step: int,
        epoch: float,
        seconds: float,
        train_loss: float,
        val_loss: float,
        val_scope: str,
        lr: float,
        rate: float,
    ) -> str:
        """Append an evaluation's line; returns it as one line of text for the log.

        val_scope: one of charrnn.rundir.VAL_SCOPES.
        """
        line = {
            "step": step,
            "epoch": round(epoch, 4),
            "time": round(seconds, 3),
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_bpc": bits_per_char(val_loss),
            "val_scope": val_scope,
            "lr": lr,
            "chars_per_sec": round(rate, 1),
        }
        self._append(line)
        return (
            f"step {step:>6}  epoch {line['epoch']:.2f}  train {train_loss:.4f}  "
            f"val {val_loss:.4f} ({line['val_bpc']:.3f} bpc)  lr {lr:.2e}  {rate:,.0f} chars/s"
        )

    def _append(self, line: dict[str, Any]) -> None:
        """One whole line, or (disk full) a warning and no line at all: never half a line.

        Strict JSON: a NaN or an infinity (a diverged loss) is written as null, since json.dumps
        would write the bare tokens NaN and Infinity, which JSON does not have.
        """
        strict = {k: None if isinstance(v, float) and not math.isfinite(v) else v
                  for k, v in line.items()}  # fmt: skip
        data = (json.dumps(strict, allow_nan=False) + "\n").encode("utf-8")
        end = self.file.tell()
        try:
            written = self.file.write(data)
            reason = None if written == len(data) else "the disk took only part of the line"
        except OSError as error:
            reason = error.strerror or str(error)
        if reason is not None:
            with contextlib.suppress(OSError):
                self.file.truncate(end)
            self.warn(f"could not append to metrics.jsonl: {reason}")


class ProgressBar:
    """tqdm on stderr: steps done, and chars/s, epoch and losses after each step."""

    def __init__(self, total: int | None, initial: int, chars_per_step: int, show: bool | None):
        """show: True or False, or None to show it when stderr is a terminal."""
        self.chars_per_step = chars_per_step
        show = sys.stderr.isatty() if show is None else show
        self.bar = tqdm(
            total=total,
            initial=initial,
            desc="train",
            unit="step",
            file=sys.stderr,
            disable=not show,
            dynamic_ncols=True,
        )

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bar.close()

    def advance(self) -> None:
        self.bar.update(1)

    def describe(self, epoch: float, train_loss: float, val_loss: float | None) -> None:
        steps_per_second = self.bar.format_dict.get("rate") or 0.0  # tqdm's smoothed rate
        self.bar.set_postfix(
            chars_s=f"{steps_per_second * self.chars_per_step:,.0f}",
            epoch=f"{epoch:.2f}",
            loss=f"{train_loss:.3f}",
            val=f"{val_loss:.3f}" if val_loss is not None else "-",
            refresh=False,
        )
