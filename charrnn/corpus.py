"""Reading corpora and the character vocabulary.

A corpus is named by a bundled name (``shakespeare``) or by a path to any UTF-8 text file.
The vocabulary is the sorted set of the corpus's Unicode code points (not bytes), so
"naïve — 東京 🙂" is seven-plus characters, not a pile of UTF-8 bytes. The encoded corpus is
a compact integer tensor (uint8 when the vocabulary has at most 256 characters, else int32):
a 100 MB corpus must fit in memory next to the model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from charrnn.bundled import bundled_files
from charrnn.errors import CorpusError

ENCODE_CHUNK = 1 << 20  # characters encoded at a time


def bundled_corpora() -> dict[str, Path]:
    """Names of the corpora that ship with charrnn, mapped to their files."""
    return bundled_files("charrnn.corpora", ".txt")


def resolve_corpus(name_or_path: str) -> Path:
    """A bundled corpus name or a path -> the file to read. Raises CorpusError."""
    bundled = bundled_corpora()
    if name_or_path in bundled:
        return bundled[name_or_path]
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        raise CorpusError(f"corpus {name_or_path!r} is a directory; give a UTF-8 text file")
    if not path.exists():
        known = ", ".join(sorted(bundled)) or "none"
        raise CorpusError(
            f"corpus {name_or_path!r} is neither a file nor a bundled corpus (bundled: {known})"
        )
    return path


def read_text(name_or_path: str) -> str:
    """Read a corpus as text. Empty files and invalid UTF-8 are refused with the byte offset."""
    path = resolve_corpus(name_or_path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CorpusError(f"cannot read corpus {str(path)!r}: {error.strerror}") from None
    if not data:
        raise CorpusError(f"corpus {str(path)!r} is empty; give a file with some text in it")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CorpusError(
            f"corpus {str(path)!r} is not valid UTF-8: byte {error.start} "
            f"(0x{data[error.start]:02x}) cannot be decoded; convert the file to UTF-8"
        ) from None


@dataclass(frozen=True)
class Vocabulary:
    """The characters a model knows, in sorted order; a character's id is its index."""

    chars: tuple[str, ...]

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        return cls(tuple(sorted(set(text))))

    @classmethod
    def from_list(cls, chars: list[str]) -> Vocabulary:
        """Rebuild from `to_list()`, e.g. from a checkpoint. Refuses anything malformed."""
        if not isinstance(chars, (list, tuple)) or not all(
            isinstance(c, str) and len(c) == 1 for c in chars
        ):
            raise CorpusError("a vocabulary must be a list of single characters")
        if list(chars) != sorted(set(chars)):
            raise CorpusError("a vocabulary must be sorted and without repeats")
        return cls(tuple(chars))

    def to_list(self) -> list[str]:
        return list(self.chars)

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: object) -> bool:
        return char in self._index

    @cached_property
    def _index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    @property
    def dtype(self) -> torch.dtype:
        """The smallest integer dtype that holds every id (uint8 up to 256 characters)."""
        return torch.uint8 if len(self.chars) <= 256 else torch.int32

    def unknown(self, text: str) -> list[str]:
        """Distinct characters of `text` missing from the vocabulary, in order of appearance."""
        index = self._index
        return list(dict.fromkeys(c for c in text if c not in index))

    def encode(self, text: str) -> torch.Tensor:
        """Text -> 1-D integer tensor of ids. Raises CorpusError naming unknown characters."""
        missing = self.unknown(text)
        if missing:
            shown = ", ".join(describe_char(c) for c in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise CorpusError(f"characters not in the vocabulary: {shown}{more}")
        # Vectorised through numpy in chunks of code points: no Python object per character,
        # and the temporaries stay small, so a 100 MB corpus encodes in seconds without
        # needing several times its size in memory.
        # surrogatepass: a Python string may hold lone surrogates (from surrogateescape'd
        # command-line arguments, say); they are code points like any other here.
        chars = "".join(self.chars).encode("utf-32-le", "surrogatepass")
        chars = np.frombuffer(chars, dtype=np.uint32)
        ascii_table = np.zeros(128, dtype=np.int64)
        ascii_chars = chars[chars < 128]
        ascii_table[ascii_chars] = np.searchsorted(chars, ascii_chars)
        out = np.empty(len(text), dtype=np.uint8 if self.dtype == torch.uint8 else np.int32)
        for start in range(0, len(text), ENCODE_CHUNK):
            piece = text[start : start + ENCODE_CHUNK]
            if piece.isascii():
                codes = np.frombuffer(piece.encode("ascii"), dtype=np.uint8)
                out[start : start + len(piece)] = ascii_table[codes]
            else:
                codes = np.frombuffer(piece.encode("utf-32-le", "surrogatepass"), np.uint32)
                out[start : start + len(piece)] = np.searchsorted(chars, codes)  # chars sorted
        return torch.from_numpy(out)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        chars = self.chars
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return "".join(chars[i] for i in ids)


def describe_char(char: str) -> str:
    """A character as a learner can read it: 'a', '\\n', U+00A0."""
    if char.isprintable() and not char.isspace():
        return repr(char)
    if char in "\n\t\r ":
        return repr(char)
    return f"U+{ord(char):04X}"


def split_train_val(ids: torch.Tensor, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The first part trains, the last `val_fraction` validates; both contiguous."""
    n_val = int(len(ids) * val_fraction)
    n_train = len(ids) - n_val
    return ids[:n_train], ids[n_train:]


@dataclass
class Data:
    """A corpus ready to train on: its vocabulary, and its encoded train and val splits."""

    vocab: Vocabulary
    train: torch.Tensor
    val: torch.Tensor
    corpus_path: Path
    fingerprint: str  # of the text (see `fingerprint`)


def fingerprint(text: str) -> str:
    """A corpus's content fingerprint: the sha256 of its text (UTF-8), in hex.

    A checkpoint records it (``corpus_fingerprint``): a resumed run refuses a text that changed
    since, even in a way its vocabulary does not show, and accepts a moved identical copy.
    """
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def load_data(corpus: str, val_fraction: float, vocab: Vocabulary | None = None) -> Data:
    """Read, encode and split a corpus. With `vocab` (a resumed run), the text must fit it."""
    path = resolve_corpus(corpus)
    text = read_text(str(path))
    own = Vocabulary.from_text(text)
    if vocab is not None and own != vocab:
        raise CorpusError(
            f"corpus {corpus!r} has a different vocabulary ({len(own)} characters) from the "
            f"run's ({len(vocab)}); resume with the corpus the run was trained on"
        )
    vocab = vocab or own
    ids = vocab.encode(text)
    train, val = split_train_val(ids, val_fraction)
    return Data(vocab, train, val, path.resolve(), fingerprint(text))
