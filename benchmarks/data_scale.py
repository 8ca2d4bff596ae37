"""A 100 MB corpus: read, encode and ready to batch, with time and peak memory.

    python -m benchmarks.data_scale [--megabytes 100]

The corpus is built here from the bundled one, joined with itself and lightly varied (every
other copy upper-cased, every third with its lines reversed) so it is not one text repeated;
it lives under benchmarks/_work/ (git-ignored) and is never committed. The measurement runs in
a fresh process and samples its resident memory while loading, so the growth is the loading
alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
from pathlib import Path

WORK = Path(__file__).parent / "_work"


def build_corpus(megabytes: int) -> Path:
    from charrnn.corpus import read_text

    path = WORK / f"corpus-{megabytes}mb.txt"
    target = megabytes * 1_000_000
    if path.exists() and path.stat().st_size >= target:
        return path
    WORK.mkdir(parents=True, exist_ok=True)
    base = read_text("shakespeare")
    written, copy = 0, 0
    with open(path, "w", encoding="utf-8") as out:
        while written < target:
            text = base.upper() if copy % 2 else base
            if copy % 3 == 2:
                text = "\n".join(reversed(text.splitlines()))
            out.write(text)
            written += len(text)
            copy += 1
    return path


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 1e6


class PeakMemory:
    """Samples this process's resident memory every few milliseconds in a thread.

    ru_maxrss cannot be used: importing torch peaks higher than loading a 100 MB corpus does,
    and that earlier peak would hide the loading entirely.
    """

    def __init__(self) -> None:
        self.peak = resident_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, resident_mb())

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_mb())


def load_in_this_process(path: str) -> dict:
    import time

    from charrnn.batching import CyclicBatches
    from charrnn.corpus import Vocabulary, read_text, split_train_val

    before = resident_mb()
    with PeakMemory() as memory:
        start = time.perf_counter()
        text = read_text(path)
        vocab = Vocabulary.from_text(text)
        ids = vocab.encode(text)
        del text
        train, val = split_train_val(ids, 0.1)
        batches = CyclicBatches(train, 128, 100)
        batches[len(batches) - 1]
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rss_before_mb": before,
        "peak_rss_mb": memory.peak,
        "growth_mb": memory.peak - before,
        "encoded_dtype": str(ids.dtype),
        "encoded_mb": ids.numel() * ids.element_size() / 1e6,
        "vocab_size": len(vocab),
    }


def measure(megabytes: int = 100) -> dict:
    path = build_corpus(megabytes)
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.data_scale", "--load", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    figures = json.loads(result.stdout)
    size_mb = path.stat().st_size / 1e6
    return {"file_mb": size_mb, **figures, "growth_over_file": figures["growth_mb"] / size_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--load", help=argparse.SUPPRESS)  # the measured child process
    args = parser.parse_args()
    if args.load:
        print(json.dumps(load_in_this_process(args.load)))
    else:
        print(json.dumps(measure(args.megabytes), indent=2))


if __name__ == "__main__":
    main()
