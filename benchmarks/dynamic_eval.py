"""Choose dynamic evaluation's learning rate and decay on held-out training text.

    python -m benchmarks.run --full --only quality --tune --ours-only   # ~13 min, tuning corpus
    python -m benchmarks.dynamic_eval benchmarks/_work/tune/ours-default [--chars 20000]

Scores the run's validation split with `charrnn eval --dynamic` (charrnn.dynamic) for every
pair of the grid and prints them, best first, with the static loss of the same layout. The run
must have been trained on a tuning corpus (benchmarks/tuning.py: the training split alone,
whose last 5% it held out): that 5% is then text the model never trained on and that is not the
validation split RESULTS.md reports. Any other run is refused, unless --any-run (for trying the
script out). The winner goes into charrnn.use_config.DynamicConfig's defaults by hand.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

from benchmarks.tuning import is_tuning_corpus
from charrnn import checkpoint as ckpt
from charrnn.corpus import load_data
from charrnn.dynamic import SEQ_LENGTH, dynamic_evaluate

# Around the defaults a first trial chose (NOTES.md): about 20 runs of 20-50 s for the default
# model on Tiny Shakespeare's 50,000 held-out characters (~15 minutes).
LRS = (2e-4, 5e-4, 7e-4, 1e-3, 2e-3)
DECAYS = (0.0, 3e-4, 1e-3, 3e-3)


def grid_search(run: Path, lrs, decays, seq_lengths, chars: int, any_run: bool) -> dict:
    checkpoint = ckpt.load(run)  # best.pt of a run directory
    config = checkpoint["train_config"]
    if not (any_run or is_tuning_corpus(config["corpus"])):
        raise SystemExit(
            f"dynamic_eval: {run} was trained on {config['corpus']}, not on a tuning corpus; "
            "train one with `python -m benchmarks.run --full --only quality --tune "
            "--ours-only` (or pass --any-run to try the script out)"
        )
    model, vocab = ckpt.restore_model(checkpoint)
    corpus = checkpoint.get("corpus_path") or config["corpus"]
    val = load_data(corpus, config["val_fraction"], vocab).val
    if chars:
        val = val[: chars + 1]
    rows = []
    for lr, decay, seq in itertools.product(lrs, decays, seq_lengths):
        start = time.perf_counter()
        score = dynamic_evaluate(model, val, lr=lr, decay=decay, seq_length=seq,
                                 device=torch.device("cpu"))  # fmt: skip
        rows.append({**score.to_json(), "seconds": time.perf_counter() - start})
        print(f"lr {lr:<8g} decay {decay:<8g} chunks {seq:<4} dynamic {score.loss:.4f}  "
              f"static {score.static_loss:.4f}  gain {score.gain:+.4f}  "
              f"({rows[-1]['seconds']:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip
    rows.sort(key=lambda row: row["loss"])
    return {"run": str(run), "corpus": config["corpus"], "characters": len(val) - 1,
            "results": rows, "best": rows[0]}  # fmt: skip


def numbers(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run trained with benchmarks.run --tune")
    parser.add_argument("--lrs", type=numbers, default=list(LRS), help="comma-separated")
    parser.add_argument("--decays", type=numbers, default=list(DECAYS), help="comma-separated")
    parser.add_argument(
        "--seq-lengths",
        type=lambda t: [int(x) for x in numbers(t)],
        default=[SEQ_LENGTH],
        help="characters between updates, comma-separated",
    )
    parser.add_argument(
        "--chars", type=int, default=0, help="score only the first N held-out characters (0 = all)"
    )
    parser.add_argument("--any-run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()  # fmt: skip
    found = grid_search(args.run, args.lrs, args.decays, args.seq_lengths, args.chars,
                        args.any_run)  # fmt: skip
    best = found["best"]
    print(json.dumps(found, indent=2) if args.out is None else "", end="")
    if args.out:
        args.out.write_text(json.dumps(found, indent=2) + "\n")
    print(f"best on {found['characters']:,} held-out training characters: lr {best['lr']:g}, "
          f"decay {best['decay']:g}, chunks of {best['seq_length']}: {best['loss']:.4f} vs "
          f"{best['static_loss']:.4f} static ({best['gain']:+.4f})", file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
