"""The token cache's files as `charrnn cache list` shows them, and `charrnn cache clear`.

Each file is described from its own contents (a ``.tokens`` header, a ``.scan.json``) and
marked stale when one of the sources it was made from changed or is gone: such an entry will
never be used again (a changed file gets a new entry) and only takes space.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charrnn.files import remove_stale_temporaries
from charrnn.tokens import folder, is_locked, read_header


@dataclass(frozen=True)
class CachedFile:
    """One file of the token cache, as `charrnn cache list` shows it."""

    path: Path
    bytes: int
    kind: str  # tokens | scan | lock | temporary
    state: str  # ok | stale (a source changed or is gone) | damaged | building
    sources: list[str]
    count: int | None  # ids in a tokens entry
    vocab_size: int | None
    mtime: float


def list_cache() -> list[CachedFile]:
    """Every file of the token cache, entries first, by name."""
    root = folder()
    if not root.is_dir():
        return []
    return [_describe(path) for path in sorted(root.iterdir(), key=_order)]


def _order(path: Path) -> tuple[int, str]:
    kinds = (".tokens", ".scan.json", ".lock")
    rank = next((i for i, suffix in enumerate(kinds) if path.name.endswith(suffix)), len(kinds))
    return rank, path.name


def _describe(path: Path) -> CachedFile:
    status = path.stat()
    sources: list[dict] = []
    count = vocab_size = None
    if path.name.endswith(".tokens"):
        kind = "tokens"
        try:
            header = read_header(path)
            sources, count = header["sources"], header["count"]
            vocab_size = len(header["vocab"])
            expected = header["offset"] + count * np.dtype(header["dtype"]).itemsize
            state = "ok" if status.st_size == expected else "damaged"
        except (OSError, ValueError, KeyError, TypeError):
            state = "damaged"
    elif path.name.endswith(".scan.json"):
        kind = "scan"
        try:
            sources = json.loads(path.read_text(encoding="utf-8"))["files"]
            state = "ok"
        except (OSError, ValueError, KeyError, TypeError):
            state = "damaged"
    elif path.name.endswith(".lock"):
        kind, state = "lock", "building" if is_locked(path) else "ok"
    else:
        kind, state = "temporary", "building"
    if state == "ok" and sources and not all(map(_unchanged, sources)):
        state = "stale"
    names = [str(s.get("path")) for s in sources if isinstance(s, dict)]
    return CachedFile(path, status.st_size, kind, state, names, count, vocab_size,
                      status.st_mtime)  # fmt: skip


def _unchanged(source: Any) -> bool:
    try:
        status = os.stat(source["path"])
    except (OSError, TypeError, KeyError):
        return False
    return status.st_size == source["size"] and status.st_mtime_ns == source["mtime_ns"]


def clear_cache(stale_only: bool = False) -> tuple[int, int]:
    """Delete the token cache's files (only stale and damaged ones with `stale_only`); returns
    (files removed, bytes freed). Entries being built now and their locks are left alone; the
    other locks go too, uncounted (`cache list` does not show them: empty, and no entry)."""
    removed = freed = 0
    if folder().is_dir():
        removed += remove_stale_temporaries(folder())  # of builds that were killed
    for item in list_cache():
        if item.state == "building" or (stale_only and item.state == "ok"):
            continue
        if item.kind == "lock" and stale_only:
            continue
        with contextlib.suppress(FileNotFoundError):
            item.path.unlink()
            removed += item.kind != "lock"
            freed += item.bytes
    return removed, freed
