"""Opening the files a user names (configs, checkpoints, metrics, corpora): regular files only.

A FIFO, a socket or a device where a file is expected would block forever (a FIFO nobody
writes to) or never end (``/dev/zero``): each is refused before a byte is read. Opening uses
``O_NONBLOCK`` and checks what was opened (``fstat``), so a path swapped for a FIFO between
the check and the read cannot block either.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from charrnn.errors import CharRNNError

KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}


def kind(mode: int) -> str:
    return KINDS.get(stat.S_IFMT(mode), "not a regular file")


def refuse_special(path: str | Path, error: type[CharRNNError], what: str) -> None:
    """Raise `error` when `path` exists and is a FIFO, socket or device (not a file or folder).

    For paths handed to another reader (torch.load, a corpus reader) that would open them.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return  # missing or unreadable: the reader says so in its own words
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise error(f"{what} {str(path)!r} is {kind(mode)}, not a regular file")


def open_regular(path: str | Path, error: type[CharRNNError], what: str) -> BinaryIO:
    """`path` opened for reading in binary; anything but a regular file is refused unread."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as error_:
        reason = "it is a socket" if error_.errno == 6 else error_.strerror  # ENXIO: a socket
        raise error(f"cannot read {what} {str(path)!r}: {reason}") from None
    except ValueError:  # a NUL character in the path
        raise error(f"cannot read {what} {str(path)!r}: the path holds a NUL character") from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise error(f"{what} {str(path)!r} is {kind(mode)}, not a regular file")
    return os.fdopen(descriptor, "rb")


def read_bytes(path: str | Path, error: type[CharRNNError], what: str, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; larger ones are refused unread."""
    with open_regular(path, error, what) as file:
        size = os.fstat(file.fileno()).st_size
        if size > limit:
            raise error(
                f"{what} {str(path)!r} is {size:,} bytes; at most {limit:,} are read "
                f"(is it really a {what}?)"
            )
        try:
            data = file.read(limit + 1)
        except OSError as error_:
            raise error(f"cannot read {what} {str(path)!r}: {error_.strerror}") from None
    if len(data) > limit:  # it grew while being read
        raise error(f"{what} {str(path)!r} is over {limit:,} bytes; at most that is read")
    return data
