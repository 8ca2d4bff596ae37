"""Corpora ready to train on: found (charrnn.sources), encoded once into the token cache
(charrnn.tokens) and read from it through a memory map.

A corpus is one or more bundled names, UTF-8 files or folders, joined with one newline between
documents. Its vocabulary (charrnn.vocab) is chosen from the character counts of the corpus and
of a separate validation text, if any. The training and validation ids are tensors over the
cache's memory map: a run's own memory does not grow with the corpus, whatever its size.

``read_text`` reads one whole file as a string (for ``eval``), through a
read-only memory map of the file, so it holds the text and nothing beside it; ``read_start``
decodes only a file's first characters (``explain --file``).
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from charrnn import files, tokens
from charrnn.errors import CorpusError
from charrnn.sources import SEPARATOR, Sources, bundled_corpora, find
from charrnn.vocab import UNKNOWN, Choice, Vocabulary, choose, describe_char

__all__ = [
    "SEPARATOR", "Data", "Vocabulary", "bundled_corpora", "corpus_fingerprint", "describe_char",
    "load_data", "read_start", "read_text", "resolve_corpus", "split_train_val",
]  # fmt: skip


def resolve_corpus(name_or_path: str) -> Path:
    """A bundled corpus name or a path -> the one file to read. Raises CorpusError."""
    if Path(name_or_path).expanduser().is_dir():
        raise CorpusError(f"corpus {name_or_path!r} is a directory; give a UTF-8 text file")
    return find(name_or_path).files[0].path


def read_text(name_or_path: str) -> str:
    """Read a corpus (a bundled name or a path) as text; see `read_file_text`."""
    return read_file_text(resolve_corpus(name_or_path), "corpus")


def read_file_text(path: Path, what: str) -> str:
    """Read one file as text. Missing files, folders, devices, empty files and invalid UTF-8
    are refused, each named as `what` ("corpus", "the text given with --file") and its path."""
    with open_text_file(path, what) as file:
        try:
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as m:
                # Decoded straight from the file's pages: the string is the only copy in memory.
                return str(m, "utf-8")
        except UnicodeDecodeError as error:
            raise not_utf8(f"{what} {str(path)!r}", error.object, error.start) from None
        except ValueError as error:  # mmap of a file emptied since it was opened
            raise CorpusError(f"cannot read {what} {str(path)!r}: {error}") from None


@contextlib.contextmanager
def open_text_file(path: Path, what: str) -> Iterator[BinaryIO]:
    """`path` opened for reading as bytes, after the refusals every reader of a text makes (a
    missing, special or empty file), each naming `what` and the path; an OSError while it is
    read becomes a CorpusError in the same words."""
    named = f"{what} {str(path)!r}"
    if not path.exists():  # before open_regular, whose "No such file" says nothing of the fix
        raise CorpusError(f"{named} does not exist; give the path of a UTF-8 text file")
    files.refuse_special(path, CorpusError, what)  # a socket, which cannot even be opened
    try:
        # O_NONBLOCK and a check of what was opened: a FIFO or /dev/zero is never read.
        with files.open_regular(path, CorpusError, what) as file:
            if os.fstat(file.fileno()).st_size == 0:  # mmap refuses an empty file: say why
                raise CorpusError(f"{named} is empty; give a file with some text in it")
            yield file
    except OSError as error:
        raise CorpusError(f"cannot read {named}: {error.strerror or error}") from None


def not_utf8(named: str, data: bytes, start: int) -> CorpusError:
    return tokens.not_utf8(named, start, data[start])


@dataclass(frozen=True)
class FileStart:
    """The first characters of a file, and how many the whole file holds."""

    text: str
    total_chars: int  # counted, not decoded: past `text` the file is not checked to be UTF-8


UTF8_MAX_BYTES = 4  # per character
COUNT_BYTES = 1 << 20  # read at a time when counting the characters after the ones shown
CONTINUATION_BYTES = bytes(range(0x80, 0xC0))  # every UTF-8 byte but a character's first


def read_start(path: Path, max_chars: int, what: str) -> FileStart:
    """The first `max_chars` characters of a UTF-8 file, decoding at most 4 bytes for each.

    Only what is shown is decoded, so memory follows `max_chars`, not the file (the rest is
    read a MiB at a time to count its characters). Refused as by `read_file_text`, except that
    invalid UTF-8 after the characters shown is not looked for.
    """
    with open_text_file(path, what) as file:
        # max_chars characters take at most 4 bytes each, so these bytes hold all of them.
        data = file.read(UTF8_MAX_BYTES * max_chars)
        text = _decode_start(data, max_chars, f"{what} {str(path)!r}")
        total = len(text) + _count_chars(data[len(text.encode("utf-8")) :])
        while chunk := file.read(COUNT_BYTES):
            total += _count_chars(chunk)
    return FileStart(text, total)


def _decode_start(data: bytes, max_chars: int, named: str) -> str:
    """The first `max_chars` characters of `data`, which may end inside a character or hold
    bytes that are not UTF-8 after them (both are past what is shown, so not refused)."""
    try:
        return data.decode("utf-8")[:max_chars]
    except UnicodeDecodeError as error:
        text = data[: error.start].decode("utf-8")  # valid up to the first bad byte
        if len(text) >= max_chars:
            return text[:max_chars]
        raise not_utf8(named, data, error.start) from None


def _count_chars(data: bytes) -> int:
    """Characters in UTF-8 `data`: the bytes that begin one (so `data` may start or end inside
    a character, as a chunk of a file does)."""
    return len(data.translate(None, CONTINUATION_BYTES))


def split_train_val(ids: torch.Tensor, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The first part trains, the last `val_fraction` validates; both contiguous views."""
    n_val = int(len(ids) * val_fraction)
    n_train = len(ids) - n_val
    return ids[:n_train], ids[n_train:]


@dataclass
class Data:
    """A corpus ready to train on: its vocabulary, its train and val ids, and where they came
    from (the files with their sha256, the fingerprint of the joined text, what was skipped)."""

    vocab: Vocabulary
    train: torch.Tensor
    val: torch.Tensor
    corpus_path: Path  # the first file
    sources: Sources
    files: list[dict]  # {path, size, sha256} of every file, in reading order
    fingerprint: str
    choice: Choice
    val_files: list[dict] | None = None  # a separate validation text's, if any
    val_fingerprint: str | None = None
    built: bool = False  # a token cache entry was built (not a cache hit)


def corpus_fingerprint(
    corpus: str | Sequence[str], include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()
) -> str:
    """The sha256 of a corpus's joined text (for one file: the file's sha256).

    Taken when the corpus is first read and kept in the token cache, so asking again costs a
    look at the files' sizes and times, not a re-hash.
    """
    return tokens.scan(find(corpus, include, exclude)).fingerprint


def load_data(
    corpus: str | Sequence[str],
    val_fraction: float,
    vocab: Vocabulary | None = None,
    *,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    val_corpus: str = "",
    max_vocab: int = 0,
    grow: bool = False,
    show_progress: bool | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> Data:
    """Find, encode (or find in the cache) and split a corpus.

    With `vocab` (a resumed run) the text must fit it: characters outside it are refused,
    unless `max_vocab` maps them to U+FFFD; with `grow` as well (a fine-tune) they are appended.
    The validation ids are `val_corpus`'s when given, else the last `val_fraction` of the text.
    """
    sources = find(corpus, include, exclude)
    scanned = tokens.scan(sources, show_progress)
    val_sources = find(val_corpus, include, exclude) if val_corpus else None
    val_scanned = tokens.scan(val_sources, show_progress) if val_sources else None
    counts = dict(scanned.counts)
    for char, count in (val_scanned.counts if val_scanned else {}).items():
        counts[char] = counts.get(char, 0) + count
    choice = choose(counts, max_vocab, base=vocab)
    if vocab is not None and choice.added and not grow:
        shown = ", ".join(describe_char(c) for c in choice.added[:10])
        raise CorpusError(
            f"the corpus has {len(choice.added)} character(s) outside the run's vocabulary "
            f"({shown}); resume with the corpus the run was trained on"
        )
    vocab = choice.vocab
    map_unknown = bool(max_vocab) and UNKNOWN in vocab

    def ids_of(found_sources: Sources, found: tokens.Scan) -> tuple[torch.Tensor, bool]:
        entry = tokens.open_entry(found_sources, found, vocab, map_unknown, show_progress, log)
        return torch.from_numpy(entry.ids), entry.built

    ids, built = ids_of(sources, scanned)
    if val_sources is not None:
        train, (val, val_built) = ids, ids_of(val_sources, val_scanned)
        built = built or val_built
    else:
        train, val = split_train_val(ids, val_fraction)
    return Data(
        vocab=vocab,
        train=train,
        val=val,
        corpus_path=sources.files[0].path,
        sources=sources,
        files=_recorded(scanned),
        fingerprint=scanned.fingerprint,
        choice=choice,
        val_files=_recorded(val_scanned) if val_scanned else None,
        val_fingerprint=val_scanned.fingerprint if val_scanned else None,
        built=built,
    )


def _recorded(found: tokens.Scan) -> list[dict]:
    """What a run records of each file: path, size and sha256."""
    return [{"path": f["path"], "size": f["size"], "sha256": f["sha256"]} for f in found.files]


def changed_files(recorded: list[dict], current: list[dict]) -> str:
    """The difference between a run's recorded files and the corpus now, in a few words."""
    before = {f.get("path"): f for f in recorded if isinstance(f, dict)}
    now = {f["path"]: f for f in current}
    gone = [p for p in before if p not in now]
    new = [p for p in now if p not in before]
    edited = [p for p in now if p in before and before[p].get("sha256") != now[p]["sha256"]]
    # "gone" would mislead when the user named another file: the run's file may well exist.
    named = (("changed:", edited), ("trained on, not given now:", gone),
             ("given now, not trained on:", new))  # fmt: skip
    parts = [
        f"{label} {', '.join(map(str, paths[:3]))}{' ...' if len(paths) > 3 else ''}"
        for label, paths in named
        if paths
    ]
    return "; ".join(parts) or "the files were joined in another order"
