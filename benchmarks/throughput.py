"""Training-step throughput of a config's model, against the machine's measured GEMM peak.

    python -m benchmarks.throughput [--config default] [--repeats 10]

A step is what the trainer does: forward with the carried state, cross-entropy, backward,
gradient clipping and an AdamW update, under the same autocast. Achieved GFLOP/s counts the
matrix products only (input and recurrent projections of every gate, the head), forward plus
backward (2x forward): the usual way to compare against a GEMM peak.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from charrnn import config as config_module
from charrnn.devices import autocast_dtype, optimizer_options
from charrnn.model import CharModel, detach_state

VOCAB = 65  # Tiny Shakespeare's vocabulary size
GATES = {"lstm": 4, "gate-lstm": 4, "peephole-lstm": 4, "gru": 3, "gate-gru": 3, "rnn": 1}


def flops_per_char(model_config: config_module.ModelConfig, vocab: int = VOCAB) -> float:
    """Multiply-adds x 2 of one character's forward pass, times 3 for forward + backward."""
    gates, hidden = GATES[model_config.cell], model_config.hidden_size
    inputs = model_config.embedding_dim or vocab
    forward = 0
    for layer in range(model_config.num_layers):
        width = inputs if layer == 0 else hidden
        forward += 2 * gates * hidden * (width + hidden)
    forward += 2 * hidden * vocab
    return 3 * forward


def gemm_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a square matrix product at the current thread count (median)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def training_step_times(name: str, repeats: int) -> tuple[list[float], dict]:
    model_config, train_config = config_module.resolve(name, {})
    torch.manual_seed(0)
    model = CharModel(model_config, VOCAB)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3,
                                  weight_decay=train_config.weight_decay,
                                  **optimizer_options(torch.device("cpu")))  # fmt: skip
    amp = autocast_dtype(torch.device("cpu"), train_config.precision)
    b, t = train_config.batch_size, train_config.seq_length
    ids = torch.randint(0, VOCAB, (b, t + 1))
    state = model.init_state(b)

    def step():
        nonlocal state
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            logits, new_state = model(ids[:, :-1], state)
            loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip or 1e9)
        optimizer.step()
        state = detach_state(new_state)

    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    shape = {"batch_size": b, "seq_length": t, "precision": str(amp or "fp32"),
             "model": config_module.to_dict(model_config)}  # fmt: skip
    return times, shape


def measure(name: str = "default", repeats: int = 10) -> dict:
    times, shape = training_step_times(name, repeats)
    model_config, _ = config_module.resolve(name, {})
    chars = shape["batch_size"] * shape["seq_length"]
    per_second = sorted(chars / t for t in times)
    median = statistics.median(per_second)
    achieved = median * flops_per_char(model_config) / 1e9
    peaks = {"fp32": gemm_peak(torch.float32), "bf16": gemm_peak(torch.bfloat16)}
    peak = peaks["bf16"] if "bfloat16" in shape["precision"] else peaks["fp32"]
    return {
        **shape,
        "config": name,  # a bundled config's name, or the path of a run's config.toml
        "threads": torch.get_num_threads(),
        "chars_per_sec": median,
        "chars_per_sec_range": [per_second[0], per_second[-1]],
        "gflops": achieved,
        "gemm_peak_gflops": peaks,
        "fraction_of_peak": achieved / peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(measure(args.config, args.repeats), indent=2))


if __name__ == "__main__":
    main()
