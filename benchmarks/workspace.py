"""A fresh scratch folder in benchmarks/_work (git-ignored) holding a slice of the corpus."""

from __future__ import annotations

import shutil
from pathlib import Path

from charrnn.corpus import read_text

ROOT = Path(__file__).parent / "_work"


def fresh(name: str, corpus_chars: int) -> tuple[Path, Path]:
    """Empty ``_work/NAME`` and write the bundled corpus's first characters to corpus.txt there.

    Returns (the folder, the corpus file).
    """
    work = ROOT / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    corpus = work / "corpus.txt"
    corpus.write_text(read_text("shakespeare")[:corpus_chars], encoding="utf-8")
    return work, corpus
