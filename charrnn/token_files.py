"""The token cache's files as `charrnn cache list` shows them, and `charrnn cache clear`.

Each file is described from its own contents (a ``.tokens`` header, a ``.scan.json``) and
marked stale when one of the sources it was made from changed or is gone: such an entry will
never be used again (a changed file gets a new entry) and only takes space.

A file that cannot be read as what its name says (bad JSON, a header of the wrong shape) is
damaged, with what is wrong in `problem`. A temporary file (``.<entry>.tmp-<pid>``, a write in
progress) is building while it may still be finished and abandoned once it never will be.
Every one is written while its entry's lock is held (`charrnn.tokens._locked`), so where
advisory locks exist (POSIX) that lock tells: a temporary is building exactly while a build
holds its entry's lock, however quiet (a build paused with Ctrl-Z still holds it), and
abandoned once none does: its build was stopped. Its name's process id is not asked, since ids
are reused (a container's first process is always 1): a live process with that id need not be
its writer. Where there are no such locks (Windows) a temporary is abandoned when

* its writer, the process whose id ends its name, is gone (`charrnn.files.writer_is_gone`, the
  rule `remove_stale_temporaries` applies to every folder charrnn writes), or
* where that cannot be told (no probe for whether a process lives, a name that names no
  process), it has not been written to for `ABANDONED_AFTER` seconds: a build writes its
  entry chunk by chunk and renames it as soon as it is done.

Anything else in the folder (a file charrnn does not write, such as ``.DS_Store`` or someone's
notes, a folder, a symlink) is foreign: listed so, and never removed.

`cache clear` removes abandoned temporaries and counts their bytes; it leaves building ones.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charrnn.errors import CorpusError
from charrnn.files import target_of, writer_is_gone, writer_of
from charrnn.tokens import can_lock, folder, is_locked, lock_path, read_header

ABANDONED_AFTER = 3600  # seconds without a write after which a temporary is abandoned
DTYPES = ("uint8", "uint16", "uint32")  # what charrnn.tokens writes ids as
ENTRIES = (".tokens", ".scan.json")  # the cache files written atomically, through temporaries
FOREIGN = "not a file of charrnn's cache: left alone"


@dataclass(frozen=True)
class CachedFile:
    """One file of the token cache, as `charrnn cache list` shows it."""

    path: Path
    bytes: int
    kind: str  # tokens | scan | lock | temporary | other (not charrnn's)
    # ok | stale (a source changed or is gone) | damaged | building | abandoned (a temporary
    # nobody will finish) | foreign (kind other: never removed)
    state: str
    sources: list[str]
    count: int | None  # ids in a tokens entry
    vocab_size: int | None
    mtime: float
    problem: str = ""  # why it is damaged, abandoned or foreign


def list_cache() -> list[CachedFile]:
    """Every file of the token cache, entries first, by name."""
    root = folder()
    if not root.is_dir():
        return []
    described = (_describe(path) for path in sorted(root.iterdir(), key=_order))
    return [item for item in described if item is not None]


def _order(path: Path) -> tuple[int, str]:
    kinds = (".tokens", ".scan.json", ".lock")
    rank = next((i for i, suffix in enumerate(kinds) if path.name.endswith(suffix)), len(kinds))
    return rank, path.name


def _describe(path: Path) -> CachedFile | None:
    """The file at `path`, or None when it went away since the folder was read (a build just
    renamed its temporary into place)."""
    try:
        status = path.lstat()  # a symlink is described as itself, never as what it points to
    except FileNotFoundError:
        return None
    kind = _kind(path.name, status.st_mode)
    if kind == "other":
        size = status.st_size if stat.S_ISREG(status.st_mode) else 0  # a folder's is no content
        return CachedFile(path, size, kind, "foreign", [], None, None, status.st_mtime, FOREIGN)
    sources: list[dict] = []
    count = vocab_size = None
    problem = ""
    if kind == "tokens":
        try:
            header = read_header(path)
            problem = _header_problem(header)
            if not problem:  # what it holds is shown even when the ids are cut short
                sources, count = header["sources"], header["count"]
                vocab_size = len(header["vocab"])
                expected = header["offset"] + count * np.dtype(header["dtype"]).itemsize
                if status.st_size != expected:
                    problem = f"it has {status.st_size:,} bytes, its header promises {expected:,}"
        except OSError as error:
            problem = f"cannot be read: {error.strerror or error}"
        except (ValueError, RecursionError) as error:  # JSON nested past Python's stack too
            # read_header's own words, except for a header that is no JSON (its checksum
            # matched, so it was written so) where json's would name a character position.
            problem = str(error) if type(error) is ValueError else "its header is not JSON"
    elif kind == "scan":
        try:
            scan = json.loads(path.read_text(encoding="utf-8"))
            problem = _scan_problem(scan)
            if not problem:
                sources = scan["files"]
        except OSError as error:
            problem = f"cannot be read: {error.strerror or error}"
        except (ValueError, RecursionError):
            problem = "not JSON (or not UTF-8)"
    elif kind == "temporary":
        problem = _abandoned(path, status.st_mtime)
    if kind == "lock":
        state = "building" if is_locked(path) else "ok"
    elif kind == "temporary":
        state = "abandoned" if problem else "building"
    elif problem:
        state = "damaged"
    else:
        state = "ok" if not sources or all(map(_unchanged, sources)) else "stale"
    names = [source["path"] for source in sources]
    return CachedFile(path, status.st_size, kind, state, names, count, vocab_size,
                      status.st_mtime, problem)  # fmt: skip


def _kind(name: str, mode: int) -> str:
    """What charrnn made a cache file as, by its name and type; "other" when it did not."""
    if not stat.S_ISREG(mode):  # charrnn makes no folder, link or FIFO here
        return "other"
    for suffix, kind in ((".tokens", "tokens"), (".scan.json", "scan"), (".lock", "lock")):
        if name.endswith(suffix):
            return kind
    target = target_of(Path(name))
    return "temporary" if target is not None and target.name.endswith(ENTRIES) else "other"


# Checked before anything is used: a header or scan file can be valid JSON of any shape (a
# damaged disk, another version, a hand edit), and listing it must say so, not fail on it.
def _header_problem(header: dict[str, Any]) -> str:
    """What is wrong with the shape of a .tokens file's (checksummed) `header`, or ""."""
    if problem := _sources_problem(header.get("sources"), "its header's sources"):
        return problem
    count, offset = header.get("count"), header.get("offset")
    if not _is_count(count):
        return "its header's count is not a whole number of ids"
    if not _is_count(offset):
        return "its header's offset is not a whole number of bytes"
    if header.get("dtype") not in DTYPES:
        return f"its header's dtype is not one of {', '.join(DTYPES)}"
    if not isinstance(header.get("vocab"), list):
        return "its header's vocabulary is not a list"
    return ""


def _scan_problem(scan: Any) -> str:
    """What is wrong with the contents of a .scan.json file, or "" if nothing."""
    if not isinstance(scan, dict):
        names = {list: "a list", str: "a string", bool: "true or false", type(None): "null"}
        return f"holds {names.get(type(scan), 'a number')}, not a table"
    return _sources_problem(scan.get("files"), "its files")


def _sources_problem(sources: Any, what: str) -> str:
    """What is wrong with a list of source records ({path, size, mtime_ns, ...}), or ""."""
    if not isinstance(sources, list):
        return f"{what} are not a list"
    for source in sources:
        if not (
            isinstance(source, dict)
            and isinstance(source.get("path"), str)
            and _is_count(source.get("size"))
            and _is_int(source.get("mtime_ns"))  # before 1970 is negative
        ):
            return f"{what} hold a record that is not a path with a size and a time"
    return ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON's true is no number


def _is_count(value: Any) -> bool:
    return _is_int(value) and value >= 0


def _abandoned(path: Path, mtime: float) -> str:
    """Why the temporary file `path` will never be finished, or "" while it may be."""
    if can_lock():
        target = target_of(path)
        assert target is not None  # _kind took it for a temporary by this very name
        if is_locked(lock_path(target)):
            return ""
        return "no build holds its entry's lock: its build was stopped"
    gone = writer_is_gone(path)
    if gone:
        return f"its writer (process {writer_of(path)}) is gone"
    quiet = time.time() - mtime
    if gone is None and quiet >= ABANDONED_AFTER:  # a live writer may be paused: leave it
        return f"not written to for {quiet / 60:,.0f} minutes"
    return ""


def _unchanged(source: dict[str, Any]) -> bool:
    """Whether a source file (a record `_sources_problem` accepted) is as it was."""
    try:
        status = os.stat(source["path"])
    except (OSError, ValueError):  # gone, unreadable, or a path with a NUL in it
        return False
    return status.st_size == source["size"] and status.st_mtime_ns == source["mtime_ns"]


def clear_cache(stale_only: bool = False) -> tuple[int, int]:
    """Delete the token cache's files (only stale and damaged ones with `stale_only`); returns
    (files removed, bytes freed). Entries being built now, their locks and their temporaries
    are left alone; abandoned temporaries go in either case, counted. The other locks go too,
    uncounted (`cache list` does not show them: empty, and no entry). Foreign files, folders
    and links are never touched."""
    removed = freed = 0
    for item in list_cache():
        if item.state in ("building", "foreign") or (stale_only and item.state == "ok"):
            continue
        if item.kind == "lock" and stale_only:
            continue
        try:
            # Checked again just before: a file swapped for a folder or a link since it was
            # listed is no longer charrnn's to remove.
            if not stat.S_ISREG(item.path.lstat().st_mode):
                continue
            item.path.unlink()
        except FileNotFoundError:  # a build renamed its temporary, or another clear was first
            continue
        except OSError as error:
            raise CorpusError(
                f"cannot remove {str(item.path)!r} from the token cache: "
                f"{error.strerror or error} (removed {removed} file(s) before it)"
            ) from None
        removed += item.kind != "lock"
        freed += item.bytes
    return removed, freed
