"""What the screens of a changed model part share (benchmarks.mogrifier, benchmarks.neural_cache):
timing the changed model's training step beside the plain one, running charrnn itself with the
change patched in, and naming what a step timing measured."""

from __future__ import annotations

import statistics
import sys
import time

import torch
from torch import nn

from benchmarks.machine import describe
from charrnn.autosize import training_step
from charrnn.config import ModelConfig
from charrnn.devices import PRECISION_NAMES, autocast_dtype, optimizer_options

BATCH, LENGTH, VOCAB = 64, 100, 65  # the default's batch; Tiny Shakespeare's vocabulary


def step_config(hidden_size: int) -> ModelConfig:
    """The default's model shape and regularisation at `hidden_size`, for step timings."""
    return ModelConfig(cell="lstm", hidden_size=hidden_size, num_layers=1, embedding_dim=64,
                       dropout=0.15, weight_drop=0.2)  # fmt: skip


def interleaved_speeds(models: dict[str, nn.Module], repeats: int) -> dict[str, float]:
    """Median characters/s of each model's training step, as auto_size times a shape's
    (autocast at the precision `charrnn train` picks here, AdamW, clipping), on one random
    batch. Two warm-up steps each (the second fills any memory a model carries), then the
    repeats interleaved across models, so that a neighbour's load hits them alike."""
    device = torch.device("cpu")
    amp = autocast_dtype(device, "auto")
    ids = torch.randint(VOCAB, (BATCH, LENGTH + 1))
    inputs, targets = ids[:, :-1], ids[:, 1:]
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4, **optimizer_options(device))
                  for name, m in models.items()}  # fmt: skip
    for name, model in models.items():
        for _ in range(2):
            training_step(model, optimizers[name], inputs, targets, device, amp)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            started = time.perf_counter()
            training_step(model, optimizers[name], inputs, targets, device, amp)
            times[name].append(time.perf_counter() - started)
    return {name: BATCH * LENGTH / statistics.median(t) for name, t in times.items()}


def run_charrnn(argv: list[str]) -> None:
    """`charrnn ARGV` in this process, so a patch made before it holds."""
    from charrnn.cli import run

    sys.argv = ["charrnn", *argv]
    run()


def step_heading(hidden_size: int) -> str:
    """The machine, threads and precision of a training-step timing of a 1xH LSTM model."""
    machine = describe()
    precision = PRECISION_NAMES[autocast_dtype(torch.device("cpu"), "auto")]
    return (
        f"{machine['cpu']}, {machine['threads']} threads, {precision}: 1x{hidden_size} LSTM, "
        f"batch {BATCH} x {LENGTH}, one training step"
    )
