"""Run the benchmarks, all sections or some, and write the report.

    python -m benchmarks.run --full                  # every section, ~80 minutes (see below)
    python -m benchmarks.run --full --only quality   # one section; the others' figures are kept
    python -m benchmarks.run --quick                 # ~8 minutes: short budgets, same harness
    python -m benchmarks.run --quick --corpus PATH   # on another text (or an offline copy)
    python -m benchmarks.run --full --only quality --tune --set learning_rate=3e-3
                                                     # choose settings on held-out training text

Sections (--only NAME, repeatable or comma-separated). Each makes its comparisons in one run,
beside its baselines; --full durations on the 2-core reference machine:

    throughput  the synthetic training step against the GEMM peak                  ~1 min
    ingest      100 MB of ASCII, Cyrillic and CJK text: load time and memory       ~2 min
    quality     ours (600 s, then fp32 / snapshot / dynamic scoring, ~3 min), the
                plain baseline at our precision and in fp32, the lesson-style one  ~45 min
    speeds      the default against the plain baseline at full speed, on one
                thread and in fp32 (+ the fixed 1x768 default with --fixed)        ~70 min
    sampling    every sampler on 1 thread and on all cores (the quality run's
                weights when there are some)                                       ~3 min
    gate_cells  gate-level cells against torch's                                   ~1 min
    corpora     1 GB corpus: encode speed, RssAnon, start-up on a cache hit      ~10 min
    finetune    10 min on the plays, then 2 min fine-tune vs 2 min from scratch  ~15 min

--tune runs the quality section on a corpus of the training split alone, scoring its last 5%
(benchmarks/tuning.py): the validation split RESULTS.md reports is never read while choosing
settings. Its report goes to benchmarks/_work/tune/ unless --out says otherwise.

The corpus is Tiny Shakespeare unless --corpus says otherwise: the first run downloads it into
the cache (benchmarks/tiny_shakespeare.py says where, and checks its sha256).

Run it alone on the machine: two CPU-heavy jobs at once slow LSTM training many times over.
--full writes benchmarks/RESULTS.md and benchmarks/results.json; --quick writes under
benchmarks/_work/ unless --out says otherwise (so a quick check never overwrites the report).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import (
    corpora,
    data_scale,
    machine,
    quality,
    sampling,
    speeds,
    throughput,
    tiny_shakespeare,
    tuning,
)
from benchmarks.process import run_child
from benchmarks.report import report
from charrnn.errors import CorpusError

HERE = Path(__file__).parent
SECTIONS = ("throughput", "ingest", "quality", "speeds", "sampling", "gate_cells", "corpora",
            "finetune")  # fmt: skip
# long or their own texts: --full or --only
FULL_ONLY = {"speeds", "gate_cells", "corpora", "finetune"}
NEEDS_CORPUS = {"quality", "speeds", "sampling"}
SCRIPTS = ("ascii", "cyrillic", "cjk")
# results.json: {"format", "machine", "corpus", "tune", "sections": {name: {"machine", ...}}}
FORMAT = 2
CORPUS_HELP = (
    "the text to train and score on (default: Tiny Shakespeare, downloaded once into the "
    "cache, $CHARRNN_CACHE or ~/.cache/charrnn)"
)
# mode: config, budget s, repeats, sample length, MB to ingest, held-out chars for int8, lesson
MODES = {
    "tiny": ("tiny", 3.0, 2, 100, 1, 300, False),
    "quick": ("default", 40.0, 3, 500, 20, 3000, False),
    "full": ("default", 600.0, 5, 2000, 100, 20000, True),
}

__all__ = ["CORPUS_HELP", "corpus_or_exit", "main", "run_child"]  # gpu.py imports the first two


def corpus_or_exit(path: Path | None) -> Path:
    """--corpus, or Tiny Shakespeare from the cache or the network; else one line and exit 1."""
    try:
        return tiny_shakespeare.corpus(path)
    except CorpusError as error:
        print(f"benchmarks: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--full", action="store_true")
    mode.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="the tiny config and a few seconds: proves the harness works",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="SECTION",
        help=f"measure only these sections ({', '.join(SECTIONS)}); the "
        "others' figures in results.json are kept",
    )
    parser.add_argument(
        "--tune",
        action="store_true",
        help="quality on held-out training text, for choosing settings",
    )
    parser.add_argument("--config", help="our run's config (default: default, or tiny)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of our run, as in a config file (repeatable)",
    )
    parser.add_argument(
        "--skip-lesson", action="store_true", help="without the 10-minute lesson-style baseline"
    )
    parser.add_argument(
        "--skip-fp32-baseline",
        action="store_true",
        help="without the plain baseline's fp32 run (when ours is not fp32)",
    )
    parser.add_argument(
        "--ours-only",
        action="store_true",
        help="quality without any baseline (for tuning: one run, ~13 minutes)",
    )
    parser.add_argument(
        "--fixed",
        action="store_true",
        help="speeds: also the fixed 1x768 default at full speed (10 more minutes)",
    )
    parser.add_argument("--corpus", type=Path, metavar="PATH", help=CORPUS_HELP)
    parser.add_argument("--finetune-corpus", type=Path, metavar="PATH",
                        help="the fine-tuning section's unrelated text (default: the World "
                        "English Bible, benchmarks/finetune_text.py)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="folder for RESULTS.md and results.json")
    args = parser.parse_args(argv)  # fmt: skip
    args.mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    args.sections = chosen_sections(parser, args)
    return args


def chosen_sections(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    if args.only:
        names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
        unknown = [n for n in names if n not in SECTIONS]
        if unknown:
            parser.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    else:
        names = list(SECTIONS) if args.full else [s for s in SECTIONS if s not in FULL_ONLY]
    if args.tune and not set(names) <= {"quality", "speeds"}:
        parser.error("--tune is for the quality and speeds sections: add --only quality")
    return [s for s in SECTIONS if s in names]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if NEEDS_CORPUS & set(args.sections):  # before anything is written: offline, one line
        args.corpus = corpus_or_exit(args.corpus)
    workdir = HERE / "_work" / ("tune" if args.tune else "")
    out = args.out or (workdir if args.tune or not args.full else HERE)
    workdir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    results = previous_results(out, args)
    for name in args.sections:
        print(f"[benchmarks] {name} ...", file=sys.stderr, flush=True)
        figures = measure(name, args, workdir)
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        results["sections"][name] = {"measured": stamp, "mode": args.mode,
                                     "machine": machine.describe(), **figures}  # fmt: skip
        # Written after every section, so a long run that is stopped keeps what it measured.
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "RESULTS.md").write_text(report(results))
    print(f"wrote {out / 'RESULTS.md'}", file=sys.stderr)


def previous_results(out: Path, args: argparse.Namespace) -> dict:
    """results.json of `out` to add sections to (with --only), or a fresh one."""
    fresh = {"format": FORMAT, "tune": args.tune, "sections": {}}
    path = out / "results.json"
    if args.only and path.exists():
        saved = json.loads(path.read_text())
        if saved.get("format") == FORMAT and saved.get("tune", False) == args.tune:
            fresh = saved
            for section in fresh["sections"].values():  # measured before sections named theirs
                section.setdefault("machine", saved["machine"])
    fresh["machine"] = machine.describe()  # the latest run's
    corpus = args.corpus.name if args.corpus else fresh.get("corpus", "tinyshakespeare.txt")
    fresh["corpus"] = corpus
    return fresh


def measure(name: str, args: argparse.Namespace, workdir: Path) -> dict:
    config, budget, repeats, length, megabytes, held_out, lesson = MODES[args.mode]
    config = args.config or config
    step = lambda line: print(f"[benchmarks] {line} ...", file=sys.stderr, flush=True)  # noqa: E731
    if name == "throughput":
        # The shape the quality run trained (auto_size's choice, in its config.toml), so the
        # synthetic step is the real run's; the config's own shape when there is no such run.
        chosen = workdir / quality.run_name(config, args.set) / "config.toml"
        return throughput.measure(str(chosen) if chosen.is_file() else config,
                                  repeats=max(3, repeats))  # fmt: skip
    if name == "ingest":
        return {"scripts": {script: data_scale.measure(megabytes, script) for script in SCRIPTS}}
    if name == "quality":
        corpus = tuning.tuning_corpus(args.corpus) if args.tune else args.corpus
        sets = [*args.set, *([f"val_fraction={tuning.TUNE_FRACTION}"] if args.tune else [])]
        return quality.measure(config, corpus, budget, workdir, sets=sets, step=step,
                               lesson=lesson and not args.skip_lesson,
                               fp32_plain=not args.skip_fp32_baseline,
                               baselines=not args.ours_only)  # fmt: skip
    if name == "speeds":
        corpus = tuning.tuning_corpus(args.corpus) if args.tune else args.corpus
        sets = [*args.set, *([f"val_fraction={tuning.TUNE_FRACTION}"] if args.tune else [])]
        return speeds.measure(config, corpus, budget, workdir, sets=sets, fixed=args.fixed,
                              step=step)  # fmt: skip
    if name == "sampling":
        trained = workdir / quality.run_name(config, args.set) / "best.pt"
        text = args.corpus.read_text(encoding="utf-8")[-held_out:]
        return sampling.measure(config, length=length, repeats=repeats, text=text,
                                checkpoint=str(trained) if trained.is_file() else None)  # fmt: skip
    if name in ("corpora", "finetune"):  # they bring their own texts (see benchmarks.corpora)
        section = argparse.Namespace(scale=name == "corpora", finetune=name == "finetune",
                                     tiny=args.mode == "tiny", megabytes=1000,
                                     finetune_corpus=args.finetune_corpus)  # fmt: skip
        return corpora.measure(section)[name]
    stdout, _, _ = run_child([sys.executable, "-m", "benchmarks.gate_cells", "--repeats", "5"])
    return {"table": stdout}


if __name__ == "__main__":
    main()
