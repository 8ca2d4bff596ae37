"""A run's corpus: what a checkpoint records of it, and how a resumed run finds and checks it.

A new run reads the corpus its settings name. The checkpoint records the sources as absolute
paths (bundled names stay names), every file's path, size and sha256, and the fingerprint of
the joined text; ``--resume`` reads the recorded sources (an older checkpoint's one
``corpus_path``; the names in the settings when they are gone), in the run's vocabulary, and
refuses a text whose fingerprint differs, naming the files that changed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from charrnn.config import TrainConfig
from charrnn.corpus import Data, changed_files, load_data
from charrnn.errors import CheckpointError, CorpusError
from charrnn.sources import bundled_corpora
from charrnn.vocab import Vocabulary


def load(
    config: TrainConfig,
    resume: dict[str, Any] | None,
    start_vocab: Vocabulary | None,
    show_progress: bool | None,
    log: Callable[[str], None],
) -> Data:
    """The run's data: a resumed run's recorded text (checked), or the settings' corpus (a
    fine-tune's, `start_vocab` grown by its new characters)."""
    corpus, val_corpus, vocab = config.corpus, config.val_corpus, start_vocab
    if resume:
        vocab = Vocabulary.from_list(resume["vocab"])
        if not _corpus_retyped(resume, config):  # --resume --corpus COPY: read the copy
            corpus = _saved_sources(resume, "corpus_sources", "corpus_path") or corpus
        val_corpus = (_saved_sources(resume, "val_corpus_sources", None) or [val_corpus])[0]
    data = load_data(corpus, config.val_fraction, vocab, include=config.include,
                     exclude=config.exclude, val_corpus=val_corpus, max_vocab=config.max_vocab,
                     grow=start_vocab is not None and not resume, show_progress=show_progress,
                     log=log)  # fmt: skip
    if resume:
        recorded = (("corpus", data.files, data.fingerprint),
                    ("val_corpus", data.val_files, data.val_fingerprint))  # fmt: skip
        for key, files, now in recorded:
            saved = resume.get(f"{key}_fingerprint")
            if saved is not None and saved != now:
                change = changed_files(resume.get(f"{key}_files") or [], files or [])
                raise CorpusError(
                    f"the {key.replace('_', ' ')} is not the text the run was trained on "
                    f"({change}); resume needs the same text (point --corpus at an identical "
                    "copy), or start a new run from this one with --init-from"
                )
    return data


def _corpus_retyped(resume: dict[str, Any], config: TrainConfig) -> bool:
    """Whether the resumed run's corpus setting differs from the saved one: the user named a
    copy with --corpus (accepted when its fingerprint matches the recorded one)."""
    saved = resume["train_config"].get("corpus")
    saved = (saved,) if isinstance(saved, str) else tuple(saved or ())
    return tuple(config.corpus) != saved


def record(config: TrainConfig, data: Data) -> dict[str, Any]:
    """What a checkpoint records of the run's text, so --resume can find and check it."""
    saved = {
        "corpus_sources": _absolute(config.corpus),
        "corpus_files": data.files,
        "corpus_fingerprint": data.fingerprint,
    }
    if data.val_files is not None:
        saved["val_corpus_sources"] = _absolute((config.val_corpus,))
        saved["val_corpus_files"] = data.val_files
        saved["val_corpus_fingerprint"] = data.val_fingerprint
    return saved


def _absolute(specs: tuple[str, ...]) -> list[str]:
    """Corpus names as given, paths made absolute, so a resume finds them from anywhere."""
    bundled = bundled_corpora()
    return [spec if spec in bundled else str(Path(spec).expanduser().absolute()) for spec in specs]


def _saved_sources(checkpoint: dict[str, Any], key: str, old_key: str | None) -> list[str] | None:
    """The corpus a checkpoint was trained on: its recorded sources, or (an older checkpoint)
    its one file; None when it names none, or when they are gone (moved since: the caller falls
    back to the names in the settings). A path that is there but is no regular file (a FIFO or
    a device now) is returned, to be refused by name when it is read."""
    saved = checkpoint.get(key)
    if saved is None and old_key is not None and checkpoint.get(old_key):
        saved = [checkpoint[old_key]]
    if saved is None:
        return None
    if not isinstance(saved, list) or not all(isinstance(s, str) for s in saved):
        raise CheckpointError(f"the checkpoint cannot be resumed: malformed {key}")
    bundled = bundled_corpora()
    present = all(s in bundled or os.path.lexists(s) for s in saved)
    return saved if present else None
