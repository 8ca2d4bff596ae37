"""Writing files so that a crash, a kill or a full disk never leaves half of one; reading only
what is a file.

Every file charrnn writes (checkpoints, ``config.toml``, exported models, sampled text, HTML
views) goes through `write_atomically`: a temporary file beside the target is filled, flushed
and fsynced, then ``os.replace``d over it, so the target is either the old file or the new one.
A kill mid-write leaves the temporary behind; `remove_stale_temporaries` deletes those whose
writer is gone.

The outputs a person names on the command line (``sample --out-dir``, ``explain --html``) are
checked before any work is done (`check_outputs`): a folder that is a file, a missing folder or
an existing file (without ``--force``) is one clear refusal, not a traceback after a long run.

Reading takes only regular files where a file is expected (configs, checkpoints, metrics,
corpora): a FIFO, a socket or a device would block forever (a FIFO nobody writes to) or never
end (``/dev/zero``), so each is refused before a byte is read. `open_regular` opens with
``O_NONBLOCK`` and checks what it opened (``fstat``), so a path swapped for a FIFO between a
check and the read cannot block either.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from charrnn.errors import CharRNNError, OutputError

TEMPORARY_MARK = ".tmp-"  # .last.pt.tmp-<pid>: a write in progress, or one a kill interrupted


def temporary_for(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}")


def target_of(temporary: Path) -> Path | None:
    """The file a temporary of `temporary_for`'s naming is written for, or None when its name
    is not such a temporary's."""
    name = temporary.name
    if not name.startswith(".") or TEMPORARY_MARK not in name:
        return None
    target = name[1:].rsplit(TEMPORARY_MARK, 1)[0]
    return None if target in ("", ".", "..") else temporary.with_name(target)


def writer_of(temporary: Path) -> str:
    """What follows the mark in a temporary's name: its writer's process id, if it is one."""
    return temporary.name.rsplit(TEMPORARY_MARK, 1)[1] if TEMPORARY_MARK in temporary.name else ""


def write_atomically(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Let `write` fill a temporary file beside `path`, make it durable, then put it in place.

    Whatever fails (or is killed, or interrupted) on the way, `path` is either the old file or
    the new one. Errors are raised as they come, after the temporary file is removed.
    """
    path = Path(path)
    temporary = _durable_temporary(path, write)
    try:
        os.replace(temporary, path)
    except BaseException:
        _remove(temporary)
        raise
    _fsync_directory(path.parent)


def write_all(writes: dict[Path, Callable[[BinaryIO], Any]]) -> None:
    """Let each function fill its file: all of the files, or (the disk refused one) none.

    Every temporary is written (and made durable) first and only then renamed into place, so a
    full disk halfway leaves no new file at all. Raises OutputError naming the file that could
    not be written.
    """
    done: list[Path] = []
    try:
        for path, write in writes.items():
            done.append(_durable_temporary(Path(path), write))
    except BaseException as error:
        for temporary in done:
            _remove(temporary)
        if isinstance(error, OSError):
            reason = f"{error.strerror or error}; nothing was written"
            raise OutputError(f"cannot write {str(path)!r}: {reason}") from None
        raise
    for temporary, path in zip(done, writes, strict=True):
        os.replace(temporary, path)
    for folder in {Path(path).parent for path in writes}:
        _fsync_directory(folder)


def write_texts(texts: dict[Path, str]) -> None:
    """Write UTF-8 files, all of them or none (see write_all)."""
    write_all({path: _writer(text.encode("utf-8")) for path, text in texts.items()})


def _writer(data: bytes) -> Callable[[BinaryIO], Any]:
    return lambda file: file.write(data)


def check_outputs(paths: list[Path], force: bool, *, create_folder: bool) -> None:
    """Refuse, before any work, outputs that could not be written or would replace a file.

    create_folder: the folder of the outputs may be missing (it is made when they are written);
    otherwise it must exist.
    """
    for path in paths:
        path = Path(path)
        folder = path.parent
        blocking = _first_non_folder(folder)
        if blocking is not None:
            raise OutputError(
                f"cannot write into {str(folder)!r}: {str(blocking)!r} is a file, not a folder"
            )
        if not create_folder and not folder.is_dir():
            raise OutputError(
                f"the folder {str(folder)!r} does not exist; create it or choose another path"
            )
        if path.is_dir():
            raise OutputError(f"{str(path)!r} is a folder; give a file name")
        if path.exists() and not force:
            raise OutputError(f"{str(path)!r} already exists; use --force to replace it")


def refuse_replacing_inputs(
    output: Path,
    option: str,
    inputs: dict[str, Path],
    error: type[Exception] = OutputError,
    instead: str = "another file",
) -> None:
    """Refuse an output that is one of the files being read (`inputs`: what each is -> path).

    Checked before the output's "already exists" (which --force passes), so that --force cannot
    replace the checkpoint or the text being read. samefile sees through symlinks, hard links
    and relative paths.
    """
    for what, source in inputs.items():
        try:
            same = os.path.samefile(output, source)
        except (OSError, ValueError):  # one of them missing (nothing to replace) or unstatable
            continue
        if same:
            raise error(
                f"{option} {str(output)!r} is {what} being read ({str(source)!r}); name {instead}"
            )


def make_folder(folder: Path) -> None:
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create the folder {str(folder)!r}: {error.strerror}") from None


def _first_non_folder(folder: Path) -> Path | None:
    """The first existing ancestor of `folder` (itself included) that is not a folder."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def _durable_temporary(path: Path, write: Callable[[BinaryIO], Any]) -> Path:
    temporary = temporary_for(path)
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        _remove(temporary)
        raise
    return temporary


def _remove(temporary: Path) -> None:
    with contextlib.suppress(OSError):  # the folder may refuse this too
        temporary.unlink(missing_ok=True)


def remove_own_temporaries(folder: Path) -> None:
    """Delete this process's unfinished writes in `folder` (before it ends itself midway)."""
    for temporary in Path(folder).glob(f".*{TEMPORARY_MARK}{os.getpid()}"):
        _remove(temporary)


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files of writes that were killed midway; returns how many.

    Their writer is gone (SIGKILL, power cut), so nothing else will: each is as large as a
    checkpoint, and a run killed often would otherwise fill the disk with them. A temporary
    whose process still runs is left alone.
    """
    removed = 0
    for temporary in Path(folder).glob(f".*{TEMPORARY_MARK}*"):
        if writer_is_gone(temporary) is True:
            temporary.unlink(missing_ok=True)
            removed += 1
    return removed


def writer_is_gone(temporary: Path) -> bool | None:
    """Whether the process whose id ends a temporary file's name has exited: True or False,
    or None when that cannot be told (no id in the name; no liveness probe on this system)."""
    pid = writer_of(temporary)
    # isdigit alone takes "²", which int() refuses; an id past 31 bits names no process (and
    # would overflow os.kill).
    if not (pid.isascii() and pid.isdigit()):
        return None
    # No process has an id below 1, and os.kill(0, 0) would probe this process's own group.
    if len(pid) > 10 or not 1 <= int(pid) < 1 << 31:
        return True
    if os.name != "posix":
        return None
    return not process_exists(int(pid))


def process_exists(pid: int) -> bool:
    """Whether process `pid` runs (POSIX: os.kill(pid, 0) only asks; on Windows it would signal)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _fsync_directory(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform, harmless to skip there.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


# --------------------------------------------------------------------------- reading

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
