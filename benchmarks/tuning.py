"""The held-out tuning split: hyperparameters are chosen on the tail of the training text, and
the validation split that RESULTS.md reports is never read while choosing them.

    text:  [ ............ training split (90%) ............ | validation (10%) ]
    tune:  [ ...... trains (95% of the training split) ...... | tune |          ]
                                                               ^ scored while tuning

`benchmarks.run --tune` and `benchmarks.dynamic_eval` train and score on a corpus made of the
training split alone (written once to benchmarks/_work/), with its last TUNE_FRACTION held
out for validation: `charrnn train --val-fraction 0.05` on that file. Train and validation
are cut as charrnn cuts them (``corpus.split_train_val``: the last ``int(n * fraction)``
characters validate), so the tuning text is exactly the start of the text that training reads.
"""

from __future__ import annotations

from pathlib import Path

VAL_FRACTION = 0.1  # the reported split: charrnn's default
TUNE_FRACTION = 0.05  # of the training split
WORK = Path(__file__).parent / "_work"


def training_split(text: str, val_fraction: float = VAL_FRACTION) -> str:
    """The part of `text` that training reads (charrnn's cut, in characters)."""
    return text[: len(text) - int(len(text) * val_fraction)]


def tuning_corpus(corpus: Path, folder: Path = WORK) -> Path:
    """A file holding only the training split of `corpus` (rewritten when it differs)."""
    text = corpus.read_text(encoding="utf-8")
    path = folder / f"tune-{corpus.stem}.txt"
    wanted = training_split(text)
    if not (path.is_file() and path.read_text(encoding="utf-8") == wanted):
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(wanted, encoding="utf-8")
    return path


def is_tuning_corpus(corpus: Path | str | list[str] | tuple[str, ...]) -> bool:
    """Whether a run's corpus (one path, or the list a checkpoint records) is a tuning corpus."""
    paths = [corpus] if isinstance(corpus, (str, Path)) else list(corpus)
    return bool(paths) and all(Path(path).name.startswith("tune-") for path in paths)
