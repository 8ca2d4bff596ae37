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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from charrnn import files
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


# What `charrnn train` writes into a run directory before its first checkpoint (the lock and
# config.toml at once, metrics.jsonl at the first evaluation): a folder that holds one of them
# and no checkpoint is a run that is still training, or was stopped before its first save.
STARTED = (LOCK, CONFIG, METRICS)


def is_unsaved_run(path: Path) -> bool:
    """A run directory with no checkpoint yet (still training, or stopped before its first save)."""
    path = Path(path)
    return path.is_dir() and not is_run(path) and any(os.path.lexists(path / n) for n in STARTED)


def find_checkpoint(path: str | Path, prefer: tuple[str, ...] = FOR_USING) -> Path:
    """A .pt file, or a run directory (then the first of `prefer` that exists)."""
    path = Path(path).expanduser()
    if path.is_dir():
        for name in prefer:
            if (path / name).is_file():
                return path / name
        others = [name for name in CHECKPOINTS if name not in prefer and (path / name).is_file()]
        hint = (f"its {others[0]} is there: give {str(path / others[0])!r} to use it" if others
                else "give a run directory of charrnn train or a .pt file")  # fmt: skip
        raise CheckpointError(f"{str(path)!r} holds no checkpoint ({' or '.join(prefer)}); {hint}")
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    # A FIFO or a device would block or stream forever instead of failing.
    files.refuse_special(path, CheckpointError, "checkpoint")
    return path


def other_checkpoint(path: Path) -> Path | None:
    """The other checkpoint of the run that holds `path` (best.pt for last.pt and back), if
    there is one: where to turn when `path` cannot be read."""
    if path.name not in CHECKPOINTS:
        return None
    (other,) = (name for name in CHECKPOINTS if name != path.name)
    sibling = path.with_name(other)
    return sibling if sibling.is_file() else None


def run_dirs(root: Path) -> list[Path]:
    """The folders directly under `root` that hold a checkpoint, by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(folder for folder in root.iterdir() if folder.is_dir() and is_run(folder))


def unsaved_run_dirs(root: Path) -> list[Path]:
    """The folders directly under `root` that are runs with no checkpoint yet, by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(folder for folder in root.iterdir() if is_unsaved_run(folder))


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


def default_dir(corpus: str | tuple[str, ...], cell: str, root: Path = DEFAULT_ROOT) -> Path:
    """checkpoints/<corpus name>-<cell>-<date>-<time>/ for a new run, named after the first of
    several corpora (`create_new` makes it, with a suffix when another run started in the same
    second)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    corpus = corpus if isinstance(corpus, str) else corpus[0]
    name = Path(corpus).stem if corpus.endswith(".txt") or "/" in corpus else corpus
    name = name or Path(corpus).resolve().name  # "." or "notes/" name their folder
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


# What a run's numbers can be. Beyond these a value is damage or a forgery, not a run: the
# metrics reader leaves such a line out and the checkpoint reader refuses such a progress.
MAX_STEP = 10**15  # a million steps a second for 30 years
MAX_SECONDS = 1e12
MAX_LOSS = 1e6  # nats per character; a uniform guess over all of Unicode is 14
MAX_NUMBER = 1e15  # any other number of a metrics line (rate, epoch, learning rate)

METRICS_LINE_BYTES = 64 * 1024  # a line is about 250 bytes
METRICS_ENTRIES = 20_000  # kept in memory; beyond, every other one (the curve keeps its shape)
METRICS_FIELDS = ("step", "epoch", "time", "train_loss", "val_loss", "val_bpc", "val_scope",
                  "lr", "chars_per_sec")  # fmt: skip
# What an evaluation scored: the whole validation text, a fixed sample of a large one
# (charrnn.scoring.sample_windows), or its first eval_chars (periodic ones, when set).
VAL_SCOPES = ("all", "sample", "part")


@dataclass(frozen=True)
class Metrics:
    """The evaluations a run logged (checked values only), and notes on what was left out."""

    entries: list[dict[str, Any]]
    notes: list[str]


def read_metrics(run_dir: Path) -> Metrics:
    """The evaluations a run logged, in order; none when the run has no metrics.jsonl.

    A line that is not a JSON object of plausible numbers is left out with a note: a run killed
    mid-write can leave half a line, and a damaged or hand-edited file anything (NaN, 5000-digit
    integers, losses of 1e308), and the curve around it is still worth seeing. Memory stays
    bounded whatever the file: lines are read one at a time, each at most
    ``METRICS_LINE_BYTES``, and at most ``METRICS_ENTRIES`` are kept.
    """
    path = Path(run_dir) / METRICS
    if not os.path.lexists(path):
        return Metrics([], [])
    try:
        file = files.open_regular(path, CheckpointError, "metrics file")
    except CheckpointError as error:  # a FIFO, say: the run's other facts still show
        return Metrics([], [str(error)])
    kept: list[dict[str, Any]] = []
    left_out: dict[str, list[int]] = {}  # reason -> line numbers
    stride, valid, replaced = 1, 0, 0
    with file:
        for number, line in enumerate(_lines(file), 1):
            entry, problem = _metrics_entry(line)
            if problem:
                left_out.setdefault(problem, []).append(number)
                continue
            # A step that goes back is a resume from a checkpoint older than the last lines
            # (a kill after an evaluation, before the next save): those lines scored weights
            # that were never saved, and the resumed run scores its own at those steps.
            while kept and kept[-1]["step"] >= entry["step"]:
                kept.pop()
                replaced += 1
            if valid % stride == 0:
                kept.append(entry)
                if len(kept) > METRICS_ENTRIES:
                    kept, stride = kept[::2], stride * 2
            valid += 1
    notes = [
        f"{str(path)!r}: left out {len(numbers)} line(s) {problem} (line {numbers[0]}"
        f"{' and more' if len(numbers) > 1 else ''})"
        for problem, numbers in left_out.items()
    ]
    if replaced:
        notes.append(f"{str(path)!r}: {replaced} evaluation(s) of weights a resume went back "
                     "from are left out (their steps were trained again)")  # fmt: skip
    if stride > 1:
        notes.append(f"{str(path)!r} holds {valid:,} evaluations; every {stride}th is shown")
    return Metrics(kept, notes)


def _lines(file: BinaryIO) -> Iterator[bytes | None]:
    """The lines of a file, or None for a line longer than METRICS_LINE_BYTES (never read whole)."""
    while line := file.readline(METRICS_LINE_BYTES):
        if len(line) == METRICS_LINE_BYTES and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # skip the rest of it, a piece at a time
                line = file.readline(METRICS_LINE_BYTES)
            yield None
        else:
            yield line


def _not_a_number(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")  # json.loads accepts NaN and Infinity otherwise


def _metrics_entry(line: bytes | None) -> tuple[dict[str, Any], str | None]:
    """A metrics line's known fields, checked; or the reason it is left out."""
    if line is None:
        return {}, f"over {METRICS_LINE_BYTES:,} bytes long"
    try:
        entry = json.loads(line, parse_constant=_not_a_number)
    except (ValueError, RecursionError):  # not JSON, NaN, an integer of over 4300 digits
        return {}, "that are not strict JSON (cut short by a kill? NaN?)"
    if not isinstance(entry, dict) or type(entry.get("step")) is not int:
        return {}, "that are not an evaluation (a JSON object with a step)"
    checked = {key: entry[key] for key in METRICS_FIELDS if key in entry}
    for key, value in checked.items():
        high = MAX_STEP if key == "step" else MAX_LOSS if "loss" in key else MAX_NUMBER
        if key == "val_scope":
            plausible = value in VAL_SCOPES
        else:
            plausible = value is None or (
                isinstance(value, (int, float)) and type(value) is not bool
                and 0 <= value <= high  # compares exactly, a 4000-digit int too; NaN fails
            )  # fmt: skip
        if not plausible:
            return {}, f"with an absurd {key}"
    return checked, None
