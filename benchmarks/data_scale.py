"""A 100 MB corpus: read, encode and ready to batch, with time and peak memory.

    python -m benchmarks.data_scale [--megabytes 100]

The corpus is built here from the bundled one, joined with itself and lightly varied (every
other copy upper-cased, every third with its lines reversed) so it is not one text repeated;
it lives under benchmarks/_work/ (git-ignored) and is never committed. Besides plain ASCII
(--script ascii), the same text is written in non-Latin scripts of the same size in bytes:
cyrillic (each letter mapped one for one onto the Cyrillic alphabet, 2 bytes a letter) and
cjk (each pair of letters onto one of ~2,800 CJK ideographs, 3 bytes each, a vocabulary past
256 characters). The measurement runs in
a fresh process and samples its resident memory while loading, so the growth is the loading
alone.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import threading
from pathlib import Path

WORK = Path(__file__).parent / "_work"


def build_corpus(megabytes: int, script: str = "ascii", folder: Path = WORK) -> Path:
    """A corpus of `megabytes` MB (of UTF-8 bytes) built from the bundled one, in `script`."""
    name = "" if script == "ascii" else f"-{script}"
    path = folder / f"corpus-{megabytes}mb{name}.txt"
    target = megabytes * 1_000_000
    # Made before: reuse it if it is this size (a character may be cut from the end); a file of
    # another size is from an older version of this builder.
    if path.exists() and target - 4 <= path.stat().st_size <= target:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    # The pattern of variations repeats every 6 copies; the last copy is cut (at a character
    # boundary) so every script's file has the same size in bytes. A variant is converted when
    # first needed, and only as much of it as can fill the file: every script writes at least
    # a byte per character of the bundled text, so `target` characters (and a margin, so the
    # last word converts as it would whole) always suffice.
    variants: dict[int, bytes] = {}
    written, copy = 0, 0
    with open(path, "wb") as out:
        while written < target:
            if copy % 6 not in variants:
                text = _variant(copy % 6)[: target + 64]
                variants[copy % 6] = SCRIPTS[script](text).encode("utf-8")
            piece = variants[copy % 6][: target - written]
            piece = piece.decode("utf-8", "ignore").encode("utf-8")  # no half character
            if not piece:
                break
            out.write(piece)
            written += len(piece)
            copy += 1
    return path


def _variant(copy: int) -> str:
    """Copy `copy` of the bundled text: every other one upper-cased, every third with its
    lines reversed, so the corpus is not one text repeated."""
    from charrnn.corpus import read_text

    text = read_text("shakespeare")
    text = text.upper() if copy % 2 else text
    if copy % 3 == 2:
        text = "\n".join(reversed(text.splitlines()))
    return text


# Latin letters onto the Cyrillic alphabet, one for one (2 bytes each in UTF-8; the vocabulary
# stays small, so ids stay uint8).
CYRILLIC = str.maketrans(
    {**{chr(ord("a") + i): chr(0x0430 + i) for i in range(26)},
     **{chr(ord("A") + i): chr(0x0410 + i) for i in range(26)}}
)  # fmt: skip
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def to_cyrillic(text: str) -> str:
    return text.translate(CYRILLIC)


def to_cjk(text: str) -> str:
    """Each pair of letters (and a lone last letter) of a word becomes one CJK ideograph
    (U+4E00 on, 3 bytes each in UTF-8): a text of ~1,500 distinct characters, as Chinese or
    Japanese text has, so ids need int32 rather than uint8."""
    index = {a + b: i for i, (a, b) in enumerate((a, b) for a in LETTERS for b in LETTERS)}
    index.update({a: len(index) + i for i, a in enumerate(LETTERS)})
    return re.sub(r"[A-Za-z]{1,2}", lambda m: chr(0x4E00 + index[m.group()]), text)


SCRIPTS = {"ascii": lambda text: text, "cyrillic": to_cyrillic, "cjk": to_cjk}


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
        "characters": ids.numel(),
    }


def measure(megabytes: int = 100, script: str = "ascii") -> dict:
    path = build_corpus(megabytes, script)
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.data_scale", "--load", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    figures = json.loads(result.stdout)
    size_mb = path.stat().st_size / 1e6
    return {"script": script, "file_mb": size_mb, **figures,
            "growth_over_file": figures["growth_mb"] / size_mb}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--script", choices=sorted(SCRIPTS), default="ascii")
    parser.add_argument("--load", help=argparse.SUPPRESS)  # the measured child process
    args = parser.parse_args()
    if args.load:
        print(json.dumps(load_in_this_process(args.load)))
    else:
        print(json.dumps(measure(args.megabytes, args.script), indent=2))


if __name__ == "__main__":
    main()
