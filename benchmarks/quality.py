"""The quality section: charrnn's run and its baselines, each for the same time budget, then
every figure measured the way `charrnn eval` measures (fp32, whole validation split).

After our run (benchmarks.driver; the same Trainer as `charrnn train`), outside its budget:

- best.pt and last.pt are scored in fp32 over the whole validation split (what
  `charrnn eval RUN --split val` prints), the headline; the trainer's own evaluations run at
  the training precision (bf16 on AMX CPUs) and are reported beside them, named as such;
- the weight snapshots of the early steps are scored the same way, which measures the time to
  1.88 between two snapshots instead of bounding it by the first periodic evaluation;
- best.pt is scored with dynamic evaluation (charrnn.dynamic, its default lr and decay);
- the real run's speed is read from metrics.jsonl.

The plain baseline trains at our run's precision (bf16 autocast where ours used it) and, when
that is not fp32, also in fp32; the lesson-style baseline at our precision.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.driver import read_snapshots
from benchmarks.process import run_child
from charrnn import checkpoint as ckpt
from charrnn import rundir
from charrnn.corpus import load_data
from charrnn.dynamic import dynamic_evaluate
from charrnn.scoring import evaluate

TARGET_LOSS = 1.88


def run_name(config: str, sets: list[str]) -> str:
    """The run directory's name under the work folder: the config, and the settings changed."""
    changed = [pair for pair in sets if not pair.startswith("val_fraction=")]
    slug = re.sub(r"[^\w.=-]+", "_", "-".join(changed))
    return f"ours-{Path(config).stem}" + (f"-{slug}" if slug else "")


def ours(config: str, corpus: Path, seconds: float, workdir: Path, sets: list[str], *,
         device: str = "cpu", dynamic: bool = True) -> dict:  # fmt: skip
    """Train with the driver, then measure everything after the run (see the docstring) on
    `device` (a GPU run is scored on its GPU, in fp32 with TF32 off)."""
    run_dir = workdir / run_name(config, sets)
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [sys.executable, "-m", "benchmarks.driver", "--config", config, "--corpus",
               str(corpus), "--max-time", str(seconds), "--out", str(run_dir),
               *(f"--set={pair}" for pair in sets)]  # fmt: skip
    stdout, wall, peak = run_child(command)
    driver = json.loads(stdout)
    lines = rundir.read_metrics(run_dir).entries
    settings = driver["settings"]
    return {
        "config": config,
        "sets": sets,
        "run_dir": str(run_dir),
        "budget_seconds": seconds,
        "wall_seconds": wall,
        "precision": driver["precision"],
        "val_fraction": settings["val_fraction"],
        "steps": lines[-1]["step"],
        "epochs": lines[-1]["epoch"],
        "final_train_loss": lines[-1]["train_loss"],
        "peak_rss_mb": peak,
        "trainer": trainer_figures(lines),
        "speed": real_speed(lines, driver, settings),
        "curve": [(x["time"], x["val_loss"]) for x in lines],
        "settings": settings,  # as trained (auto_size's choice in place)
        "sizing": driver.get("sizing"),
        **after_the_run(run_dir, settings, driver, torch.device(device), dynamic),
    }


def trainer_figures(lines: list[dict]) -> dict:
    """What the trainer itself logged, at the training precision."""
    reached = next((x for x in lines if x["val_loss"] <= TARGET_LOSS), None)
    return {
        "final_val_loss": lines[-1]["val_loss"],
        "best_val_loss": min(x["val_loss"] for x in lines),
        "first_eval": {"step": lines[0]["step"], "seconds": lines[0]["time"]},
        "seconds_to_target": reached["time"] if reached else None,
    }


def real_speed(lines: list[dict], driver: dict, settings: dict) -> dict:
    """Characters per second of the real run: between evaluations (metrics.jsonl), and over
    the whole run, evaluations and checkpoints included."""
    windows = [x["chars_per_sec"] for x in lines if x.get("chars_per_sec")]
    chars = driver["steps"] * settings["batch_size"] * settings["seq_length"]
    return {
        "between_evaluations_median": statistics.median(windows) if windows else None,
        "between_evaluations_range": [min(windows), max(windows)] if windows else None,
        "overall": chars / driver["seconds"],
    }


def after_the_run(run_dir: Path, settings: dict, driver: dict, device: torch.device,
                  dynamic: bool) -> dict:  # fmt: skip
    """fp32 scores of best.pt, last.pt and the snapshots; dynamic evaluation of best.pt."""
    start = time.perf_counter()
    val = load_data(settings["corpus"], settings["val_fraction"]).val
    batch, seq = settings["batch_size"], settings["seq_length"]
    best, last = ckpt.load(run_dir / rundir.BEST), ckpt.load(run_dir / rundir.LAST)
    model, _ = ckpt.restore_model(best)
    model.to(device)
    exact_fp32()

    def fp32(weights: dict[str, torch.Tensor]) -> float:
        model.load_state_dict(weights)
        return evaluate(model, val, batch, seq, device, None)[0]

    scores = {
        "final_val_loss": fp32(last["model"]),
        "best_val_loss": fp32(best["model"]),
        "best_step": best["progress"]["step"],
        "val_characters": len(val) - 1,
    }
    snapshots = read_snapshots(run_dir)
    curve = [(s["step"], s["seconds"], fp32(s["model"])) for s in snapshots]
    scores["snapshots"] = {
        "curve": curve,
        "write_seconds_in_budget": driver["snapshot_seconds"],
        "target": time_to_target(curve),
    }
    scores["eval_seconds"] = time.perf_counter() - start
    if dynamic:
        model.load_state_dict(best["model"])
        begun = time.perf_counter()
        score = dynamic_evaluate(model, val, device=device)
        scores["dynamic"] = {**score.to_json(), "checkpoint": rundir.BEST,
                             "seconds": time.perf_counter() - begun}  # fmt: skip
    return scores


def exact_fp32() -> None:
    """On a GPU, fp32 means fp32: torch lets cuDNN (and may let matrix products) round inputs
    to TF32, which `charrnn eval` on a CPU never does. No effect on a CPU."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def time_to_target(curve: list[tuple[int, float, float]]) -> dict[str, Any]:
    """The first snapshot at or below the target, and the last one above it before that."""
    for index, (step, seconds, loss) in enumerate(curve):
        if loss <= TARGET_LOSS:
            before = curve[index - 1] if index else None
            return {
                "reached": True,
                "step": step,
                "seconds": seconds,
                "loss": loss,
                "previous": None
                if before is None
                else {"step": before[0], "seconds": before[1], "loss": before[2]},  # fmt: skip
            }
    return {"reached": False, "last_snapshot_step": curve[-1][0] if curve else None}


def baseline(recipe: str, corpus: Path, seconds: float, precision: str, val_fraction: float,
             threads: int = 0, device: str = "cpu", evaluations: int = 10):  # fmt: skip
    # Scored `evaluations` times in its budget (inside it, as charrnn's own evaluations are),
    # so the baseline is also reported at its best moment, as early stopping would keep it.
    command = [sys.executable, "-m", "benchmarks.baselines", recipe, "--corpus", str(corpus),
               "--seconds", str(seconds), "--precision", precision,
               "--val-fraction", str(val_fraction), "--threads", str(threads),
               "--eval-every", str(seconds / evaluations), "--device", device]  # fmt: skip
    stdout, _, _ = run_child(command)
    result = json.loads(stdout)
    scores = [(loss, at) for at, loss in result["curve"]] + [(result["final_val_loss"], seconds)]
    result["best_val_loss"], result["best_seconds"] = min(scores)
    return result


def measure(config: str, corpus: Path, seconds: float, workdir: Path, *, sets: list[str],
            lesson: bool, fp32_plain: bool, baselines: bool = True,
            step=lambda name: None) -> dict:  # fmt: skip
    """Every run of the section, in one go: ours, then the baselines beside it."""
    step(f"quality: charrnn {config}, {seconds:.0f} s (+ fp32 and dynamic scoring after it)")
    results: dict[str, Any] = {"ours": ours(config, corpus, seconds, workdir, sets)}
    if not baselines:
        return results
    precision = "bf16" if results["ours"]["precision"] == "bf16" else "fp32"
    val_fraction = results["ours"]["val_fraction"]
    step(f"quality: plain LSTM baseline ({precision}), {seconds:.0f} s")
    results["plain"] = baseline("plain", corpus, seconds, precision, val_fraction)
    if fp32_plain and precision != "fp32":
        step(f"quality: plain LSTM baseline (fp32), {seconds:.0f} s")
        results["plain_fp32"] = baseline("plain", corpus, seconds, "fp32", val_fraction)
    if lesson:
        step(f"quality: lesson-style LSTM baseline ({precision}), {seconds:.0f} s")
        results["lesson"] = baseline("lesson", corpus, seconds, precision, val_fraction)
    return results
