"""Reading a prime through the model: a text, or a file of any length, in chunks.

Generation starts from a `Context`: what the model has read, as the logits of the next
character and the hidden state. A prime is read into one through the model's own forward pass,
`PRIME_CHUNK` characters at a time with the state carried from chunk to chunk, so the memory a
prime takes (the chunk's ids, its logits and the core's activations) does not grow with its
length: a 100 MB prime file needs what a 64 KiB one does. A prime shorter than a chunk is read
in one pass, as before chunking existed.

A `Prime` is read twice: once to check it (invalid UTF-8 and characters the model never saw
are refused before anything is read into the model or written anywhere), then through the
model. Its cleaned text can be read again, piece by piece, to echo it (`Priming.pieces`).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from charrnn.corpus import Vocabulary, describe_char
from charrnn.devices import sampling_threads
from charrnn.errors import CorpusError
from charrnn.model import CharModel, State

PRIME_CHUNK = 1 << 16  # characters read through the model in one forward pass
READ_BYTES = 1 << 16  # bytes of a prime file decoded at a time


@dataclass(frozen=True)
class Context:
    """What the model has read: the next character's logits (1, V) and the hidden state."""

    logits: torch.Tensor
    state: State


class Prime:
    """A prime: a text, or a UTF-8 file that is read in pieces (never whole)."""

    def __init__(self, text: str | None = None, path: str | Path | None = None):
        if text is not None and path is not None:
            raise CorpusError("give a prime text or a prime file, not both")
        self.text, self.path = text, None if path is None else Path(path)

    def raw_pieces(self) -> Iterator[str]:
        """The prime's text in pieces (a text prime is one piece, however long)."""
        if self.path is None:
            if self.text:
                yield self.text
            return
        yield from read_file(self.path)


def read_file(path: Path) -> Iterator[str]:
    """A UTF-8 file's text, `READ_BYTES` at a time; invalid UTF-8 is refused with its offset."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes of the file given to the decoder so far
    try:
        with path.open("rb") as file:
            while block := file.read(READ_BYTES):
                pending = len(decoder.getstate()[0])  # the start of a character cut by a block
                try:
                    text = decoder.decode(block)
                except UnicodeDecodeError as error:
                    raise _not_utf8(path, offset - pending + error.start) from None
                offset += len(block)
                if text:
                    yield text
            pending = len(decoder.getstate()[0])
            if pending:  # the file ends inside a character
                raise _not_utf8(path, offset - pending)
    except OSError as error:
        raise CorpusError(f"cannot read the prime file {str(path)!r}: {error.strerror}") from None


def _not_utf8(path: Path, byte: int) -> CorpusError:
    return CorpusError(
        f"the prime file {str(path)!r} is not valid UTF-8 at byte {max(byte, 0)}; convert it "
        "to UTF-8"
    )


def read_ids(model: CharModel, ids: torch.Tensor, state: State | None) -> Context:
    """Run ids (T,) through the model's forward pass from `state` (None: zeros): the context
    after them. What every prime reader does (this module's, and charrnn serve's)."""
    if state is None:
        state = model.init_state(1)
    logits, state = model(ids.unsqueeze(0), state)  # (1, T, V)
    # A copy: a view would keep the whole chunk's logits alive.
    return Context(logits[:, -1].to(torch.float32, copy=True), state)


def chunks(pieces: Iterable[str], size: int = PRIME_CHUNK) -> Iterator[str]:
    """The same text in pieces of at most `size` characters."""
    for piece in pieces:
        for start in range(0, len(piece), size):
            yield piece[start : start + size]


class Priming:
    """A prime, checked, ready to be read through the model.

    Iterating reads it (from `context`, or from a zero state) and yields each piece of it as the
    model read it (less unknown characters with `skip_unknown`), for a caller that echoes the
    prime while it is read; `read()` reads what is left. Afterwards `context` is where generation
    starts. An empty prime reads nothing: from a zero state, `default` is read instead; from a
    given context, generation goes on from it.
    """

    def __init__(
        self,
        model: CharModel,
        vocab: Vocabulary,
        prime: Prime,
        *,
        default: str,
        skip_unknown: bool = False,
        context: Context | None = None,
        threads: int | None = None,
        chunk_chars: int = PRIME_CHUNK,
    ):
        self.model, self.vocab, self.skip_unknown = model, vocab, skip_unknown
        self.context, self.threads, self.chunk_chars = context, threads, chunk_chars
        self.known = set(vocab.chars)
        total, known = self._check(prime)
        if prime.path is not None and total == 0:
            raise CorpusError(f"the prime file {str(prime.path)!r} is empty")
        if total and not known:
            raise CorpusError("no character of the prime is in the model's vocabulary")
        if not total and context is None:
            prime = Prime(default)
        self.prime = prime
        self._reader: Iterator[str] | None = None

    def _check(self, prime: Prime) -> tuple[int, int]:
        """Refuse a prime with characters the model never saw (naming them), unless they are to
        be skipped; returns (its characters, those the model knows)."""
        unknown: dict[str, None] = {}
        total = known = 0
        for piece in prime.raw_pieces():
            total += len(piece)
            if set(piece) <= self.known:
                known += len(piece)
                continue
            unknown.update(dict.fromkeys(self.vocab.unknown(piece)))
            known += sum(1 for char in piece if char in self.known)
        if unknown and not self.skip_unknown:
            names = [describe_char(c) for c in unknown]
            more = f" and {len(names) - 10} more" if len(names) > 10 else ""
            raise CorpusError(
                f"the prime has characters the model never saw: {', '.join(names[:10])}{more}; "
                "remove them or pass --skip-unknown"
            )
        return total, known

    def pieces(self) -> Iterator[str]:
        """The prime as the model reads it, in pieces of at most `chunk_chars` characters (read
        afresh on every call: what a caller echoes)."""
        for piece in chunks(self.prime.raw_pieces(), self.chunk_chars):
            if self.skip_unknown:
                piece = "".join(char for char in piece if char in self.known)
            if piece:
                yield piece

    def __iter__(self) -> Iterator[str]:
        if self._reader is None:
            self._reader = self._read()
        return self._reader

    @torch.inference_mode()
    def _read(self) -> Iterator[str]:
        model = self.model
        device = model.head.weight.device
        threads = self.threads or torch.get_num_threads()
        for piece in self.pieces():
            ids = self.vocab.encode(piece).long().to(device)
            state = None if self.context is None else self.context.state
            with sampling_threads(threads):
                self.context = read_ids(model, ids, state)
            yield piece

    def read(self) -> Context:
        """Read what is left of the prime; the context generation starts from."""
        for _ in self:
            pass
        assert self.context is not None  # an empty prime reads the default or has a context
        return self.context
