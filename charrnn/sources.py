"""Finding the files of a corpus: bundled names, files and folders, in a fixed order.

A corpus is one or more of: a bundled corpus name (``shakespeare``), a UTF-8 text file, or a
folder, read recursively. A folder's files are taken in sorted path order (component by
component, as Python sorts paths), filtered by ``include`` / ``exclude`` globs matched against
the path relative to the folder (``*`` and ``?`` stay within one folder, ``**`` spans any
number of them: ``*.txt`` matches the folder's own files, ``**/*.txt`` those at any depth).

Inside a folder these are skipped, and each skip is counted (the run's summary shows it):
hidden files and folders (a name starting with a dot), symlinks that loop back to a folder
above them, FIFOs, devices and sockets, unreadable entries, empty files, a second path to a file
already taken, and binary files (a NUL byte or invalid UTF-8 in their first 8 KiB). A file or
folder named directly is never skipped: it is read, or refused in one line (a FIFO or device
such as ``/dev/zero`` would never end, so it is refused as not a regular file).

The documents are joined with ``SEPARATOR`` (one newline) between them.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from charrnn import files
from charrnn.bundled import bundled_files
from charrnn.errors import CorpusError, shown

SEPARATOR = "\n"  # between two documents of a corpus
SNIFF_BYTES = 8192  # how much of a file in a folder is checked for being text


@dataclass(frozen=True)
class SourceFile:
    """One file of a corpus, as it stood when it was found."""

    path: Path  # absolute
    size: int
    mtime_ns: int

    def key(self) -> list:
        return [str(self.path), self.size, self.mtime_ns]


@dataclass
class Sources:
    """The files of a corpus, in reading order, and what was skipped on the way (by reason)."""

    files: list[SourceFile]
    skipped: Counter = field(default_factory=Counter)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    def skipped_text(self) -> str:
        """'2 hidden, 1 binary' (or '' when nothing was skipped)."""
        return ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items()))


def bundled_corpora() -> dict[str, Path]:
    """Names of the corpora that ship with charrnn, mapped to their files."""
    return bundled_files("charrnn.corpora", ".txt")


def find(
    corpus: str | list[str] | tuple[str, ...],
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
) -> Sources:
    """The files of a corpus (names, files and folders, in the order given). Raises CorpusError."""
    specs = [corpus] if isinstance(corpus, str) else list(corpus)
    if not specs:
        raise CorpusError("no corpus given")
    sources = Sources([])
    seen: set[tuple[int, int]] = set()
    for spec in specs:
        path = _resolve(spec)
        status = path.stat()
        if stat.S_ISDIR(status.st_mode):
            found = _walk(path, include, exclude, sources.skipped)
            if not found:
                skipped = sources.skipped_text() or "nothing in it"
                raise CorpusError(f"folder {spec!r} has no text files to read (skipped: {skipped})")
        else:
            if status.st_size == 0:
                raise CorpusError(f"corpus {spec!r} is empty; give a file with some text in it")
            found = [(SourceFile(path.absolute(), status.st_size, status.st_mtime_ns), status)]
        for source, status in found:
            identity = (status.st_dev, status.st_ino)
            if identity in seen:
                sources.skipped["duplicate"] += 1
                continue
            seen.add(identity)
            sources.files.append(source)
    return sources


def _resolve(spec: str) -> Path:
    """A bundled name or a path -> an existing regular file or folder. Raises CorpusError."""
    bundled = bundled_corpora()
    if spec in bundled:
        return bundled[spec]
    path = Path(spec).expanduser()
    try:
        status = path.stat()
    except OSError:
        known = ", ".join(sorted(bundled)) or "none"
        raise CorpusError(
            f"corpus {shown(spec)} is neither a file nor a bundled corpus (bundled: {known})"
        ) from None
    if not (stat.S_ISREG(status.st_mode) or stat.S_ISDIR(status.st_mode)):
        raise CorpusError(
            f"corpus {shown(spec)} is {files.kind(status.st_mode)}, not a regular file (it may "
            "never end); give a text file or a folder"
        )
    return path


def _walk(
    root: Path, include, exclude, skipped: Counter
) -> list[tuple[SourceFile, os.stat_result]]:
    """Every text file under `root`, sorted by path; skips are counted into `skipped`."""
    found = []
    root_status = root.stat()
    # (folder, its parts relative to root, the (device, inode) of it and every folder above it)
    stack = [(root, (), frozenset({(root_status.st_dev, root_status.st_ino)}))]
    while stack:
        folder, parts, above = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            skipped["unreadable"] += 1
            continue
        for entry in entries:
            if entry.name.startswith("."):
                skipped["hidden"] += 1
                continue
            try:
                status = os.stat(entry.path)  # follows symlinks
            except OSError:  # a dangling symlink, a link loop of files, no permission
                skipped["unreadable"] += 1
                continue
            relative = (*parts, entry.name)
            if stat.S_ISDIR(status.st_mode):
                identity = (status.st_dev, status.st_ino)
                if identity in above:
                    skipped["symlink loop"] += 1
                    continue
                stack.append((Path(entry.path), relative, above | {identity}))
            elif not stat.S_ISREG(status.st_mode):
                skipped["not a regular file"] += 1
            elif not _selected("/".join(relative), include, exclude):
                skipped["excluded by --include/--exclude"] += 1
            elif status.st_size == 0:
                skipped["empty"] += 1
            elif is_binary(Path(entry.path), status.st_size):
                skipped["binary"] += 1
            else:
                source = SourceFile(Path(entry.path).absolute(), status.st_size, status.st_mtime_ns)
                found.append((relative, source, status))
    found.sort(key=lambda item: item[0])
    return [(source, status) for _, source, status in found]


def is_binary(path: Path, size: int) -> bool:
    """A NUL byte or invalid UTF-8 in the first SNIFF_BYTES (an unreadable file counts too)."""
    try:
        with open(path, "rb") as file:
            head = file.read(SNIFF_BYTES)
    except OSError:
        return True
    if b"\0" in head:
        return True
    try:
        # A character cut at the end of the sniffed part is not an error (final=False).
        codecs.getincrementaldecoder("utf-8")().decode(head, final=size <= SNIFF_BYTES)
    except UnicodeDecodeError:
        return True
    return False


def _selected(relative: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    if include and not any(_glob(p).fullmatch(relative) for p in include):
        return False
    return not any(_glob(p).fullmatch(relative) for p in exclude)


@lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern:
    """A glob as a regular expression over '/'-separated relative paths.

    ``**/`` is any number of folders (none included), a trailing ``/**`` anything below, ``*``
    any characters but '/', ``?`` one, ``[...]`` a class (``[!...]`` negated).
    """
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = re.escape(body[1:] if negate else body).replace("\\-", "-")
            out.append(f"[{'^' if negate else ''}{body}]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)
