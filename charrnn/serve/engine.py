"""Continuous batching: every active request advances one character per batched step.

    POST /v1/generate ──submit──▶ waiting (at most max_queue requests; past that: Busy, 503)
                                    │ admitted while the batch has rows free (max_streams)
                                    ▼
    one worker thread ──────▶ priming: the prime read through the model, PRIME_CHUNK at a time
                                    │
                                    ▼
                              batch: rows [ a a a | b | c c ]  state (layers, B, H) per tensor
                              each step:  1. primed requests join (their rows are appended)
                                          2. every request draws its next characters from its
                                             own rows' logits, with its own options and its own
                                             seeded generator
                                          3. finished and cancelled requests leave
                                          4. one stepper call moves every remaining row

A request's rows see exactly the computation `charrnn sample` does for it: the same prime
forward, the same draws from a generator seeded the same way, in the same order. So a seeded
request gives the text `charrnn sample --seed S` gives, whether it runs alone or beside others,
as long as a row's numbers do not depend on the batch around it. That holds exactly for int8
(the default on a CPU for models of 256+ units: the compiled step computes each row apart, and
torch's int8 kernel gives each row the same numbers at any batch); fp32 matrix products round
differently at different batch sizes, so there the texts agree until a draw falls within a
rounding error of a boundary, which is rare but not impossible.

The worker owns the model: every torch operation runs on it (scoring too), so the event loop
that serves HTTP never waits for one. It talks to the loop only through `call_soon_threadsafe`,
in batches (at most one hand-over every FLUSH_SECONDS while streams run).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from charrnn.errors import CharRNNError
from charrnn.priming import read_ids
from charrnn.sample import (
    Draws,
    SamplingOptions,
    TextGenerator,
    choose_threads,
    filter_logits,
    forward_bytes,
    step_weight_bytes,
)
from charrnn.stops import StopStrings
from charrnn.use_config import ServeConfig

PRIME_CHUNK = 1024  # characters of a prime read per forward call (and per worker iteration)
FLUSH_SECONDS = 0.02  # new text reaches the clients at least this often while it is made
IDLE_SECONDS = 0.1  # an idle worker still looks this often whether it should stop


class Busy(CharRNNError):
    """The batch and the queue are full: the request is refused (HTTP 503)."""


class ShuttingDown(CharRNNError):
    """The server is stopping and takes no more requests (HTTP 503)."""


@dataclass(frozen=True)
class Job:
    """One generation request, checked: what `charrnn sample` would be given."""

    prime: str
    length: int
    options: SamplingOptions
    seed: int
    num_samples: int = 1
    stops: tuple[str, ...] = ()
    score: bool = False  # also each sample's mean log-probability (a little more per step)

    def settings(self) -> dict[str, Any]:
        """What shaped the text, as `charrnn sample --json` names it (the seed beside it)."""
        return {**asdict(self.options), "length": self.length,
                "num_samples": self.num_samples, "stop": list(self.stops)}  # fmt: skip


# ---------------------------------------------------------------------------------- the sampler
# The engine's whole use of charrnn.sample: how a prime is read and how a character is drawn.
# Kept here, in one place, so a change of the sampler's internals changes one function.


def draw(logits: torch.Tensor, options: SamplingOptions, draws: list[Draws]) -> torch.Tensor:
    """The next ids of several requests that share sampling options: `logits` (B, V) holds their
    rows one request after another; each request draws its rows (its Draws' shape) with its own
    `Draws`.

    What `charrnn.sample.next_ids` does for each request, with the filtering (row by row in
    torch, so batching it changes no number) done once for the whole group. On a CPU a draw is
    argmax(p / q) with each request's q from its own Draws (charrnn.sample.Draws): one division
    and argmax for all, the same ids (tests/test_serve.py holds it to `charrnn sample`'s text).
    """
    if options.greedy:
        return logits.argmax(dim=-1)
    probabilities = torch.softmax(filter_logits(logits, options), dim=-1)
    parts = _parts(probabilities, draws)
    if probabilities.device.type != "cpu":
        return torch.cat([request.choose(part) for request, part in parts])
    noise = [request.exponential(part) for request, part in parts]
    return (probabilities / torch.cat(noise)).argmax(dim=-1)


def _parts(probabilities: torch.Tensor, draws: list[Draws]) -> list[tuple[Draws, torch.Tensor]]:
    """Each request's Draws with its rows of `probabilities`."""
    parts, start = [], 0
    for request in draws:
        rows = request.shape[0]
        parts.append((request, probabilities[start : start + rows]))
        start += rows
    return parts


# ---------------------------------------------------------------------------------- streams


@dataclass(eq=False)
class Stream:
    """A request's handle: the events of its generation (for the HTTP side) and its progress
    (for the worker). Events: ("text", sample index, new text), then ("done", summary) or
    ("error", message)."""

    job: Job
    loop: asyncio.AbstractEventLoop
    submitted: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    # The worker's side.
    prime_ids: torch.Tensor | None = None
    primed: int = 0
    state: Any = None
    logits: torch.Tensor | None = None
    draws: Draws | None = None
    started: float | None = None
    position: int = 0
    texts: list[list[str]] = field(default_factory=list)
    unsent: list[list[str]] = field(default_factory=list)
    stops: list[StopStrings] = field(default_factory=list)
    reasons: list[str | None] = field(default_factory=list)
    log_prob_sums: list[float] = field(default_factory=list)  # of the kept new characters

    @property
    def rows(self) -> int:
        return self.job.num_samples

    @property
    def finished(self) -> bool:
        return all(reason is not None for reason in self.reasons)

    def cancel(self) -> None:
        """The client went away: the worker drops the stream before its next step."""
        self.cancelled = True

    async def __aiter__(self) -> AsyncIterator[tuple]:
        while True:
            event = await self.events.get()
            yield event
            if event[0] != "text":
                return

    def summary(self) -> dict[str, Any]:
        texts = [self.job.prime + "".join(chars) for chars in self.texts]
        now = time.monotonic()
        seconds = now - (self.started or now)
        new = sum(len(chars) for chars in self.texts)
        means = None
        if self.job.score:  # as charrnn sample --json: None for a sample with no new text
            sums = zip(self.log_prob_sums, self.texts, strict=True)
            means = [total / len(chars) if chars else None for total, chars in sums]
        return {
            "text": texts[0],
            "texts": texts,
            "prime": self.job.prime,
            "finish_reasons": self.reasons,
            "new_characters": [len(chars) for chars in self.texts],
            "mean_log_probs": means,
            "seed": self.job.seed,
            "settings": self.job.settings(),
            "seconds": seconds,
            "queued_seconds": (self.started or now) - self.submitted,
            "chars_per_second": new / seconds if seconds > 0 else None,
        }


# ---------------------------------------------------------------------------------- the engine


class Engine:
    """Owns the model in one worker thread; requests join and leave its batch between steps."""

    def __init__(self, generator: TextGenerator, limits: ServeConfig):
        self.generator = generator
        self.limits = limits
        self.chars = generator.vocab.chars
        self._lock = threading.Condition()
        self._waiting: deque[Stream] = deque()  # past the batch's room: the queue
        self._admitted: list[Stream] = []  # given rows, not yet taken by the worker
        self._jobs: deque[tuple[Callable[[], Any], asyncio.Future]] = deque()
        self._rows_in_use = 0  # rows of admitted, priming and active streams
        self._closing = False
        self._deadline: float | None = None  # draining: streams still running then are ended
        self._thread: threading.Thread | None = None
        self.served = 0
        self.failed = 0
        # The worker's own.
        self._priming: deque[Stream] = deque()
        self._active: list[Stream] = []
        self._state: tuple[torch.Tensor, ...] | None = None  # (layers, B, H) each
        self._logits: torch.Tensor | None = None  # (B, V)
        self._threads = 0
        self._outbox: list[tuple[Stream, tuple]] = []  # events for the loop, sent by _flush
        self._last_flush = 0.0
        # What sample's threads are chosen by: the step's weights, or the model's for a prime.
        self._weight_bytes = step_weight_bytes(generator.stepper)
        self._prime_bytes = forward_bytes(generator.model)

    # ------------------------------------------------------------------ the event loop's side

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="charrnn-engine", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Fail what is left (the HTTP server has let its requests finish first) and stop."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def drain(self, seconds: float) -> None:
        """Stop taking requests; streams still running in `seconds` end with an error event.

        Safe from a signal handler: it sets one attribute and takes no lock (the worker looks
        at it at least every IDLE_SECONDS)."""
        self._deadline = time.monotonic() + seconds

    def submit(self, job: Job) -> Stream:
        """Queue a request; its stream yields events as the worker makes its text.

        Raises Busy when the batch is full and max_queue requests already wait."""
        stream = Stream(job, asyncio.get_running_loop())
        with self._lock:
            if self._closing or self._deadline is not None:
                raise ShuttingDown("the server is shutting down")
            room = self._rows_in_use + job.num_samples <= self.limits.max_streams
            if room and not self._waiting:
                self._admit(stream)
            elif len(self._waiting) >= self.limits.max_queue:
                raise Busy(
                    f"busy: {self._rows_in_use} stream(s) running and {len(self._waiting)} "
                    "request(s) waiting; try again shortly"
                )
            else:
                self._waiting.append(stream)
            self._lock.notify()
        return stream

    def cancel(self, stream: Stream) -> None:
        """Free a stream's place now: out of the queue at once, out of the batch at the next
        step."""
        stream.cancel()
        with self._lock:
            if stream in self._waiting:
                self._waiting.remove(stream)
            self._lock.notify()

    async def run(self, work: Callable[[], Any]) -> Any:
        """Run `work` (torch operations on the model) on the worker, between two steps."""
        future = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            self._jobs.append((work, future))
            self._lock.notify()
        return await future

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "streams": self._rows_in_use,
                "queued": len(self._waiting),
                "served": self.served,
                "failed": self.failed,
            }

    def _admit(self, stream: Stream) -> None:  # with the lock held
        self._rows_in_use += stream.rows
        self._admitted.append(stream)

    def _release(self, stream: Stream) -> None:
        """A stream left the batch (done, failed or cancelled): admit who fits in its rows."""
        with self._lock:
            self._rows_in_use -= stream.rows
            while self._waiting and (
                self._rows_in_use + self._waiting[0].rows <= self.limits.max_streams
            ):
                self._admit(self._waiting.popleft())

    # ------------------------------------------------------------------ the worker

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._lock:
                    while not (self._admitted or self._jobs or self._priming or self._active
                               or self._closing):  # fmt: skip
                        self._lock.wait(IDLE_SECONDS)
                        if self._deadline is not None:
                            break
                    if self._closing:
                        break
                    ending = self._deadline is not None and time.monotonic() >= self._deadline
                    self._priming.extend(self._admitted)
                    self._admitted.clear()
                    jobs = list(self._jobs)
                    self._jobs.clear()
                if ending:
                    self._end_all()
                try:
                    for work, future in jobs:
                        self._do(work, future)
                    self._prime_some()
                    if self._active:
                        self._step()
                except CharRNNError as error:  # a model that cannot go on (SamplingError)
                    self._fail_all(str(error))
                except Exception as error:  # noqa: BLE001 - the worker must outlive any bug
                    self._fail_all(f"internal error: {type(error).__name__}: {error}")
                self._flush()
        self._end_all()
        self._flush(force=True)

    def _end_all(self) -> None:
        """Shutting down: every stream and job still here ends with an error."""
        message = "the server is shutting down"
        with self._lock:
            left = list(self._waiting) + self._admitted
            self._rows_in_use -= sum(stream.rows for stream in self._admitted)
            self._waiting.clear()
            self._admitted.clear()
            jobs = list(self._jobs)
            self._jobs.clear()
        for stream in left:
            self.failed += 1
            self._send(stream, ("error", message))
        for _work, future in jobs:
            self._resolve(future, error=ShuttingDown(message))
        self._fail_all(message)

    def _do(self, work: Callable[[], Any], future: asyncio.Future) -> None:
        try:
            result = work()
        except Exception as error:  # noqa: BLE001 - handed to the request that asked
            self._resolve(future, error=error)
        else:
            self._resolve(future, result=result)

    def _resolve(
        self, future: asyncio.Future, result: Any = None, error: BaseException | None = None
    ):
        def settle() -> None:
            if future.done():
                return
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

        _call_soon(future.get_loop(), settle)

    def _use_threads(self, batch: int, weight_bytes: int | None = None) -> None:
        """Threads as `charrnn sample` would choose them for this batch (or --threads)."""
        weight_bytes = self._weight_bytes if weight_bytes is None else weight_bytes
        threads = self.generator.threads or choose_threads(
            batch, weight_bytes, self.generator.device
        )
        if threads != self._threads:
            torch.set_num_threads(threads)
            self._threads = threads

    def _prime_some(self) -> None:
        """Read primes, at most PRIME_CHUNK characters in all per iteration (unless nothing is
        generating): a long prime does not hold up the streams that are running."""
        budget = PRIME_CHUNK
        while self._priming and (budget > 0 or not self._active):
            stream = self._priming[0]
            if stream.cancelled:
                self._priming.popleft()
                self._leave(stream, None)
                continue
            try:
                budget -= self._prime_piece(stream)
            except Exception as error:  # noqa: BLE001 - only this request fails
                self._priming.popleft()
                self._leave(stream, f"{type(error).__name__}: {error}")
                continue
            if stream.prime_ids is not None and stream.primed == len(stream.prime_ids):
                self._priming.popleft()
                self._join(stream)

    def _prime_piece(self, stream: Stream) -> int:
        job = stream.job
        if stream.prime_ids is None:
            stream.started = time.monotonic()
            stream.prime_ids = self.generator.vocab.encode(job.prime).long()
            stream.prime_ids = stream.prime_ids.to(self.generator.device)
            shape = (job.num_samples, len(self.chars))  # the (B, V) of each of its steps
            stream.draws = Draws(self.generator.device, job.seed, shape)
            stream.texts = [[] for _ in range(job.num_samples)]
            stream.unsent = [[] for _ in range(job.num_samples)]
            stream.stops = [StopStrings(job.stops) for _ in range(job.num_samples)]
            stream.reasons = [None] * job.num_samples
            stream.log_prob_sums = [0.0] * job.num_samples
        piece = stream.prime_ids[stream.primed : stream.primed + PRIME_CHUNK]
        self._use_threads(job.num_samples, self._prime_bytes)
        context = read_ids(self.generator.model, piece, stream.state)
        stream.logits, stream.state = context.logits, context.state
        stream.primed += len(piece)
        return len(piece)

    def _join(self, stream: Stream) -> None:
        """Append a primed stream's rows to the batch (its prime's state, once per sample)."""
        rows = stream.rows
        state = tuple(s.repeat(1, rows, 1) for s in stream.state)
        logits = stream.logits.float().expand(rows, -1)
        stream.state = stream.logits = None
        if stream.job.length == 0:
            stream.reasons = ["length"] * rows
            self._leave(stream, None)
            return
        if self._active:
            self._state = tuple(
                torch.cat(pair, dim=1) for pair in zip(self._state, state, strict=True)
            )
            self._logits = torch.cat([self._logits, logits])
        else:
            self._state, self._logits = state, logits
        self._active.append(stream)

    def _step(self) -> None:
        """Every active stream draws its next characters; who is done leaves; the rest step."""
        ids = self._draw_all()
        chars = self.chars
        drawn = ids.tolist()
        log_probs = None
        if any(stream.job.score for stream in self._active):  # at temperature 1, as sample's
            log_probs = torch.log_softmax(self._logits, -1).gather(1, ids[:, None])[:, 0].tolist()
        keep, kept_streams, row = [], [], 0
        for stream in self._active:
            if not stream.cancelled:
                mine = log_probs[row : row + stream.rows] if stream.job.score else None
                self._advance(stream, [chars[i] for i in drawn[row : row + stream.rows]], mine)
            if stream.cancelled or stream.finished:
                self._leave(stream, None)
            else:
                keep.extend(range(row, row + stream.rows))
                kept_streams.append(stream)
            row += stream.rows
        if not kept_streams:
            self._active, self._state, self._logits = [], None, None
            return
        if len(kept_streams) < len(self._active):
            index = torch.tensor(keep, device=ids.device)
            ids = ids[index]
            self._state = tuple(s.index_select(1, index) for s in self._state)
        self._active = kept_streams
        self._use_threads(len(ids))
        logits, self._state = self.generator.stepper(ids, self._state)
        self._logits = logits.float()

    def _draw_all(self) -> torch.Tensor:
        """The next id of every row: one draw per group of streams with the same options."""
        groups: dict[SamplingOptions, list[int]] = {}
        for position, stream in enumerate(self._active):
            groups.setdefault(stream.job.options, []).append(position)
        starts, row = [], 0
        for stream in self._active:
            starts.append(row)
            row += stream.rows
        if len(groups) == 1:
            options = next(iter(groups))
            return draw(self._logits, options, [s.draws for s in self._active])
        ids = torch.empty(row, dtype=torch.long, device=self._logits.device)
        for options, members in groups.items():
            rows = [r for m in members for r in range(starts[m], starts[m] + self._active[m].rows)]
            index = torch.tensor(rows, device=self._logits.device)
            ids[index] = draw(
                self._logits[index], options, [self._active[m].draws for m in members]
            )
        return ids

    def _advance(self, stream: Stream, chars: list[str], log_probs: list[float] | None) -> None:
        stream.position += 1
        for index, char in enumerate(chars):
            if stream.reasons[index] is not None:
                continue
            kept = stream.stops[index].feed(char)
            if kept is None or kept > 0:
                stream.texts[index].append(char)
                stream.unsent[index].append(char)
                if log_probs is not None:
                    stream.log_prob_sums[index] += log_probs[index]
            if kept is not None:
                stream.reasons[index] = "stop"
            elif stream.position == stream.job.length:
                stream.reasons[index] = "length"

    def _leave(self, stream: Stream, error: str | None) -> None:
        if error is not None:
            self.failed += 1
            self._send(stream, ("error", error))
        elif not stream.cancelled:
            self.served += 1
            self._send_text(stream)
            self._send(stream, ("done", stream.summary()))
        self._release(stream)

    def _fail_all(self, message: str) -> None:
        """Something failed for the whole batch: its streams end with an error, the engine
        goes on with an empty batch."""
        for stream in self._active + list(self._priming):
            self._leave(stream, message)
        self._active, self._priming = [], deque()
        self._state = self._logits = None

    # ------------------------------------------------------------------ delivery

    def _send(self, stream: Stream, event: tuple) -> None:
        self._outbox.append((stream, event))

    def _send_text(self, stream: Stream) -> None:
        for index, chars in enumerate(stream.unsent):
            if chars:
                self._send(stream, ("text", index, "".join(chars)))
                chars.clear()

    def _flush(self, force: bool = False) -> None:
        """Hand the new text and the ends of streams to the event loop, in one call a loop."""
        now = time.monotonic()
        if force or now - self._last_flush >= FLUSH_SECONDS:
            for stream in self._active:
                self._send_text(stream)
            self._last_flush = now
        outbox, self._outbox = self._outbox, []
        if not outbox:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for stream, event in outbox:
            if not stream.cancelled:
                by_loop.setdefault(stream.loop, []).append((stream, event))
        for loop, events in by_loop.items():
            _call_soon(loop, _deliver, events)


def _deliver(events: list[tuple[Stream, tuple]]) -> None:
    for stream, event in events:
        stream.events.put_nowait(event)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable, *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(callback, *args)
