"""The GPU benchmark: one prepared script of at most ~8 minutes for a lent GPU machine.

    python -m benchmarks.gpu [--corpus PATH] [--seconds 180]

Trains `configs/gpu.toml` on Tiny Shakespeare for its 3-minute budget with cuDNN's fused LSTM
and bf16 autocast, then records characters per second, the time to reach validation losses
1.88 / 1.47 / 1.42, the final loss, and sampling speed on the GPU at batch 1 and 64. Writes
benchmarks/_work/gpu-results.json (and prints it). It refuses to run without CUDA.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from benchmarks import machine
from benchmarks.run import CORPUS_HELP, corpus_or_exit, run_child

THRESHOLDS = (1.88, 1.47, 1.42)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, metavar="PATH", help=CORPUS_HELP)
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "_work")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks.gpu needs a CUDA GPU; it has not been run on this machine")
    args.corpus = corpus_or_exit(args.corpus)
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir = args.out / "gpu-run"
    command = [sys.executable, "-m", "charrnn", "train", "--config", "gpu",
               "--corpus", str(args.corpus), "--max-time", str(args.seconds),
               "--out", str(run_dir)]  # fmt: skip
    _, wall, _ = run_child(command)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    reached = {
        str(t): next((x["time"] for x in lines if x["val_loss"] <= t), None) for t in THRESHOLDS
    }
    from charrnn.sample import load_model

    generator = load_model(str(run_dir), device="cuda")
    import time

    timings = {}
    for samples, length in ((1, 1000), (64, 1000)):
        generator.generate("\n", 50, num_samples=samples, seed=0)
        torch.cuda.synchronize()
        start = time.perf_counter()
        generator.generate("\n", length, num_samples=samples, seed=0)
        torch.cuda.synchronize()
        timings[f"batch{samples}"] = samples * length / (time.perf_counter() - start)
    result = {
        "machine": machine.describe(),
        "wall_seconds": wall,
        "final_val_loss": lines[-1]["val_loss"],
        "best_val_loss": min(x["val_loss"] for x in lines),
        "train_chars_per_sec": [x["chars_per_sec"] for x in lines],
        "seconds_to": reached,
        "sampling_chars_per_sec": timings,
    }
    (args.out / "gpu-results.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
