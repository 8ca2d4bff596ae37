"""Batch-1 sampling speed of an exported model (the README's onnxruntime loop) beside charrnn's.

    python -m benchmarks.export_speed --run checkpoints/my-run [--length 2000] [--repeats 5]

The run is exported to a temporary file, then three loops write the same number of characters
at batch 1, on the same thread count (charrnn's own choice for the model unless --threads):
examples/sample_onnx.py's `generate` (onnxruntime + numpy), and charrnn's sampler (what
`charrnn sample` runs, without the terminal) with exact fp32 weights and with int8 weights.
Each figure is the median of --repeats timed runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import runpy
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.machine import describe
from charrnn import export as exporting
from charrnn.sample import choose_threads, load_model, step_weight_bytes

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "sample_onnx.py"
PRIME = "\n"


def rate(write, length: int, repeats: int) -> float:
    """Median characters/s of `write()`, which writes `length` characters."""
    write()  # warm-up: first-call allocations, onnxruntime's graph preparation
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        write()
        rates.append(length / (time.perf_counter() - start))
    return statistics.median(rates)


def measure(run: str, length: int = 2000, repeats: int = 5, threads: int | None = None) -> dict:
    import onnxruntime

    exact = load_model(run, "cpu", int8=False)
    if threads is None:  # what charrnn sample picks at batch 1 for this model
        threads = choose_threads(1, step_weight_bytes(exact.stepper), torch.device("cpu"))
    exact.threads = threads
    int8 = load_model(run, "cpu", int8=True, threads=threads)
    default_is_int8 = load_model(run, "cpu").int8
    generate = runpy.run_path(str(SCRIPT))["generate"]
    with tempfile.TemporaryDirectory() as folder:
        done = exporting.export_run(run, Path(folder) / "model.onnx")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = onnxruntime.InferenceSession(
            str(done.path), options, providers=["CPUExecutionProvider"]
        )
        onnx_rate = rate(lambda: generate(session, PRIME, length, 0.8, seed=1), length, repeats)
    config = exact.model.config
    return {
        "machine": describe(),
        "model": f"{config.cell} {config.num_layers}x{config.hidden_size}, "
        f"{len(exact.vocab)} characters",
        "threads": threads,
        "length": length,
        "repeats": repeats,
        "onnxruntime": onnxruntime.__version__,
        "exporter": done.exporter,
        "chars_per_second": {
            "onnxruntime (examples/sample_onnx.py)": onnx_rate,
            "charrnn sample --exact": rate(
                lambda: exact.generate(PRIME, length, seed=1), length, repeats
            ),
            "charrnn sample --int8": rate(
                lambda: int8.generate(PRIME, length, seed=1), length, repeats
            ),
        },
        "charrnn_default": "--int8" if default_is_int8 else "--exact",
    }


def table(results: dict) -> str:
    machine = results["machine"]
    lines = [
        f"machine: {machine['cpu']}, {machine['cores']} cores; torch {machine['torch']}, "
        f"onnxruntime {results['onnxruntime']}, python {machine['python']}",
        f"model: {results['model']}; batch 1, {results['threads']} thread(s), "
        f"{results['length']} characters, median of {results['repeats']}",
        "",
        f"| {'loop':<46} | {'chars/s':>9} |",
        f"|{'-' * 48}|{'-' * 11}|",
    ]
    for name, value in results["chars_per_second"].items():
        default = " (charrnn's default)" if name.endswith(results["charrnn_default"]) else ""
        lines.append(f"| {name + default:<46} | {value:>9,.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run directory or a .pt file")
    parser.add_argument("--length", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="default: charrnn's choice at batch 1")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    results = measure(args.run, args.length, args.repeats, args.threads)
    print(json.dumps(results, indent=2) if args.json else table(results))


if __name__ == "__main__":
    main()
