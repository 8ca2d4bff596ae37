"""Data-parallel training on several processes or machines: DDP under torchrun.

The lesson's loader splits naturally. The global batch is ``batch_size`` contiguous rows of the
text; with N processes (ranks), rank r trains its own contiguous block of ``batch_size / N``
rows and carries the hidden state of those rows from step to step. The lesson's layout with the
text ``1..24``, ``batch_size=4``, ``seq_length=3`` and N = 2::

                step 1     step 2
    row 0     │ 1  2  3 │  4  5  6 │  ┐ rank 0: rows 0-1, and their hidden state
    row 1     │ 7  8  9 │ 10 11 12 │  ┘
    row 2     │13 14 15 │ 16 17 18 │  ┐ rank 1: rows 2-3, and their hidden state
    row 3     │19 20 21 │ 22 23 24 │  ┘

Each rank's loss is the mean over its rows and DistributedDataParallel averages the gradients
of the equal-sized blocks, which is the gradient of the mean over all rows: every step moves
the weights as one process training the whole batch would, so with the same seed and global
batch the run follows the same loss curve whatever N is (up to float rounding).

What the ranks must agree on, and how:

- the text and the settings: checked once, before DDP starts (`World.check_agreement`);
- the clock and a stop request, after every step (`World.agree`), so all ranks take the same
  number of steps whether they stop on ``--max-time``, at a budget or on a signal;
- the reported train loss (`World.average`) and the validation loss, which rank 0 computes
  with the plain model while the others wait for it (`World.share`);
- checkpoints: rank 0 writes them, in the single-process format, holding the hidden state of
  the whole batch gathered from every rank (`World.gather_rows`), so `charrnn sample` reads
  them and a run resumes with any N that divides its batch size;
- random numbers: dropout must differ between ranks, so in a multi-process run each step's
  random numbers are drawn from a seed made of (seed, rank, step) (`World.seed_step`), which
  also makes a resume with the same N exact.

A single process is the world of size 1: every method then returns at once, without
torch.distributed, so the trainer has one code path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from charrnn.errors import ConfigError, DistributedError
from charrnn.machine import available_cores

# Per-machine settings that may differ between ranks: paths (the text itself is compared by its
# digest) and thread counts.
PER_MACHINE_SETTINGS = ("corpus", "threads")
MAX_FACTS_BYTES = 1 << 20  # what one rank may send of its facts (they take a few kB)


def threads_per_process(processes_on_this_machine: int) -> int:
    """Share the cores: more threads than cores in all would make every process wait."""
    return max(1, available_cores() // processes_on_this_machine)


def check_batch_split(batch_size: int, processes: int) -> None:
    if batch_size % processes:
        larger = math.ceil(batch_size / processes) * processes
        raise ConfigError(
            f"batch_size {batch_size} cannot be split evenly over {processes} processes: each "
            f"trains batch_size / {processes} rows; choose a multiple of {processes} "
            f"(such as {larger})"
        )


@dataclass(frozen=True)
class World:
    """Where this process stands among the processes of a run (a lone process by default)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 evaluates and writes checkpoints, metrics and progress."""
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This rank's block of the global batch's rows."""
        check_batch_split(batch_size, self.size)
        share = batch_size // self.size
        return slice(self.rank * share, (self.rank + 1) * share)

    def threads(self) -> int:
        return threads_per_process(self.local_size)

    def place(self, device: torch.device) -> torch.device:
        """Each rank of a machine takes its own GPU (the one matching its local rank)."""
        if self.size == 1:
            return device
        if device.type == "mps":
            raise ConfigError("training on several processes needs CPUs or CUDA GPUs, not mps")
        if device.type != "cuda":
            return device
        if self.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"{self.local_size} processes on this machine but {torch.cuda.device_count()} "
                "GPUs; start one process per GPU, or train with --device cpu"
            )
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    def wrap(self, model: nn.Module) -> nn.Module:
        """What the training step calls: DDP around the model, which averages the gradients."""
        if self.size == 1:
            return model
        parameter = next(model.parameters())
        devices = [parameter.device] if parameter.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=devices)

    # -- agreement -------------------------------------------------------------------------

    def check_agreement(self, corpus: str, step: int, settings: dict[str, Any]) -> None:
        """Refuse to train unless every rank has the same text, settings and resume point.

        A disagreement would not fail loudly later: ranks with other settings hang at
        mismatched collectives, and ranks with another text train one model on two texts.
        The facts travel as JSON in uint8 tensors: nothing a peer sends is unpickled.
        """
        if self.size == 1:
            return
        shared = {k: v for k, v in settings.items() if k not in PER_MACHINE_SETTINGS}
        facts = {"corpus": corpus, "step": step, **shared}
        sent = json.dumps([socket.gethostname(), facts], sort_keys=True).encode("utf-8")
        everyone = [_decode_facts(rank, data) for rank, data in enumerate(self._exchange(sent))]
        _, ours = everyone[0]
        for rank, (host, theirs) in enumerate(everyone[1:], start=1):
            differences = [
                "the corpus (another text)"
                if key == "corpus"
                else f"{key} ({theirs.get(key)!r}; rank 0 has {value!r})"
                for key, value in ours.items()
                if theirs.get(key) != value
            ]
            if differences:
                raise DistributedError(
                    f"the processes of this run disagree: rank {rank} on {host} differs from "
                    f"rank 0 in {', '.join(differences)}; every process must train on the same "
                    "text with the same settings"
                )

    def _exchange(self, data: bytes) -> list[bytes]:
        """Every rank's bytes, in rank order: lengths first, then the bytes, as tensors."""
        length = torch.tensor([len(data)], dtype=torch.int64)
        lengths = [torch.zeros_like(length) for _ in range(self.size)]
        dist.all_gather(lengths, length)
        sizes = [int(n.item()) for n in lengths]
        if not all(0 <= size <= MAX_FACTS_BYTES for size in sizes):
            raise DistributedError(f"a process of this run sent {max(sizes)} bytes of facts")
        padded = torch.zeros(max(sizes), dtype=torch.uint8)
        padded[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        gathered = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(gathered, padded)
        return [t[:size].numpy().tobytes() for t, size in zip(gathered, sizes, strict=True)]

    def agree(self, seconds: float, stop: bool) -> tuple[float, bool]:
        """The latest clock of all ranks, and whether any rank was asked to stop."""
        if self.size == 1:
            return seconds, stop
        values = torch.tensor([seconds, float(stop)], dtype=torch.float64)
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return values[0].item(), bool(values[1].item())

    def average(self, value: float) -> float:
        """The mean of a number over the ranks (a NaN on any rank makes it NaN on all)."""
        if self.size == 1:
            return value
        total = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(total)
        return total.item() / self.size

    def share(self, compute: Callable[[], float]) -> float:
        """Rank 0 computes a number; every rank gets it."""
        return self.share_all(lambda: [compute()], 1)[0]

    def share_all(self, compute: Callable[[], list[float]], count: int) -> list[float]:
        """Rank 0 computes `count` numbers; every rank gets them."""
        if self.size == 1:
            return compute()
        values = torch.tensor(compute() if self.is_main else [0.0] * count, dtype=torch.float64)
        dist.broadcast(values, src=0)
        return values.tolist()

    def gather_rows(self, state: tuple[Tensor, ...] | None) -> tuple[Tensor, ...] | None:
        """The hidden state of the whole batch, from every rank's rows, in row order."""
        if self.size == 1 or state is None:
            return state
        gathered = []
        for part in state:
            blocks = [torch.empty_like(part) for _ in range(self.size)]
            dist.all_gather(blocks, part.contiguous())
            gathered.append(torch.cat(blocks, dim=1))  # (layers, batch, hidden)
        return tuple(gathered)

    def seed_step(self, seed: int, step: int) -> None:
        """Draw this step's random numbers (dropout) from (seed, rank, step) on every rank."""
        if self.size == 1:
            return  # a single process keeps its one stream, saved in the checkpoint
        digest = hashlib.sha256(f"{seed}/{self.rank}/{step}".encode()).digest()
        torch.manual_seed(int.from_bytes(digest[:8], "little"))


def _decode_facts(rank: int, data: bytes) -> tuple[str, dict[str, Any]]:
    """(host, facts) of what a rank sent; only JSON is parsed, never a pickle."""
    try:
        host, facts = json.loads(data.decode("utf-8"))
        if not (isinstance(host, str) and isinstance(facts, dict)):
            raise ValueError("not [host, facts]")
    except (ValueError, UnicodeDecodeError, TypeError):
        raise DistributedError(
            f"rank {rank} of this run sent what is not charrnn's start-up facts; is every "
            "process the same version of charrnn?"
        ) from None
    return host, facts


def _environment_number(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise DistributedError(
            f"incomplete torchrun environment ({name} is not set); start charrnn with torchrun"
        )
    try:
        return int(value)
    except ValueError:
        raise DistributedError(
            f"{name}={value!r} is not a number; torchrun sets it (or set it to a whole number)"
        ) from None


def world_from_environment() -> World:
    """The World torchrun's variables describe (WORLD_SIZE, RANK, LOCAL_*), checked."""
    names = ("WORLD_SIZE", "RANK", "LOCAL_WORLD_SIZE", "LOCAL_RANK")
    size, rank, local_size, local_rank = (_environment_number(name) for name in names)
    if size < 1 or local_size < 1:
        raise DistributedError(f"WORLD_SIZE={size} and LOCAL_WORLD_SIZE={local_size} must be >= 1")
    if not (0 <= rank < size and 0 <= local_rank < local_size):
        raise DistributedError(
            f"RANK={rank} must be in 0..{size - 1} (WORLD_SIZE={size}) and LOCAL_RANK="
            f"{local_rank} in 0..{local_size - 1} (LOCAL_WORLD_SIZE={local_size})"
        )
    return World(rank=rank, size=size, local_rank=local_rank, local_size=local_size)


def join(init_timeout: float = 300.0) -> World:
    """This process's world: torchrun's (from the environment it sets), or a lone process.

    The processes must all have come within `init_timeout` seconds, else the error names who
    did not. Once they have, collectives get torch's usual (longer) timeout: rank 0's
    evaluations keep the others waiting for longer than a start-up should take.
    """
    if "WORLD_SIZE" not in os.environ:
        return World()
    world = world_from_environment()
    if world.size > 1 and not dist.is_initialized():
        # gloo for CPU tensors (also the small agreement messages of a GPU run), nccl for GPUs.
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=init_timeout))
        except (dist.DistError, RuntimeError, ValueError) as error:
            raise _not_started(error, world, init_timeout) from None
        set_timeout = getattr(dist.distributed_c10d, "_set_pg_timeout", None)  # torch >= 2.2
        if set_timeout is not None:
            set_timeout(dist.default_pg_timeout)
    return world


def _not_started(error: BaseException, world: World, timeout: float) -> DistributedError:
    """Why the processes of a run did not find each other, in one line naming who is missing."""
    address = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    waited = f"within --init-timeout {timeout:g} s"
    joined = re.search(r"(\d+)/(\d+) clients joined", message)
    if joined:
        came, size = int(joined.group(1)), int(joined.group(2))
        others = "rank 1" if size == 2 else f"ranks 1..{size - 1}"
        missing = others if came == 1 else f"{size - came} of {others}"
        return DistributedError(
            f"only {came} of the {size} processes of this run came {waited}: rank 0 waited at "
            f"{address} and {missing} did not come; start every rank, or raise --init-timeout"
        )
    if "timed out" in message.lower() or "timeout" in message.lower():
        return DistributedError(
            f"rank {world.rank} could not reach rank 0 of this run at {address} {waited}; is "
            "rank 0 started, and are MASTER_ADDR and MASTER_PORT its address?"
        )
    return DistributedError(f"could not reach the other processes at {address}: {message[:200]}")


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def lost_contact(error: BaseException) -> DistributedError | None:
    """A collective that failed because another rank died or hung, told as a user error.

    None for anything else (a bug keeps its traceback). The rank that died says why itself
    (or its launcher does, if it was killed); the others only need to say they stopped too.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return None
    message = str(error)
    if not (isinstance(error, dist.DistError) or "gloo" in message or "NCCL" in message):
        return None
    # "[.../gloo/transport/tcp/pair.cc:537] Read error ...: Connection reset by peer. This..."
    reason = re.sub(r"^\[[^\]]*\]\s*", "", message.strip().splitlines()[0]).split(". ")[0]
    return DistributedError(
        f"lost contact with the other processes of this run ({reason[:200]}); one of them "
        "stopped or was killed, see its own message; the checkpoints written so far are intact"
    )


def launch(nproc: int, arguments: list[str]) -> int:
    """Run ``python -m charrnn ARGUMENTS`` as `nproc` processes of this machine under torchrun.

    torchrun runs in this process (as ``torchrun --standalone``), so that a failure of the
    workers, which say what went wrong themselves, ends with their exit status rather than with
    torchrun's traceback. Returns that status (128 + N for signal N).
    """
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    # torchrun would set one thread per process and warn; the workers choose their own.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_process(nproc)))
    args = torchrun.parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", "-m", "charrnn", *arguments]
    )
    elastic = logging.getLogger("torch.distributed.elastic")
    elastic.addHandler(logging.NullHandler())
    elastic.propagate = False  # its warnings repeat what the workers already said
    try:
        torchrun.run(args)
    except ChildFailedError as failure:
        _, first = failure.get_first_failure()
        return first.exitcode if first.exitcode > 0 else 128 - first.exitcode
    except SignalException as stop:
        return 128 + int(stop.sigval)
    return 0
