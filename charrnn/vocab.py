"""The character vocabulary: an ordered list of characters; a character's id is its index.

The characters are Unicode code points (not bytes), so "naïve — 東京 🙂" is seven-plus
characters, not a pile of UTF-8 bytes. A fresh run's vocabulary is sorted; a fine-tuned run's
is its checkpoint's list with the new characters appended (old ids keep their meaning), so
encoding looks characters up in a table instead of relying on the order.

How large a vocabulary may be: at most ``DEFAULT_CAP`` (10,000) distinct characters unless
``max_vocab`` is set; with ``max_vocab = N`` the N most frequent characters are kept and every
other one is mapped to ``UNKNOWN`` (U+FFFD, the replacement character), which joins the
vocabulary. A model trained so reads every character it never saw as U+FFFD too
(``maps_unknown``), as its training did: its own text is never refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from charrnn.errors import CorpusError

ENCODE_CHUNK = 1 << 20  # characters encoded at a time
UNKNOWN = "\ufffd"  # what --max-vocab maps the characters it leaves out to
DEFAULT_CAP = 10_000  # distinct characters accepted without --max-vocab


@dataclass(frozen=True)
class Vocabulary:
    """The characters a model knows, in id order."""

    chars: tuple[str, ...]
    # Characters outside `chars` read as UNKNOWN instead of being refused: a model trained with
    # --max-vocab. Not part of equality: the ids mean the same either way.
    maps_unknown: bool = field(default=False, compare=False)

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        return cls(tuple(sorted(set(text))))

    @classmethod
    def from_list(cls, chars: list[str], maps_unknown: bool = False) -> Vocabulary:
        """Rebuild from `to_list()`, e.g. from a checkpoint. Refuses anything malformed.
        `maps_unknown` (a model trained with --max-vocab) holds only if UNKNOWN is in it."""
        if not isinstance(chars, (list, tuple)) or not all(
            isinstance(c, str) and len(c) == 1 for c in chars
        ):
            raise CorpusError("a vocabulary must be a list of single characters")
        if len(set(chars)) != len(chars):
            raise CorpusError("a vocabulary must not repeat a character")
        return cls(tuple(chars), maps_unknown and UNKNOWN in chars)

    def to_list(self) -> list[str]:
        return list(self.chars)

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: object) -> bool:
        return char in self._index

    @cached_property
    def _index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    def id_of(self, char: str) -> int:
        return self._index[char]

    @property
    def dtype(self) -> torch.dtype:
        """The smallest integer dtype that holds every id (uint8 up to 256 characters)."""
        return torch.uint8 if len(self.chars) <= 256 else torch.int32

    @property
    def token_dtype(self) -> np.dtype:
        """The dtype of a token file: uint8, uint16 or uint32 by the vocabulary's size."""
        size = len(self.chars)
        return np.dtype(np.uint8 if size <= 1 << 8 else np.uint16 if size <= 1 << 16 else np.uint32)

    @property
    def table(self) -> np.ndarray:
        """Code point -> id, -1 for a code point not in the vocabulary (read-only)."""
        return self._table

    @cached_property
    def _table(self) -> np.ndarray:
        """Code point -> id (-1: not in the vocabulary); its last entry stands for every code
        point beyond the largest one in the vocabulary."""
        # surrogatepass: a Python string may hold lone surrogates (from surrogateescape'd
        # command-line arguments, say); they are code points like any other here.
        codes = np.frombuffer("".join(self.chars).encode("utf-32-le", "surrogatepass"), np.uint32)
        table = np.full(int(codes.max(initial=0)) + 2, -1, dtype=np.int32)
        table[codes] = np.arange(len(codes), dtype=np.int32)
        return table

    def lookup(self, codes: np.ndarray) -> np.ndarray:
        """Code points (any unsigned integer array) -> int32 ids, -1 where unknown."""
        table = self._table
        beyond = len(table) - 1  # codes past the largest known one all look up this entry
        if beyond <= np.iinfo(codes.dtype).max:
            codes = np.minimum(codes, beyond)
        return table[codes]

    def unknown(self, text: str) -> list[str]:
        """Distinct characters of `text` missing from the vocabulary, in order of appearance
        (none when they read as UNKNOWN)."""
        if self.maps_unknown:
            return []
        index = self._index
        return list(dict.fromkeys(c for c in text if c not in index))

    def encode(self, text: str) -> torch.Tensor:
        """Text -> 1-D integer tensor of ids. Raises CorpusError naming unknown characters."""
        # Vectorised through numpy in chunks of code points: no Python object per character,
        # and the temporaries stay small, so a 100 MB text encodes in seconds without needing
        # several times its size in memory.
        out = np.empty(len(text), dtype=np.uint8 if self.dtype == torch.uint8 else np.int32)
        for start in range(0, len(text), ENCODE_CHUNK):
            piece = text[start : start + ENCODE_CHUNK]
            ids = self.lookup(code_points(piece))
            if ids.size and ids.min() < 0:
                if not self.maps_unknown:
                    raise CorpusError(
                        f"characters not in the vocabulary: {self.describe_unknown(text)}"
                    )
                ids = np.where(ids < 0, self.id_of(UNKNOWN), ids)
            out[start : start + len(piece)] = ids
        return torch.from_numpy(out)

    def describe_unknown(self, text: str) -> str:
        missing = self.unknown(text)
        shown = ", ".join(describe_char(c) for c in missing[:10])
        return shown + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        chars = self.chars
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return "".join(chars[i] for i in ids)


def code_points(text: str) -> np.ndarray:
    """A string's code points as an unsigned array (a view of its bytes when it is ASCII)."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def describe_char(char: str) -> str:
    """A character as a learner can read it: 'a', '\\n', U+00A0."""
    if char.isprintable() and not char.isspace():
        return repr(char)
    if char in "\n\t\r ":
        return repr(char)
    return f"U+{ord(char):04X}"


@dataclass(frozen=True)
class Choice:
    """A vocabulary chosen from character counts, and what it leaves to the unknown symbol."""

    vocab: Vocabulary
    unknown_chars: int  # distinct characters of the text mapped to UNKNOWN
    unknown_count: int  # occurrences of them in the text
    added: tuple[str, ...] = ()  # characters appended to a base vocabulary


def choose(
    counts: dict[str, int],
    max_vocab: int = 0,
    base: Vocabulary | None = None,
    cap: int = DEFAULT_CAP,
) -> Choice:
    """The vocabulary for a text whose characters occur `counts` times.

    Fresh (no `base`): every character, sorted. On a `base` (a fine-tune), the base's characters
    keep their ids and the text's new ones are appended, sorted. With `max_vocab` the most
    frequent characters are kept (ties: the smaller code point) up to `max_vocab` in all, and the
    others map to UNKNOWN, which is added. Without it a vocabulary over `cap` is refused.
    """
    present = {c: n for c, n in counts.items() if n > 0}
    base_chars = base.chars if base is not None else ()
    new = [c for c in present if c not in set(base_chars)]
    if max_vocab:
        room = max(max_vocab - len(base_chars), 0)
        ranked = sorted(new, key=lambda c: (-present[c], ord(c)))
        kept, dropped = ranked[:room], ranked[room:]
    else:
        kept, dropped = new, []
    if dropped and UNKNOWN not in base_chars and UNKNOWN not in kept:
        kept.append(UNKNOWN)
    added = tuple(sorted(kept))
    chars = tuple(base_chars) + added if base is not None else added
    if not max_vocab and len(chars) > cap:
        raise CorpusError(
            f"the text has {len(chars):,} distinct characters, over the cap of {cap:,}; pass "
            "--max-vocab N to keep the N most frequent (the others become U+FFFD)"
        )
    return Choice(
        Vocabulary(chars),
        unknown_chars=len(dropped),
        unknown_count=sum(present[c] for c in dropped),
        added=added if base is not None else (),
    )
