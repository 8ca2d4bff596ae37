"""Batch-1 sampling speed of this checkout against another checkout of charrnn, in one run.

    git worktree add /tmp/charrnn-before <commit>
    python -m benchmarks.sampler_versions --before /tmp/charrnn-before \\
        --run benchmarks/_work/ours-default [--length 3000] [--rounds 5]

A sampler's speed on one machine is only comparable with another measured beside it (machines
here differ by up to 2x from session to session), so the two versions run in turns, each round
a fresh child process per version and sampler: `TextGenerator.generate` of the library (what
`charrnn sample` runs, without the terminal) at batch 1, as charrnn picks its threads and
weights by itself, then with int8 and with exact fp32 weights on 1 thread and on every core.
Same checkpoint, prime, seed and length for both; each figure is the median over the rounds.
The texts are compared too: a change meant to be only faster must write the same characters.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parents[1]

# Run in a child with PYTHONPATH set to one checkout: its charrnn samples `length` characters
# after one warm-up and prints the rate and a digest of the text.
CHILD = """
import hashlib, json, sys, time
import torch
from charrnn.sample import load_model
run, length, kind, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
if kind == "default":  # what `charrnn sample` picks: its own threads and weights
    generator = load_model(run, "cpu")
else:
    torch.set_num_threads(threads)
    generator = load_model(run, "cpu", int8=kind == "int8", threads=threads)
generator.generate("\\n", length, seed=1)
start = time.perf_counter()
text = generator.generate("\\n", length, seed=1)
seconds = time.perf_counter() - start
print(json.dumps({"rate": length / seconds, "digest": hashlib.sha256(text.encode()).hexdigest()}))
"""


def one(tree: Path, run: str, length: int, kind: str, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, run, str(length), kind, str(threads)],
        env=env, capture_output=True, text=True, check=True, cwd=tree,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(before: Path, run: str, length: int, rounds: int) -> dict:
    cores = torch.get_num_threads()
    trees = {"before": before.resolve(), "after": HERE}
    cases = [("default", cores)]  # charrnn's own choice of threads, int8 and step
    cases += [(kind, threads) for threads in sorted({1, cores}) for kind in ("int8", "exact")]
    found: dict[str, dict[str, list]] = {}
    for _ in range(rounds):
        for kind, threads in cases:
            for name, tree in trees.items():
                result = one(tree, str(Path(run).resolve()), length, kind, threads)
                case = "as charrnn picks" if kind == "default" else f"{kind}, {threads} thread(s)"
                entry = found.setdefault(case, {}).setdefault(name, [])
                entry.append(result)
    report = {}
    for case, versions in found.items():
        rates = {name: statistics.median(r["rate"] for r in results)
                 for name, results in versions.items()}  # fmt: skip
        digests = {name: {r["digest"] for r in results} for name, results in versions.items()}
        report[case] = {
            "before": rates["before"],
            "after": rates["after"],
            "speedup": rates["after"] / rates["before"],
            "same_text": digests["before"] == digests["after"] and len(digests["after"]) == 1,
        }
    return report


def main() -> None:
    from benchmarks.machine import describe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the other checkout's root")
    parser.add_argument("--run", required=True, help="a trained run directory or checkpoint")
    parser.add_argument("--length", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    report = measure(args.before, args.run, args.length, args.rounds)
    print(json.dumps(describe()))
    print(f"{'sampler':<24} {'before':>10} {'after':>10} {'speedup':>8}  same text")
    for case, row in report.items():
        print(f"{case:<24} {row['before']:>10,.0f} {row['after']:>10,.0f} "
              f"{row['speedup']:>7.2f}x  {row['same_text']}")  # fmt: skip
    print(json.dumps(report))


if __name__ == "__main__":
    main()
