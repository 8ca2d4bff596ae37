"""The GPU benchmark: one prepared script for a lent GPU machine, ~9 minutes in all.

    python -m benchmarks.gpu --corpus PATH [--seconds 180] [--deadline 560] [--out DIR]

Every stage runs on the GPU, one after another (nothing else on the GPU meanwhile), and the
results file is rewritten as each stage ends, so a run stopped early keeps what it measured:

1. ours: `charrnn train --config gpu` for the budget (benchmarks.quality's run: the same
   Trainer, plus weight snapshots at early steps), then scored on the GPU in fp32 with TF32
   off, as `charrnn eval` scores: best.pt, last.pt, and the snapshots (the time to 1.88
   measured, not bounded by the first evaluation). The times to 1.47 and 1.42 come from the
   trainer's own bf16 evaluations, so they are bounded by its interval (eval_every steps).
2. sampling speed on the GPU at batch 1 and 64 (1,000 characters, after a warm-up).
3. the plain LSTM baseline (benchmarks.baselines) in bf16 on the same GPU for the same budget,
   scored every 3 s (on a GPU it overfits within seconds) and reported at its best, as early
   stopping would keep it.
4. if the deadline leaves room: the config as first prepared (2x1024, batch 128, dropout 0.25,
   no weight drop or EMA, the whole budget with no epoch bound), to show what gpu.toml's
   changes from it are worth.

Writes DIR/gpu-results.json (default benchmarks/_work) and prints it. `--device cpu --config
tiny --seconds 5` checks the script on a CPU; without either flag it refuses to run without
CUDA. Back on the machine that keeps the results, `python -m benchmarks.gpu --record FILE`
adds FILE as the GPU section of benchmarks/results.json and rewrites RESULTS.md.

On a GPU machine where nothing can be installed, run it from the checkout's root under that
machine's torch (charrnn then finds its configs and corpora beside the package).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from benchmarks import machine, quality
from benchmarks.baselines import synchronize
from benchmarks.report import report
from benchmarks.run import CORPUS_HELP, FORMAT, corpus_or_exit
from charrnn import config, rundir
from charrnn.errors import CharRNNError
from charrnn.sample import load_model

THRESHOLDS = (1.88, 1.47, 1.42)
# gpu.toml as it was prepared before any GPU run (stage 4)
AS_FIRST_PREPARED = ["dropout=0.25", "weight_drop=0.0", "ema=0.0", "batch_size=128",
                     "max_epochs=0"]  # fmt: skip
# A stage of ours takes its budget plus start-up and scoring: room left before starting one.
STAGE_OVERHEAD = 45.0
BASELINE_SCORED_EVERY = 3.0  # seconds
HERE = Path(__file__).parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, metavar="PATH", help=CORPUS_HELP)
    parser.add_argument("--config", default="gpu")
    parser.add_argument("--seconds", type=float, default=180, help="each training run's budget")
    parser.add_argument("--deadline", type=float, default=560, help="seconds for it all")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--out", type=Path, default=HERE / "_work")
    parser.add_argument("--record", type=Path, metavar="FILE",
                        help="add a gpu-results.json to RESULTS.md; no run")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    started = time.perf_counter()
    args = parse_args(argv)
    if args.record:
        try:
            record(args.record, HERE)
        except (OSError, ValueError, KeyError) as error:
            sys.exit(f"benchmarks.gpu: {args.record} not recorded: {error}")
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("benchmarks.gpu needs a CUDA GPU (or --device cpu to check the script)")
    if args.seconds <= 0:
        sys.exit(f"benchmarks.gpu: --seconds must be positive, got {args.seconds:g}")
    try:  # before a child process would stop on it with its traceback
        config.resolve(args.config, {})
    except CharRNNError as error:
        sys.exit(f"benchmarks.gpu: {error}")
    corpus = corpus_or_exit(args.corpus)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    results: dict[str, Any] = {"measured": stamp, "machine": machine.describe(),
                               "config": args.config, "budget_seconds": args.seconds}  # fmt: skip

    def stage(name: str, measure) -> Any:
        """Run one stage; its figures, or its error, go into the results file at once."""
        print(f"gpu: {name} ({time.perf_counter() - started:.0f} s in)", file=sys.stderr)
        try:
            results[name] = measure()
        except Exception as error:  # noqa: BLE001 -- a failed stage must not lose the others
            results[name] = {"error": f"{type(error).__name__}: {error}"}
        (args.out / "gpu-results.json").write_text(json.dumps(results, indent=2) + "\n")
        return results[name]

    sets = [f"device={args.device}"]
    ours = stage("ours", lambda: train(args, corpus, sets))
    if "error" in ours:  # the point of the script: stop, so that a fix can be run at once
        sys.exit(f"benchmarks.gpu: our run failed: {ours['error']}")
    stage("sampling", lambda: sampling_speed(ours["run_dir"], args.device))
    val_fraction = ours.get("val_fraction", 0.1)
    scored = max(10, round(args.seconds / BASELINE_SCORED_EVERY))  # evaluations in its budget
    stage("plain", lambda: quality.baseline("plain", corpus, args.seconds, "bf16", val_fraction,
                                            device=args.device, evaluations=scored))  # fmt: skip
    left = args.deadline - (time.perf_counter() - started)
    if left >= args.seconds + STAGE_OVERHEAD:
        stage("as_first_prepared", lambda: train(args, corpus, [*sets, *AS_FIRST_PREPARED]))
    else:
        results["as_first_prepared"] = {"skipped": f"{left:.0f} s left before the deadline"}
    results["wall_seconds"] = time.perf_counter() - started
    text = json.dumps(results, indent=2) + "\n"
    (args.out / "gpu-results.json").write_text(text)
    print(text)


def train(args: argparse.Namespace, corpus: Path, sets: list[str]) -> dict[str, Any]:
    """benchmarks.quality's run of ours, scored on the device, with the trainer's times to
    each threshold and when its best checkpoint was taken."""
    result = quality.ours(args.config, corpus, args.seconds, args.out, sets,
                          device=args.device, dynamic=False)  # fmt: skip
    lines = rundir.read_metrics(Path(result["run_dir"])).entries
    result["trainer_seconds_to"] = {
        str(t): next((x["time"] for x in lines if x["val_loss"] <= t), None) for t in THRESHOLDS
    }
    best = next((x for x in lines if x["step"] == result["best_step"]), None)
    result["best_at"] = None if best is None else {"seconds": best["time"], "epoch": best["epoch"]}
    return result


def sampling_speed(run_dir: str, device: str) -> dict[str, float]:
    """Characters per second of `charrnn sample` on the device, at batch 1 and 64."""
    generator = load_model(run_dir, device=device)
    speeds = {}
    for samples in (1, 64):
        generator.generate("\n", 50, num_samples=samples, seed=0)  # warm-up
        synchronize(device)
        begun = time.perf_counter()
        generator.generate("\n", 1000, num_samples=samples, seed=0)
        synchronize(device)
        speeds[f"batch{samples}"] = samples * 1000 / (time.perf_counter() - begun)
    return speeds


def record(path: Path, folder: Path) -> None:
    """`path` (a gpu-results.json) as the "gpu" section of folder/results.json, and
    folder/RESULTS.md rewritten from it; the other sections are kept as they are."""
    measured = json.loads(path.read_text())
    if not measured["machine"].get("gpu"):
        raise ValueError("it was measured without a GPU (a check of the script, --device cpu)")
    failed = [name for name in ("ours", "plain") if "error" in measured.get(name, {"error": 1})]
    if failed:
        raise ValueError(f"its stage(s) {', '.join(failed)} failed or are missing")
    section = {"mode": "gpu", "command": "python -m benchmarks.gpu", **measured}
    saved = folder / "results.json"
    results = json.loads(saved.read_text()) if saved.exists() else {}
    if results.get("format") != FORMAT:
        results = {"format": FORMAT, "tune": False, "machine": measured["machine"],
                   "corpus": "tinyshakespeare.txt", "sections": {}}  # fmt: skip
    results["sections"]["gpu"] = section
    text = report(results)  # first: a file it cannot report leaves both files as they were
    saved.write_text(json.dumps(results, indent=2) + "\n")
    (folder / "RESULTS.md").write_text(text)


if __name__ == "__main__":
    main()
