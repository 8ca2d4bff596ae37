"""The token cache: a corpus encoded once into a file of ids, then read through a memory map.

Training reads its corpus from here, so the memory a run holds does not grow with the corpus:
the ids are pages of a file (the kernel's page cache), not the process's own memory. Two passes
over the source files build an entry, each in bounded chunks, with a progress bar in bytes:

1. **scan**: count every character (the vocabulary is chosen from the counts) and take each
   file's sha256 and the sha256 of the joined text (the corpus's content fingerprint);
2. **encode**: write the ids, uint8, uint16 or uint32 by the vocabulary's size.

Under the cache root (charrnn.cache), in ``tokens/``::

    <sources>.scan.json           what pass 1 found (per-file size, mtime, sha256; counts)
    <sources>-<vocab>.tokens      a header, then the ids
    <name>.lock                   held while that entry is built

``<sources>`` is a digest of the source files' paths, sizes and modification times (and the
separator), ``<vocab>`` one of the vocabulary (and whether unknown characters map to U+FFFD).
Editing a file changes its size or time, so it gets a new entry; ``charrnn cache list`` shows
the old one as stale and ``charrnn cache clear`` removes entries.

A ``.tokens`` file is ``MAGIC`` (8 bytes), the header's length (8 bytes, little-endian), the
header's sha256 (32 bytes), the header (JSON: format, sources with their sha256, fingerprint,
vocabulary, dtype, count, offset), zero padding to a multiple of 4096, then ``count`` ids. A
hit checks the header (its digest, the sources, the vocabulary) and the file's size, not a
full re-hash of the corpus; anything else is damage, and a damaged entry is rebuilt, never
used. Entries are written to a temporary file and renamed into place (a killed build leaves no
half entry), under an exclusive lock, so two runs do not build the same entry at once: the
second waits and then finds it built.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from charrnn import cache
from charrnn.errors import CorpusError
from charrnn.files import write_atomically
from charrnn.sources import SEPARATOR, SourceFile, Sources
from charrnn.vocab import UNKNOWN, Vocabulary, code_points

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; two builds then race, each atomically
    fcntl = None

FORMAT = 1
MAGIC = b"CRNNTOK\n"
ALIGN = 4096
READ_CHUNK = 4 << 20  # bytes read from a source at a time
PREFIX = struct.Struct("<8sQ32s")  # magic, header length, header sha256


def folder() -> Path:
    return cache.cache_root() / "tokens"


@dataclass(frozen=True)
class Scan:
    """Pass 1 over a corpus's sources: per-file facts, character counts, fingerprint."""

    files: list[dict[str, Any]]  # {path, size, mtime_ns, sha256} in reading order
    counts: dict[str, int]
    characters: int
    fingerprint: str  # sha256 of the joined text (the files' bytes and separators)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "files": self.files, "counts": self.counts,
                "characters": self.characters, "fingerprint": self.fingerprint}  # fmt: skip


@dataclass(frozen=True)
class Entry:
    """A cache entry opened for reading: the ids (a read-only memory map) and its header."""

    path: Path
    ids: np.ndarray  # (count,) uint8/uint16/uint32, memory-mapped
    header: dict[str, Any]
    built: bool  # this call built it (False: a cache hit)


def sources_key(sources: Sources) -> str:
    described = [FORMAT, SEPARATOR, [f.key() for f in sources.files]]
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()[:32]


def vocab_key(vocab: Vocabulary, map_unknown: bool) -> str:
    described = json.dumps([vocab.to_list(), map_unknown], ensure_ascii=True)
    return hashlib.sha256(described.encode()).hexdigest()[:16]


def _progress(total: int, description: str, show: bool | None) -> tqdm:
    # show=None: only on a terminal (tqdm's own test), as the training bar does.
    disable = None if show is None else not show
    return tqdm(total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024,
                disable=disable, leave=False, dynamic_ncols=True)  # fmt: skip


# --------------------------------------------------------------------------- pass 1: scan


def scan(sources: Sources, show_progress: bool | None = None) -> Scan:
    """The scan of `sources`, from the cache when their paths, sizes and times match."""
    path = folder() / f"{sources_key(sources)}.scan.json"
    found = _read_scan(path, sources)
    if found is not None:
        return found
    with _locked(path):
        found = _read_scan(path, sources)  # another process may have scanned meanwhile
        if found is not None:
            return found
        result = _scan(sources, show_progress)
        text = json.dumps(result.to_json(), ensure_ascii=True).encode()
        _write_atomically(path, lambda file: file.write(text))
        return result


def _read_scan(path: Path, sources: Sources) -> Scan | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        files = raw["files"]
        if raw["format"] != FORMAT or [[f["path"], f["size"], f["mtime_ns"]] for f in files] != [
            f.key() for f in sources.files
        ]:
            return None
        return Scan(files, {k: int(v) for k, v in raw["counts"].items()}, int(raw["characters"]),
                    str(raw["fingerprint"]))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing or damaged: scanned again


def _scan(sources: Sources, show_progress: bool | None) -> Scan:
    counts = np.zeros(0x110000, dtype=np.int64)
    joined = hashlib.sha256()
    files = []
    with _progress(sources.bytes, "reading corpus (1/2)", show_progress) as bar:
        for index, source in enumerate(sources.files):
            if index:
                joined.update(SEPARATOR.encode())
                counts[ord(SEPARATOR)] += 1
            own = hashlib.sha256()
            for chunk, codes in _read(source, bar):
                own.update(chunk)
                if len(sources.files) > 1:  # one file: its own digest is the joined one's
                    joined.update(chunk)
                found = byte_counts(chunk) if codes.dtype == np.uint8 else np.bincount(codes)
                counts[: len(found)] += found
            files.append({"path": str(source.path), "size": source.size,
                          "mtime_ns": source.mtime_ns, "sha256": own.hexdigest()})  # fmt: skip
    present = np.flatnonzero(counts)
    return Scan(
        files,
        {chr(int(code)): int(counts[code]) for code in present},
        int(counts.sum()),
        joined.hexdigest() if len(files) > 1 else files[0]["sha256"],
    )


def byte_counts(chunk: bytes) -> np.ndarray:
    """How often each byte value occurs in `chunk`, (256,) int64.

    Counted as pairs of bytes (one uint16 each): np.bincount widens its input to 8 bytes an
    element, so half as many elements is twice as fast, and the pairs' table gives both bytes'
    counts (each byte value is a pair's first or second byte, whatever the machine's order).
    """
    even = len(chunk) - len(chunk) % 2
    pairs = np.bincount(np.frombuffer(chunk, np.uint16, count=even // 2), minlength=1 << 16)
    pairs = pairs.reshape(256, 256)
    counts = pairs.sum(axis=0) + pairs.sum(axis=1)
    if even < len(chunk):
        counts[chunk[-1]] += 1
    return counts


def _read(source: SourceFile, bar: tqdm) -> Iterator[tuple[bytes, np.ndarray]]:
    """(raw chunk, its code points) of a file, decoded in chunks; invalid UTF-8 is refused
    with its byte offset, and a file that changes size while read is refused too."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        with open(source.path, "rb") as file:
            while chunk := file.read(READ_CHUNK):
                pending = decoder.getstate()[0]
                if chunk.isascii() and not pending:
                    codes = np.frombuffer(chunk, dtype=np.uint8)
                else:
                    try:
                        text = decoder.decode(chunk, final=False)
                    except UnicodeDecodeError as error:
                        at = offset - len(pending) + error.start
                        raise not_utf8(
                            f"corpus {str(source.path)!r}", at, error.object[error.start]
                        ) from None
                    codes = code_points(text)
                yield chunk, codes
                offset += len(chunk)
                bar.update(len(chunk))
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError as error:
                at = offset - len(error.object) + error.start
                raise not_utf8(
                    f"corpus {str(source.path)!r}", at, error.object[error.start]
                ) from None
    except OSError as error:
        raise CorpusError(f"cannot read corpus {str(source.path)!r}: {error.strerror}") from None
    if offset != source.size:
        raise CorpusError(
            f"corpus file {str(source.path)!r} changed while it was read ({source.size:,} bytes "
            f"when found, {offset:,} read); run again once it is written"
        )


def not_utf8(named: str, at: int, value: int) -> CorpusError:
    """The refusal of a text file (`named`: what it is and its path) that is not UTF-8."""
    return CorpusError(
        f"{named} is not valid UTF-8: byte {at} (0x{value:02x}) cannot be decoded; convert "
        "the file to UTF-8"
    )


# --------------------------------------------------------------------------- pass 2: encode


def open_entry(
    sources: Sources,
    found: Scan,
    vocab: Vocabulary,
    map_unknown: bool = False,
    show_progress: bool | None = None,
    log=lambda line: None,
) -> Entry:
    """The ids of `sources` in `vocab`: a cache hit, or built now (under the entry's lock).

    With `map_unknown`, characters outside the vocabulary become UNKNOWN (which must be in it);
    otherwise they are refused by name.
    """
    path = folder() / f"{sources_key(sources)}-{vocab_key(vocab, map_unknown)}.tokens"
    expected = _expected_header(found, vocab, map_unknown)
    entry, problem = _open(path, expected)
    if entry is not None:
        return entry
    with _locked(path):
        entry, problem = _open(path, expected)  # built by another process while we waited?
        if entry is not None:
            return entry
        if problem != "missing":
            log(f"rebuilding the token cache entry {path.name}: {problem}")
        _build(path, sources, found, expected, vocab, map_unknown, show_progress)
        entry, problem = _open(path, expected)
    if entry is None:
        raise CorpusError(f"the token cache entry {str(path)!r} is unreadable: {problem}")
    return Entry(entry.path, entry.ids, entry.header, built=True)


def _expected_header(found: Scan, vocab: Vocabulary, map_unknown: bool) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "sources": found.files,
        "separator": SEPARATOR,
        "fingerprint": found.fingerprint,
        "vocab": vocab.to_list(),
        "map_unknown": map_unknown,
        "dtype": vocab.token_dtype.name,
        "count": found.characters,
    }


def read_header(path: Path) -> dict[str, Any]:
    """The header of a .tokens file, checked against its digest. Raises ValueError if damaged."""
    with open(path, "rb") as file:
        prefix = file.read(PREFIX.size)
        if len(prefix) != PREFIX.size:
            raise ValueError("shorter than a header")
        magic, length, digest = PREFIX.unpack(prefix)
        if magic != MAGIC or length > 1 << 30:
            raise ValueError("not a token file")
        raw = file.read(length)
    if len(raw) != length or hashlib.sha256(raw).digest() != digest:
        raise ValueError("its header does not match its checksum")
    header = json.loads(raw)
    if not isinstance(header, dict):
        raise ValueError("its header is not a table")
    return header


def _open(path: Path, expected: dict[str, Any]) -> tuple[Entry | None, str]:
    """(the entry, "") when `path` is a sound entry with the `expected` header, else
    (None, what is wrong with it)."""
    try:
        header = read_header(path)
        size = path.stat().st_size
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as error:
        return None, str(error)
    offset = header.get("offset")
    if {k: header.get(k) for k in expected} != expected or not isinstance(offset, int):
        return None, "its header describes other sources or another vocabulary"
    dtype = np.dtype(expected["dtype"])
    promised = offset + expected["count"] * dtype.itemsize
    if size != promised:
        return None, f"it has {size:,} bytes, its header promises {promised:,}"
    # mode "c" (copy on write): numpy's array is writable, so torch can share it without a
    # copy; nothing ever writes to it, so every page stays the file's.
    ids = np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=(expected["count"],))
    return Entry(path, ids, header, built=False), ""


def _build(path: Path, sources: Sources, found: Scan, header: dict[str, Any],
           vocab: Vocabulary, map_unknown: bool, show_progress: bool | None) -> None:  # fmt: skip
    dtype = vocab.token_dtype
    unknown = vocab.id_of(UNKNOWN) if map_unknown else None
    # Every character the scan counted is in the vocabulary (the usual case): one lookup in a
    # table of the file's own dtype, no checks. Otherwise unknown ones are mapped or refused.
    known = all(char in vocab for char in found.counts)
    typed_table = np.maximum(vocab.table, 0).astype(dtype)
    separator = vocab.lookup(code_points(SEPARATOR)).astype(dtype)
    raw = json.dumps({**header, "offset": 0}, ensure_ascii=True)
    # The offset is part of the header, so its length is fixed first (padded to ALIGN).
    offset = -(-(PREFIX.size + len(raw) + 32) // ALIGN) * ALIGN
    raw = json.dumps({**header, "offset": offset}, ensure_ascii=True).encode()

    def write(file) -> None:
        file.write(PREFIX.pack(MAGIC, len(raw), hashlib.sha256(raw).digest()))
        file.write(raw)
        file.write(b"\0" * (offset - PREFIX.size - len(raw)))
        with _progress(sources.bytes, "encoding corpus (2/2)", show_progress) as bar:
            for index, source in enumerate(sources.files):
                if index:
                    file.write(separator.tobytes())
                for _, codes in _read(source, bar):
                    if known and codes.size and int(codes.max()) < len(typed_table):
                        file.write(typed_table[codes])
                        continue
                    ids = vocab.lookup(codes)
                    if ids.size and ids.min() < 0:
                        if unknown is None:
                            raise CorpusError(_unknown_message(vocab, codes[ids < 0], source))
                        ids[ids < 0] = unknown
                    file.write(ids.astype(dtype))

    _write_atomically(path, write)


def _unknown_message(vocab: Vocabulary, codes: np.ndarray, source: SourceFile) -> str:
    missing = "".join(chr(int(c)) for c in np.unique(codes)[:50])
    shown = vocab.describe_unknown(missing)
    return f"{str(source.path)!r} has characters not in the vocabulary: {shown}"


# --------------------------------------------------------------------------- files and locks


def _write_atomically(path: Path, write) -> None:
    # Called only inside `_locked(path)` (by `scan` and `_build`), so every temporary in the
    # cache is written while its entry's lock is held: `charrnn cache clear` takes one whose
    # lock is free for a stopped build's, whatever process id its name holds.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, write)
    except OSError as error:
        raise CorpusError(
            f"cannot write the token cache {str(path.parent)!r}: {error.strerror or error}; set "
            f"{cache.ENV_VAR} to a folder you can write to"
        ) from None


def lock_path(path: Path) -> Path:
    """The lock file held while the cache file `path` is built: an entry's ``<key>.lock``."""
    return path.with_name(path.name.split(".", 1)[0] + ".lock")


def can_lock() -> bool:
    """Whether this system has the advisory locks `_locked` takes (not Windows)."""
    return fcntl is not None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold `path`'s lock file exclusively (blocking) while building it."""
    lock = lock_path(path)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise CorpusError(
            f"cannot use the token cache {str(lock.parent)!r}: {error.strerror}; set "
            f"{cache.ENV_VAR} to a folder you can write to"
        ) from None
    try:
        if fcntl is not None:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def is_locked(lock: Path) -> bool:
    """Whether a build holds `lock` now (this process's own builds included)."""
    if fcntl is None:
        return False
    # flock needs no write access, and O_NONBLOCK keeps a FIFO put in the lock's place from
    # blocking the open.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(lock, flags)
    except FileNotFoundError:
        return False  # a build makes its lock file before it writes anything
    except OSError:
        return True  # unreadable (another user's cache): what cannot be told is left alone
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(descriptor)
    return False
