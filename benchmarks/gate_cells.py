"""Time one training step (forward + backward) of the gate-level cells against torch's own.

    python -m benchmarks.gate_cells [--repeats 5] [--threads N]

Embedding-free on purpose: random input of size 64 into one recurrent layer of 512 units,
batch 32, 100 steps, so the table measures the recurrent core and nothing else. Each model
gets one warm-up step, then the repeats are interleaved across models (round robin) so that
a neighbour's load on a shared machine hits every model alike; the median is reported.
"""

import argparse
import os
import platform
import statistics
import time

import torch
from torch import nn

from benchmarks.machine import cpu_model
from charrnn.cells import GateGRU, GateLSTM

INPUT_SIZE = 64
HIDDEN_SIZE = 512
BATCH_SIZE = 32
SEQ_LENGTH = 100


def training_step(model: nn.Module, x: torch.Tensor) -> float:
    """One forward + backward; returns its wall time in milliseconds."""
    for param in model.parameters():
        param.grad = None
    start = time.perf_counter()
    out, state = model(x)
    # Touch the final state too, as truncated BPTT does when it carries it to the next batch.
    h_n = state[0] if isinstance(state, tuple) else state
    loss = out.square().mean() + h_n.square().mean()
    loss.backward()
    return (time.perf_counter() - start) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per model")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: as is)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    models = {
        "nn.LSTM": nn.LSTM(INPUT_SIZE, HIDDEN_SIZE),
        "GateLSTM": GateLSTM(INPUT_SIZE, HIDDEN_SIZE),
        "GateLSTM(peephole)": GateLSTM(INPUT_SIZE, HIDDEN_SIZE, peephole=True),
        "nn.GRU": nn.GRU(INPUT_SIZE, HIDDEN_SIZE),
        "GateGRU": GateGRU(INPUT_SIZE, HIDDEN_SIZE),
    }
    # Which torch module each row is compared with.
    baseline = {name: "nn.GRU" if "GRU" in name else "nn.LSTM" for name in models}
    x = torch.randn(SEQ_LENGTH, BATCH_SIZE, INPUT_SIZE)  # (T, B, I)

    for model in models.values():
        training_step(model, x)  # warm-up: allocator, BLAS and autograd caches
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            times[name].append(training_step(model, x))
    median = {name: statistics.median(values) for name, values in times.items()}

    print(f"CPU: {cpu_model()}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), "
        f"python {platform.python_version()}"
    )
    print(
        f"training step: input {INPUT_SIZE} -> hidden {HIDDEN_SIZE}, batch {BATCH_SIZE}, "
        f"seq {SEQ_LENGTH}, 1 layer; median of {args.repeats} after a warm-up"
    )
    print()
    print(f"{'model':<20} {'ms/step':>9} {'min':>9} {'max':>9}  ratio")
    for name in models:
        ratio = median[name] / median[baseline[name]]
        print(
            f"{name:<20} {median[name]:9.1f} {min(times[name]):9.1f} {max(times[name]):9.1f}"
            f"  {ratio:.2f}x {baseline[name]}"
        )


if __name__ == "__main__":
    main()
