"""What the screens of a changed model part share (benchmarks.mogrifier, benchmarks.neural_cache):
running charrnn itself with the change patched in, and naming what a step timing measured."""

from __future__ import annotations

import sys

import torch

from benchmarks.machine import describe
from charrnn.devices import PRECISION_NAMES, autocast_dtype


def run_charrnn(argv: list[str]) -> None:
    """`charrnn ARGV` in this process, so a patch made before it holds (train, eval, sample)."""
    from charrnn.cli import run

    sys.argv = ["charrnn", *argv]
    run()


def step_heading(hidden_size: int, batch: int, length: int) -> str:
    """The machine, threads and precision of a training-step timing of a 1xH LSTM model."""
    machine = describe()
    precision = PRECISION_NAMES[autocast_dtype(torch.device("cpu"), "auto")]
    return (
        f"{machine['cpu']}, {machine['threads']} threads, {precision}: 1x{hidden_size} LSTM, "
        f"batch {batch} x {length}, one training step"
    )
