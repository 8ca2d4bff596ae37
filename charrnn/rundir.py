"""A run directory: the files ``charrnn train`` writes there, and how every command finds them.

    checkpoints/shakespeare-lstm-20261201-103000/
        last.pt         the latest checkpoint: what --resume continues
        best.pt         the checkpoint with the best validation loss: what sample/eval/explain read
        metrics.jsonl   one JSON line per evaluation
        config.toml     the resolved config (rerun it with --config)
        .lock           what makes one training the owner of the directory while it runs

Commands name a run by its directory or by one .pt file; which checkpoint of a directory they
take depends on what they do with it (the ``FOR_*`` preferences below).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from charrnn.errors import CheckpointError, ConfigError, TrainingError

try:
    import fcntl
except ImportError:  # Windows: no flock; a run directory is not locked there
    fcntl = None

LAST, BEST, METRICS, CONFIG, LOCK = "last.pt", "best.pt", "metrics.jsonl", "config.toml", ".lock"
CHECKPOINTS = (LAST, BEST)
RUN_FILES = (LAST, BEST, METRICS)  # what makes a folder another run's: a new run never writes there

# Which checkpoint of a run directory a command takes, first choice first.
FOR_USING = (BEST, LAST)  # sample, eval, explain: the best model the run found
FOR_DESCRIBING = (LAST, BEST)  # inspect, runs: the whole run so far
FOR_RESUMING = (LAST,)  # train --resume: exactly where it stopped

DEFAULT_ROOT = Path("checkpoints")


def is_run(path: Path) -> bool:
    """A folder that holds a checkpoint of its own."""
    return any((Path(path) / name).is_file() for name in CHECKPOINTS)


def find_checkpoint(path: str | Path, prefer: tuple[str, ...] = FOR_USING) -> Path:
    """A .pt file, or a run directory (then the first of `prefer` that exists)."""
    path = Path(path).expanduser()
    if path.is_dir():
        for name in prefer:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(
            f"{str(path)!r} holds no checkpoint ({' or '.join(prefer)}); "
            "give a run directory of charrnn train or a .pt file"
        )
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if not path.is_file():
        # A FIFO or a device would block or stream forever instead of failing.
        raise CheckpointError(f"checkpoint {str(path)!r} is not a regular file")
    return path


def run_dirs(root: Path) -> list[Path]:
    """The folders directly under `root` that hold a checkpoint, by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(folder for folder in root.iterdir() if folder.is_dir() and is_run(folder))


def holds_runs(path: Path) -> bool:
    """True for a folder of runs (like ./checkpoints), not itself a run."""
    path = Path(path)
    return path.is_dir() and not is_run(path) and bool(run_dirs(path))


def latest(root: Path = DEFAULT_ROOT) -> Path:
    """The most recently written run directory under `root` (what `charrnn sample` defaults to)."""
    written = [folder / name for folder in run_dirs(root) for name in CHECKPOINTS]
    written = [path for path in written if path.is_file()]
    if not written:
        raise CheckpointError(
            f"no runs in {str(root)!r}; train one with `charrnn train` or name a checkpoint"
        )
    return max(written, key=lambda path: path.stat().st_mtime).parent


def default_dir(corpus: str, cell: str, root: Path = DEFAULT_ROOT) -> Path:
    """checkpoints/<corpus name>-<cell>-<date>-<time>/ for a new run (`create_new` makes it,
    with a suffix when another run started in the same second)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = Path(corpus).stem if corpus.endswith(".txt") or "/" in corpus else corpus
    return root / f"{name}-{cell}-{stamp}"


def create_new(path: Path) -> Path:
    """Make a run directory that no other run has: `path`, else `path-2`, `path-3`, ...

    ``mkdir`` without ``exist_ok`` is atomic: of two runs that start in the same second, one
    gets the name and the other the next one. Returns the directory made.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for number in itertools.count(1):
        candidate = path if number == 1 else path.with_name(f"{path.name}-{number}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise AssertionError("unreachable")


def check_new(run_dir: Path) -> None:
    """Refuse to start a new run in a directory that holds another run's files."""
    found = [name for name in RUN_FILES if (Path(run_dir) / name).exists()]
    if not found:
        return
    what = (
        f"continue it with --resume {run_dir}"
        if LAST in found
        else "it never wrote last.pt, so it cannot be resumed; delete it"
    )
    raise ConfigError(
        f"{str(run_dir)!r} already holds a run ({', '.join(found)}); {what} or choose another --out"
    )


class RunLock:
    """The OS lock (flock on `.lock`) that makes one training the owner of a run directory.

    The operating system releases it when the process ends, however it ends (SIGKILL, a power
    cut's reboot), so a lock is never left stale. The file holds the owner's pid, for the
    refusal to name. Raises TrainingError when another process holds it; OSError when the
    directory takes no writes.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.descriptor: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            return
        try:
            fcntl.flock(self.descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            self.release()
            pid = f" (pid {holder})" if holder else ""
            raise TrainingError(
                f"{str(run_dir)!r} is in use by another charrnn train{pid}; wait for it to end "
                "or stop it"
            ) from None
        with contextlib.suppress(OSError):  # the pid only helps a refusal say who holds it
            os.ftruncate(self.descriptor, 0)
            os.write(self.descriptor, f"{os.getpid()}\n".encode())

    def _holder(self) -> str:
        try:
            text = os.pread(self.descriptor, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            return ""
        return text if text.isdigit() else ""

    def release(self) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)  # closing the last descriptor releases the lock
            self.descriptor = None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The evaluations a run logged, in order; [] when the run has no metrics.jsonl.

    A line that is not a JSON object is skipped: a run killed mid-write can leave half a line at
    the end, and the curve before it is still worth seeing.
    """
    path = Path(run_dir) / METRICS
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"cannot read {str(path)!r}: {error}") from None
    metrics = []
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("step"), int):
            metrics.append(entry)
    return metrics
