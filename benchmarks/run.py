"""Run every benchmark in one go and write the report.

    python -m benchmarks.run --full     # ~35 minutes: 10-minute training budgets, the report
    python -m benchmarks.run --quick    # under 3 minutes: short budgets, same harness
    python -m benchmarks.run --quick --corpus PATH   # on another text (or an offline copy)

The corpus is Tiny Shakespeare unless --corpus says otherwise: the first run downloads it into
the cache (benchmarks/tiny_shakespeare.py says where, and checks its sha256).

Run it alone on the machine: two CPU-heavy jobs at once slow LSTM training many times over.
Every comparison is measured in the same run, beside its baseline. --full writes
benchmarks/RESULTS.md and benchmarks/results.json; --quick writes under benchmarks/_work/
unless --out says otherwise (so a quick check never overwrites the real report).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import corpora, data_scale, machine, sampling, throughput, tiny_shakespeare
from charrnn.errors import CorpusError

HERE = Path(__file__).parent
NANOGPT_CPU = {"val_loss": 1.886, "seconds": 148}  # nanoGPT's baby GPT on this machine (issue)
NANOGPT_A100 = 1.4697
TARGET_LOSS = 1.88
CORPUS_HELP = (
    "the text to train and score on (default: Tiny Shakespeare, downloaded once into the "
    "cache, $CHARRNN_CACHE or ~/.cache/charrnn)"
)


def corpus_or_exit(path: Path | None) -> Path:
    """--corpus, or Tiny Shakespeare from the cache or the network; else one line and exit 1."""
    try:
        return tiny_shakespeare.corpus(path)
    except CorpusError as error:
        print(f"benchmarks: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def run_child(command: list[str], env: dict | None = None) -> tuple[str, float, float]:
    """Run a command; returns (stdout, wall seconds, peak RSS in MB of that process)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, **(env or {})})  # fmt: skip
    stdout, stderr = process.communicate()
    # wait4 is not available after communicate(); the children's peak is the same figure here,
    # since each child runs alone and RUSAGE_CHILDREN keeps the largest of them.
    import resource

    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-2000:]}")
    return stdout, time.perf_counter() - start, peak


def ours(config: str, corpus: Path, seconds: float, workdir: Path) -> dict:
    run_dir = workdir / f"ours-{config}"
    if run_dir.exists():
        for f in run_dir.iterdir():
            f.unlink()
    command = [sys.executable, "-m", "charrnn", "train", "--config", config, "--corpus",
               str(corpus), "--max-time", str(seconds), "--out", str(run_dir)]  # fmt: skip
    _, wall, peak = run_child(command)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    reached = next((x["time"] for x in lines if x["val_loss"] <= TARGET_LOSS), None)
    return {
        "config": config,
        "budget_seconds": seconds,
        "wall_seconds": wall,
        "final_val_loss": lines[-1]["val_loss"],
        "best_val_loss": min(x["val_loss"] for x in lines),
        "final_train_loss": lines[-1]["train_loss"],
        "steps": lines[-1]["step"],
        "epochs": lines[-1]["epoch"],
        "seconds_to_target": reached,
        # Below the target at the very first evaluation: the time is an upper bound.
        "target_at_first_eval": lines[0]["val_loss"] <= TARGET_LOSS,
        "peak_rss_mb": peak,
        "curve": [(x["time"], x["val_loss"]) for x in lines],
    }


def baseline(recipe: str, corpus: Path, seconds: float) -> dict:
    command = [sys.executable, "-m", "benchmarks.baselines", recipe, "--corpus", str(corpus),
               "--seconds", str(seconds)]  # fmt: skip
    stdout, _, _ = run_child(command)
    return json.loads(stdout)


def gate_cells() -> str:
    stdout, _, _ = run_child([sys.executable, "-m", "benchmarks.gate_cells", "--repeats", "5"])
    return stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--full", action="store_true")
    mode.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="the tiny config and a few seconds: proves the harness works",
    )
    parser.add_argument("--skip-lesson", action="store_true",
                        help="--full without the 10-minute lesson-style baseline")  # fmt: skip
    parser.add_argument("--corpus", type=Path, metavar="PATH", help=CORPUS_HELP)
    parser.add_argument("--out", type=Path, help="folder for RESULTS.md and results.json")
    parser.add_argument("--update", choices=("data_scale", "sampling", "corpora", "finetune"),
                        help="re-measure one section of results.json and re-render")  # fmt: skip
    parser.add_argument("--finetune-corpus", type=Path, metavar="PATH",
                        help="the fine-tuning benchmark's unrelated text (default: the World "
                        "English Bible, benchmarks/finetune_text.py)")  # fmt: skip
    args = parser.parse_args()  # fmt: skip
    if args.update not in ("data_scale", "corpora", "finetune"):  # these bring their own texts
        args.corpus = corpus_or_exit(args.corpus)

    if args.tiny:
        config, budget, lesson, repeats, length, megabytes = "tiny", 3.0, False, 2, 100, 1
        quality_chars = 300
    elif args.quick:
        config, budget, lesson, repeats, length, megabytes = "default", 40.0, False, 3, 500, 20
        quality_chars = 3000
    else:
        config, budget, lesson, repeats, length, megabytes = "default", 600.0, True, 5, 2000, 100
        quality_chars = 20000
    out = args.out or (HERE if args.full else HERE / "_work")
    workdir = HERE / "_work"
    workdir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    if args.update:
        results = json.loads((out / "results.json").read_text())
        print(f"[benchmarks] re-measuring {args.update} ...", file=sys.stderr, flush=True)
        if args.update == "data_scale":
            results["data_scale"] = data_scale.measure(megabytes)
        elif args.update in ("corpora", "finetune"):
            section = argparse.Namespace(scale=args.update == "corpora", tiny=args.tiny,
                                         finetune=args.update == "finetune", megabytes=1000,
                                         finetune_corpus=args.finetune_corpus)  # fmt: skip
            results.update(corpora.measure(section))
        else:
            held_out = args.corpus.read_text(encoding="utf-8")[-quality_chars:]
            results["sampling"] = sampling.measure(config, length=length, repeats=repeats,
                                                   checkpoint=str(workdir / f"ours-{config}"),
                                                   text=held_out)  # fmt: skip
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        results.setdefault("updated", {})[args.update] = stamp
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "RESULTS.md").write_text(report(results))
        return

    results: dict = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "tiny" if args.tiny else "quick" if args.quick else "full",
        "machine": machine.describe(),
        "corpus": str(args.corpus.name),
    }
    step = lambda name: print(f"[benchmarks] {name} ...", file=sys.stderr, flush=True)  # noqa: E731
    step("training throughput")
    results["throughput"] = throughput.measure(config, repeats=max(3, repeats))
    step(f"data scale ({megabytes} MB)")
    results["data_scale"] = data_scale.measure(megabytes)
    step(f"quality: charrnn {config}, {budget:.0f} s")
    results["ours"] = ours(config, args.corpus, budget, workdir)
    step("sampling speed (with the weights just trained)")
    held_out = args.corpus.read_text(encoding="utf-8")[-quality_chars:]
    results["sampling"] = sampling.measure(config, length=length, repeats=repeats,
                                           checkpoint=str(workdir / f"ours-{config}"),
                                           text=held_out)  # fmt: skip
    step(f"quality: plain LSTM baseline, {budget:.0f} s")
    results["plain"] = baseline("plain", args.corpus, budget)
    if lesson and not args.skip_lesson:
        step(f"quality: lesson-style LSTM baseline, {budget:.0f} s")
        results["lesson"] = baseline("lesson", args.corpus, budget)
        step("gate-level cells")
        results["gate_cells"] = gate_cells()
        step("corpora at scale (1 GB) and fine-tuning (10 + 2 + 2 minutes)")
        results.update(corpora.measure(argparse.Namespace(
            scale=True, finetune=True, tiny=False, megabytes=1000,
            finetune_corpus=args.finetune_corpus)))  # fmt: skip

    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "RESULTS.md").write_text(report(results))
    print(f"wrote {out / 'RESULTS.md'}", file=sys.stderr)


def report(r: dict) -> str:
    m, t, s, d, o, p = (r[k] for k in ("machine", "throughput", "sampling", "data_scale",
                                        "ours", "plain"))  # fmt: skip
    lines = [
        "# Benchmark results",
        "",
        f"Measured {r['date']} by `python -m benchmarks.run --{r['mode']}` on: {m['cpu']}, "
        f"{m['cores']} cores ({m['threads']} torch threads), torch {m['torch']}, Python "
        f"{m['python']}, fast bf16 (AMX/AVX512-BF16): {m['fast_bf16']}, "
        f"GPU: {m['gpu'] or 'none'}.",
        f"Corpus: {r['corpus']} (first 90% train, last 10% validation; loss = mean cross-entropy "
        "in nats per character over the whole validation split).",
        *[
            f"Section {name} re-measured {when} (same machine, after a fix to that measurement)."
            for name, when in r.get("updated", {}).items()
        ],
        "",
        "## 1. Quality per CPU-minute",
        "",
        "| model | budget | final val loss | best val loss | train loss | steps | time to 1.88 |",
        "|---|---|---|---|---|---|---|",
        f"| charrnn `{o['config']}` | {o['budget_seconds']:.0f} s | "
        f"**{o['final_val_loss']:.4f}** | "
        f"{o['best_val_loss']:.4f} | {o['final_train_loss']:.3f} | {o['steps']:,} "
        f"({o['epochs']:.1f} epochs) | "
        f"{'<= ' if o.get('target_at_first_eval') else ''}{_seconds(o['seconds_to_target'])} |",
        f"| plain LSTM baseline (1x512, fp32) | {p['seconds']:.0f} s | {p['final_val_loss']:.4f} | "
        f"- | {p['final_train_loss']:.3f} | {p['steps']:,} | - |",
    ]
    if "lesson" in r:
        q = r["lesson"]
        lines.append(
            f"| lesson-style LSTM (one-hot, 2x512, dropout 0.5) | {q['seconds']:.0f} s | "
            f"{q['final_val_loss']:.4f} | - | {q['final_train_loss']:.3f} | {q['steps']:,} | - |"
        )
    lines += [
        f"| nanoGPT baby GPT, CPU (reference, from the issue) | {NANOGPT_CPU['seconds']} s | "
        f"{NANOGPT_CPU['val_loss']} | | | 2,000 | {NANOGPT_CPU['seconds']} s |",
        f"| nanoGPT on an A100 (reference) | ~180 s | {NANOGPT_A100} | | | | |",
        "",
        f"charrnn / plain baseline: {o['final_val_loss'] / p['final_val_loss']:.3f} of its loss "
        f"({p['final_val_loss'] - o['final_val_loss']:+.4f} nats/char better). The time to 1.88 "
        "is the time of the first periodic evaluation at or below it (evaluation time included).",
        "",
        "## 2. Training throughput",
        "",
        f"Default model, a full training step (forward, backward, clip, AdamW) at batch "
        f"{t['batch_size']} x {t['seq_length']}, {t['precision']}, {t['threads']} threads:",
        "",
        f"- **{t['chars_per_sec']:,.0f} characters/s** (range {t['chars_per_sec_range'][0]:,.0f}"
        f"-{t['chars_per_sec_range'][1]:,.0f})",
        f"- {t['gflops']:.0f} GFLOP/s achieved = **{t['fraction_of_peak']:.0%}** of the measured "
        f"GEMM peak at this thread count (fp32 {t['gemm_peak_gflops']['fp32']:.0f}, bf16 "
        f"{t['gemm_peak_gflops']['bf16']:.0f} GFLOP/s, 2048x2048 products)",
        f"- peak RSS of the whole {o['budget_seconds']:.0f} s training run: "
        f"{o['peak_rss_mb']:,.0f} MB",
        "",
        "## 3. Sampling",
        "",
        "| sampler | characters/s (median) | range |",
        "|---|---|---|",
    ]
    names = {
        "charrnn_batch1": "charrnn --exact, batch 1",
        "charrnn_int8_batch1": "charrnn (int8, the default on CPU), batch 1",
        "charrnn_batch64": "charrnn --exact, --num-samples 64 (total)",
        "bare_nn_lstm_per_char": "bare loop: nn.LSTM called per character (1 thread)",
        "bare_lstmcell_per_char": "bare loop: nn.LSTMCell per character (1 thread)",
    }
    for key, name in names.items():
        if key in s:
            median, (low, high) = s[key]
            lines.append(f"| {name} | {median:,.0f} | {low:,.0f}-{high:,.0f} |")
    if "bare_nn_lstm_per_char" in s:
        speedup = s["charrnn_batch1"][0] / s["bare_nn_lstm_per_char"][0]
        lines += ["", f"charrnn at batch 1 is {speedup:.1f}x the bare nn.LSTM loop."]
    if "int8_quality" in s:
        q = s["int8_quality"]
        lines += [
            "",
            f"Cost of --int8, measured on the trained weights over the last "
            f"{q['characters']:,} characters of the corpus, one step at a time: loss "
            f"{q['int8_loss']:.4f} vs {q['exact_loss']:.4f} exact "
            f"({q['int8_loss'] - q['exact_loss']:+.4f} nats/char).",
        ]
    lines += [
        "",
        "## 4. Scale of data",
        "",
        f"A {d['file_mb']:.0f} MB corpus (built from the bundled one, never committed) is read, "
        f"encoded ({d['encoded_dtype']}, {d['encoded_mb']:.0f} MB) and batched in "
        f"**{d['seconds']:.1f} s**; memory grew by {d['growth_mb']:.0f} MB = "
        f"**{d['growth_over_file']:.1f}x** the file size (peak RSS {d['peak_rss_mb']:.0f} MB, "
        f"of which {d['rss_before_mb']:.0f} MB is Python and torch before loading).",
        "",
    ]
    if "gate_cells" in r:
        lines += ["## 5. Gate-level cells against torch", "", "```", r["gate_cells"].rstrip(),
                  "```", ""]  # fmt: skip
    lines += corpora.report(r.get("corpora"), r.get("finetune"))
    notes = HERE / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.0f} s"


if __name__ == "__main__":
    main()
