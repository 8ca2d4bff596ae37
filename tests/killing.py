"""Kill real `charrnn train` processes with SIGKILL at chosen moments and check what survived.

Shared by tests/test_kill.py (a dozen kills, in CI) and benchmarks/kill.py (as many as you
like). Nothing here reaches into the trainer: a kill is aimed by watching the run directory
from outside, as a user's power cut would not be, but more often and more precisely:

- ``startup``: at a random moment of the first seconds (imports, reading the corpus), and at
  the latest when the process writes its first metrics line;
- ``training``: a random number of steps (1 to 15) after its first metrics line, counted in
  the metrics it writes (every step, in the tests);
- ``writing``: while a temporary checkpoint file of the process exists (mid-save);
- ``writing-last``: the same, for ``last.pt`` only (the periodic checkpoint);
- ``after-save``: the moment ``last.pt`` is replaced by a new one.

Every moment is an event seen in the run directory, never a delay alone, so a kill cannot come
after the run has already ended. Before the kill the process is frozen (SIGSTOP) and the moment
checked again on the frozen process: a "writing" kill happens only while the temporary file is
still there, so it certainly lands mid-write, however loaded the machine.

After every kill: ``last.pt`` and ``best.pt`` (those that exist) load with
``charrnn.checkpoint.load``, and the run lost at most ``--checkpoint-every`` steps (the steps
the killed process had finished, by its last metrics line, minus the step of ``last.pt``).
The next trial resumes the run with ``--resume``, so every trial also proves that resuming
works after the previous kill.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from charrnn import checkpoint as ckpt
from charrnn.errors import CheckpointError
from charrnn.files import TEMPORARY_MARK

MOMENTS = ("startup", "training", "writing", "writing-last", "after-save")
POLL_SECONDS = 0.0005  # a checkpoint write of a few MB takes tens of milliseconds
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


@dataclass
class Kill:
    """One SIGKILL and what it left behind."""

    moment: str
    killed: bool  # False: the run finished before the moment came
    during_write: bool  # the killed process left a temporary checkpoint: it died mid-save
    steps_done: int  # steps the killed process had finished (its last metrics line)
    saved_step: int  # the step last.pt holds after the kill (0: none yet)
    problems: list[str]

    @property
    def lost(self) -> int:
        return self.steps_done - self.saved_step

    @property
    def survived(self) -> bool:
        return not self.problems


def train_command(run_dir: Path, args: list[str], resume: bool) -> list[str]:
    head = [sys.executable, "-m", "charrnn", "train"]
    if resume:
        # Only run-control flags may be given again; the run keeps its saved config.
        return [*head, "--resume", str(run_dir), *run_control(args)]
    return [*head, *args, "--out", str(run_dir)]


def run_control(args: list[str]) -> list[str]:
    """The run-control flags of `args` (those a resumed run accepts), with their values."""
    allowed = {"--max-steps", "--eval-every", "--eval-chars", "--checkpoint-every", "--threads"}
    kept = []
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag in allowed:
            kept += [flag, value]
    return kept


def saved_step(path: Path) -> int:
    """The step a checkpoint holds; 0 when there is none."""
    if not path.exists():
        return 0
    return ckpt.load(path)["progress"]["step"]


def metrics_steps(run_dir: Path, offset: int) -> list[int]:
    """The steps of the whole metrics lines written after byte `offset` of metrics.jsonl
    (a line still being written, without its newline, is not counted yet)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    with open(path, "rb") as file:
        file.seek(offset)
        whole = file.read().rpartition(b"\n")[0]
    return [json.loads(line)["step"] for line in whole.splitlines() if line.strip()]


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def temporaries(run_dir: Path, pid: int | None = None) -> list[Path]:
    suffix = str(pid) if pid is not None else "*"
    return sorted(run_dir.glob(f".*{TEMPORARY_MARK}{suffix}"))


def freeze(process: subprocess.Popen) -> bool:
    """Stop the process (SIGSTOP) and wait until it is stopped; False if it had ended."""
    process.send_signal(signal.SIGSTOP)  # Popen reaps (and skips) a process that has ended
    if process.returncode is not None:
        return False
    _, status = os.waitpid(process.pid, os.WUNTRACED)
    if os.WIFSTOPPED(status):
        return True
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen
    return False


def wait_for_moment(
    moment: str, process: subprocess.Popen, run_dir: Path, metrics_offset: int, rng: random.Random
) -> bool:
    """Return with the process frozen when it is time to kill; False if it ended first."""
    started = time.monotonic()
    last = run_dir / "last.pt"
    inode = last.stat().st_ino if last.exists() else None
    delay = rng.uniform(0.2, 2.5)  # startup
    steps_after_first = rng.randint(1, 15)  # training
    metrics_size, first_step = metrics_offset, None
    saves = (".last.pt",) if moment == "writing-last" else (".last.pt", ".best.pt")

    def writing() -> bool:
        return any(p.name.startswith(saves) for p in temporaries(run_dir, process.pid))

    while process.poll() is None:
        if time.monotonic() - started > 120:
            raise TimeoutError(f"moment {moment!r} never came")
        if moment in ("startup", "training") and size(run_dir / "metrics.jsonl") > metrics_size:
            metrics_size = size(run_dir / "metrics.jsonl")
            steps = metrics_steps(run_dir, metrics_offset)
            if first_step is None and steps:
                first_step = steps[0]
            if moment == "startup" and first_step is not None:
                return freeze(process)  # training has begun: no later than now
            if first_step is not None and steps[-1] >= first_step + steps_after_first:
                return freeze(process)
        if moment == "startup" and time.monotonic() - started >= delay:
            return freeze(process)
        if moment in ("writing", "writing-last") and writing():
            if not freeze(process):
                return False
            if writing():  # still mid-save, now that it cannot move on
                return True
            process.send_signal(signal.SIGCONT)  # the save ended meanwhile: wait for the next
        if moment == "after-save" and last.exists():
            try:
                if last.stat().st_ino != inode:
                    return freeze(process)
            except FileNotFoundError:
                pass
        time.sleep(POLL_SECONDS)
    return False


def kill_once(
    run_dir: Path, args: list[str], moment: str, checkpoint_every: int, rng: random.Random
) -> Kill:
    """Start (or resume) the run, SIGKILL it at `moment`, and check what survived."""
    start_over_without_last(run_dir)
    resume = (run_dir / "last.pt").exists()
    start_step = saved_step(run_dir / "last.pt")
    offset = size(run_dir / "metrics.jsonl")
    process = subprocess.Popen(
        train_command(run_dir, args, resume),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    try:
        killed = wait_for_moment(moment, process, run_dir, offset, rng)
        if killed:
            process.send_signal(signal.SIGKILL)  # it is frozen: it dies where it stopped
    except BaseException:
        process.kill()  # never leave a frozen process behind
        raise
    finally:
        _, stderr = process.communicate()
    problems = []
    if not killed and process.returncode != 0:
        problems.append(f"exit {process.returncode}: {stderr.decode()[-500:]}")
    during_write = bool(temporaries(run_dir, process.pid))
    for name in ("last.pt", "best.pt"):
        if (run_dir / name).exists():
            try:
                ckpt.load(run_dir / name)
            except CheckpointError as error:
                problems.append(f"{name} does not load after the kill: {error}")
    done = max(metrics_steps(run_dir, offset), default=start_step)
    try:
        saved = saved_step(run_dir / "last.pt")
    except CheckpointError:
        saved = 0  # already reported above
    result = Kill(moment, killed, during_write, done, saved, problems)
    if not 0 <= result.lost <= checkpoint_every:
        problems.append(f"lost {result.lost} steps (done {done}, saved {saved})")
    return result


def start_over_without_last(run_dir: Path) -> None:
    """A run killed before its first last.pt cannot be resumed, and a new run may not write
    over its best.pt and metrics: as a user would, delete it and start afresh."""
    if run_dir.exists() and not (run_dir / "last.pt").exists():
        shutil.rmtree(run_dir)


def finish(run_dir: Path, args: list[str]) -> subprocess.CompletedProcess:
    """Resume the run once more and let it reach its budget."""
    start_over_without_last(run_dir)
    return subprocess.run(
        train_command(run_dir, args, resume=(run_dir / "last.pt").exists()),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=ENV,
        timeout=600,
    )
