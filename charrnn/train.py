"""Training: truncated back-propagation through time over the lesson's cyclic batches.

Each step feeds every row the next ``seq_length`` characters, starting from the hidden state
the previous step ended with (detached, so gradients stop at the batch boundary: truncated
BPTT). A new epoch starts from a zero state, since with a shifted start the rows no longer
continue the previous epoch's rows.

Everything that decides what is learned is saved in the checkpoint (weights, optimiser,
schedule anchor, step, hidden state, RNG state), so a run stopped at any checkpoint and resumed
ends with the very same weights as one left alone (on the CPU, same thread count).

On several processes (see charrnn.distributed) the loop is the same: each rank trains its own
rows of every batch, and the ranks agree on what must be common to all of them.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from charrnn import autosize, averaging, files, rundata, rundir
from charrnn import checkpoint as ckpt
from charrnn import config as config_module
from charrnn.allocator import release_freed_memory
from charrnn.batching import CyclicBatches, epoch_offset
from charrnn.config import ModelConfig, TrainConfig
from charrnn.corpus import Data
from charrnn.devices import (
    PRECISION_NAMES,
    autocast,
    autocast_dtype,
    optimizer_options,
    pick_device,
    precision_choices,
)
from charrnn.distributed import World
from charrnn.errors import CheckpointError, CorpusError, TrainingError
from charrnn.model import CharModel, State, detach_state
from charrnn.resuming import adopt_saved_best, restore
from charrnn.runlog import MetricsLog, ProgressBar, Result
from charrnn.schedule import Budget, Progress, Schedule
from charrnn.scoring import char_loss, evaluate, evaluate_sampled, sample_windows


class StopRequest:
    """Set from a signal handler; the loop finishes its step, saves and returns."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def request(self, signum: int) -> None:
        self.signal = signum

    @property
    def requested(self) -> bool:
        return self.signal is not None


def unwritable(run_dir: Path, error: OSError) -> TrainingError:
    reason = error.strerror or str(error)
    return TrainingError(f"cannot write to the run directory {str(run_dir)!r}: {reason}")


def diverged(what: str, step: int, run_dir: Path) -> TrainingError:
    """Training stops on NaN or infinity: nothing non-finite is ever saved."""
    if (run_dir / "last.pt").exists():
        kept = "last.pt holds the last good checkpoint"
    elif (run_dir / "best.pt").exists():
        kept = "best.pt holds the best one so far; no last.pt was written yet"
    else:
        kept = "no checkpoint was written before it"
    return TrainingError(
        f"{what} at step {step}; stopped without saving it ({kept}); lower --learning-rate "
        "or --grad-clip"
    )


class Trainer:
    """One training run: set up from configs (or a checkpoint), then `run()`.

    run_dir: None for a new directory under checkpoints/ named after the corpus, the cell and
    the time. The run owns its directory (rundir.RunLock) from the end of the constructor to
    the end of `run()`.
    """

    def __init__(
        self,
        model_config: ModelConfig,
        train_config: TrainConfig,
        run_dir: Path | None,
        *,
        resume: dict[str, Any] | None = None,
        log: Callable[[str], None] = lambda line: None,
        stop: StopRequest | None = None,
        progress_bar: bool | None = None,
        world: World | None = None,
        start: Any = None,
        given: frozenset[str] = frozenset(),
        dry_run: bool = False,
    ):
        """`resume`: a checkpoint to continue; `start`: a charrnn.finetune.Start, whose
        weights a new run starts from (its vocabulary grows by the corpus's new characters).
        `given`: the settings the user set (a config file's keys and the flags), which
        auto_size keeps. `dry_run`: set everything up (auto_size included) but write nothing
        to the run directory (loading the corpus fills its token cache, as always); `run()`
        must not be called."""
        self.model_config = model_config
        self.config = train_config
        self._named = run_dir is not None  # else a default name, made unique when created
        self.run_dir = (
            Path(run_dir) if run_dir else rundir.default_dir(train_config.corpus, model_config.cell)
        )
        self._lock: rundir.RunLock | None = None
        self.world = world or World()
        self.log = log if self.world.is_main else lambda line: None  # rank 0 speaks for all
        self.stop = stop or StopRequest()
        self.progress_bar = progress_bar
        self.warnings: list[str] = []  # writes that failed without stopping the run
        cfg = train_config

        self.device, self.amp = self._place()
        if resume:
            ckpt.check_resumable(resume, cfg.batch_size)
        self.data = self._load_data(resume, start)
        self.vocab = self.data.vocab
        # A new run with a time limit times the precisions `auto` could mean here and takes the
        # faster: speed is what such a run's result depends on, and it depends on the clock
        # anyway. A run bounded by steps or epochs stays reproducible; a resumed one keeps its own.
        timing = cfg.max_time and not resume
        amps = precision_choices(self.device, cfg.precision) if timing else (self.amp,)
        probe_started = time.perf_counter()
        # A resumed or fine-tuned model has its shape; a user who set every choice left none.
        choosing = cfg.auto_size and not resume and not start and not given >= set(autosize.CHOSEN)
        self.sizing = self._auto_size(given, amps) if choosing else None
        self.precision_timing: autosize.Timed | None = None  # timed without auto_size
        if self.sizing is not None:
            self.model_config, self.config = self.sizing.model_config, self.sizing.train_config
            model_config, cfg = self.model_config, self.config
            self.amp = self.sizing.amp
        elif len(amps) > 1:
            self.precision_timing = autosize.fastest(amps, self._timer(model_config, cfg, amps))
            self.amp = self.precision_timing.amp
            self.config = cfg = replace(cfg, precision=self.precision_timing.name)
        self.precision = PRECISION_NAMES[self.amp]
        probe_seconds = self.world.share(lambda: time.perf_counter() - probe_started)
        # Validate the shape now, so a too-short text is refused before anything is written.
        self.n_batches = len(CyclicBatches(self.data.train, cfg.batch_size, cfg.seq_length))
        self.rows = self.world.rows(cfg.batch_size)  # this rank's rows of every batch

        torch.manual_seed(cfg.seed)
        self.model = self._build_model()
        # Where the weights came from: a fine-tune's source, kept by its resumed runs too.
        self.started_from = resume.get("init_from") if resume else None
        if start is not None:
            start.transplant(self.model, self.vocab)
            self.started_from = start.record(self.data.choice.added)
        self.optimizer = self._make_optimizer()
        self.average = averaging.WeightAverage.for_config(cfg.ema, self.model)  # None: off
        self.schedule = Schedule(
            cfg.learning_rate, cfg.lr_schedule, cfg.min_lr_fraction, cfg.warmup_steps
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.state: State | None = None
        self._epoch, self._epoch_loader = -1, None
        # A new run's clock starts with the timing (auto_size, precision), inside the budget.
        self.progress = Progress(seconds=probe_seconds if len(amps) > 1 or choosing else 0.0)
        if resume:
            self.progress, self.state = restore(
                resume, self.model, self.optimizer, self.rows, self.device
            )
            if self.average is not None:  # the raw weights, under the average restore() loaded
                self.average.restore(resume, self.model)
            adopt_saved_best(self.progress, self.run_dir, self.world)
        # The corpus's fingerprint from the token cache, not a hash of the ids: as cheap for
        # a gigabyte as for a kilobyte.
        facts = [self.data.fingerprint, self.data.val_fingerprint or "", str(len(self.data.val)),
                 *self.vocab.to_list()]  # fmt: skip
        self.world.check_agreement(
            hashlib.sha256("\n".join(facts).encode("utf-8", "surrogatepass")).hexdigest(),
            self.progress.step,
            {**config_module.to_dict(model_config), **config_module.to_dict(cfg)},
        )
        self.network = self.world.wrap(self.model)
        # --max-time counts this invocation from its start: a resume adds the seconds trained
        # before, a new run adds nothing (its clock already holds the timing, spent inside it).
        trained_before = self.progress.seconds if resume else 0.0
        self.budget = Budget.from_limits(
            cfg.max_steps, cfg.max_epochs, self.n_batches, cfg.max_time, trained_before
        )
        if not resume and self.progress.seconds and self.budget.spent(0, self.progress.seconds):
            raise TrainingError(
                f"timing the machine took {self.progress.seconds:.1f} s of --max-time "
                f"{cfg.max_time:g} s, leaving none to train; give a longer --max-time, or skip "
                "the timing: name the --precision (and the shape, or auto_size = false)"
            )
        self.progress.fit(self.budget)
        # The first write, after everything else was accepted: a refused run touches nothing,
        # and an unwritable run directory is refused before training is announced (by rank 0).
        if self.world.is_main and not dry_run:
            self._prepare_run_dir(new=not resume)

    # -- setup -------------------------------------------------------------------------------

    def _place(self) -> tuple[torch.device, torch.dtype | None]:
        """The threads, the device and the autocast dtype (None: fp32) this rank trains with."""
        cfg = self.config
        # A run saved on a bigger machine may ask for more threads than this one should run.
        threads = min(cfg.threads, config_module.declaration("threads")[2].machine_max())
        if threads or self.world.size > 1:
            torch.set_num_threads(threads or self.world.threads())
        device = self.world.place(pick_device(cfg.device))
        return device, autocast_dtype(device, cfg.precision)

    def _auto_size(self, given: frozenset[str], amps: tuple) -> autosize.Sizing:
        """auto_size's choice; rank 0 times the candidates and the other ranks take its figures
        and its clock, so every rank chooses the same."""
        return autosize.size(self.model_config, self.config, given, len(self.vocab),
                             len(self.data.train), self._timer, self.world.share,
                             amps)  # fmt: skip

    def _timer(self, model_config: ModelConfig, train_config: TrainConfig,
               amps: tuple) -> tuple[float, ...]:  # fmt: skip
        """Training speed of a shape in each precision, in characters per second, timed by rank 0
        and shared (each rank trains batch_size / ranks rows, so rank 0 times that many)."""
        ranks = self.world.size
        rows = replace(train_config, batch_size=max(1, train_config.batch_size // ranks))
        vocab, device = len(self.vocab), self.device
        speeds = self.world.share_all(
            lambda: list(autosize.time_precisions(model_config, rows, vocab, device, amps)),
            len(amps),
        )
        # The timed shape's blocks are free now; kept (charrnn.allocator), they would stay
        # resident beside the next shape's and the run's, which allocate other sizes.
        release_freed_memory()
        return tuple(speed * ranks for speed in speeds)

    def _load_data(self, resume: dict[str, Any] | None, start: Any) -> Data:
        """The corpus, split (see charrnn.rundata: a resume checks it is the same text)."""
        vocab = start.vocab if start is not None else None
        data = rundata.load(self.config, resume, vocab, self.progress_bar, self.log)
        if len(data.val) < 2:
            raise CorpusError(
                f"the validation split has {len(data.val)} characters; raise val_fraction "
                "or use a longer text"
            )
        return data

    def _build_model(self) -> CharModel:
        try:
            return CharModel(self.model_config, len(self.vocab)).to(self.device)
        except (RuntimeError, MemoryError) as error:  # torch's failed allocations are both
            first = str(error).strip().splitlines()[0][:200]
            raise TrainingError(f"cannot build the model (too large?): {first}") from None

    def _prepare_run_dir(self, new: bool) -> None:
        """Create (or reuse) the run directory and own it: the lock comes before any write."""
        try:
            if self._named:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            else:
                self.run_dir = rundir.create_new(self.run_dir)
            self._lock = rundir.RunLock(self.run_dir)
            if new:  # checked under the lock: no other run can write there meanwhile
                rundir.check_new(self.run_dir)
            if removed := files.remove_stale_temporaries(self.run_dir):
                self.log(f"removed {removed} unfinished checkpoint file(s) of a killed run")
            why = f"auto_size chose: {self.sizing.reason}" if self.sizing else ""
            text = config_module.to_toml(self.model_config, self.config, why).encode("utf-8")
            files.write_atomically(self.run_dir / rundir.CONFIG, lambda file: file.write(text))
        except BaseException as error:
            self.release()
            if isinstance(error, OSError):
                raise unwritable(self.run_dir, error) from None
            raise

    def release(self) -> None:
        """Give up the run directory (`run()` does when it ends; so does the process's end)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        return kind(
            self.model.parameters(),
            lr=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            **optimizer_options(self.device),
        )

    # -- checkpoints -------------------------------------------------------------------------

    def _checkpoint(self) -> dict[str, Any]:
        """What a save writes; refused (the run stops) when any of it is NaN or infinite."""
        state = self.world.gather_rows(self.state)  # the whole batch's, so any N can resume
        hidden = None if state is None else [h.detach().cpu() for h in state]
        checkpoint = {
            **ckpt.header(),
            "model_config": config_module.to_dict(self.model_config),
            "train_config": config_module.to_dict(self.config),
            "vocab": self.vocab.to_list(),
            "corpus_path": str(self.data.corpus_path),
            **rundata.record(self.config, self.data),
            "init_from": self.started_from,
            **averaging.checkpoint_entries(self.model, self.average),  # model (+ averaging)
            "optimizer": self.optimizer.state_dict(),
            "progress": self.progress.to_dict(self.n_batches),
            "hidden_state": hidden,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
            },
        }
        # Every rank holds the same weights and gathered state: all of them stop together.
        if problem := ckpt.non_finite(checkpoint):
            raise diverged(f"{problem} became NaN or infinite", self.progress.step, self.run_dir)
        return checkpoint

    def _save(self, name: str) -> None:
        checkpoint = self._checkpoint()
        if not self.world.is_main:
            return
        try:
            ckpt.save(checkpoint, self.run_dir / name)
        except CheckpointError as error:
            # A failed periodic save (disk full, say) keeps the old file and the run goes on:
            # losing a checkpoint interval beats losing the run. The final save is retried below.
            self._warn(str(error))

    def _warn(self, message: str) -> None:
        """A write that failed without stopping the run: one line now, listed in the Result."""
        self.warnings.append(message)
        self.log(f"warning: {message}")

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> Result:
        """Train until the budget is spent or a stop is requested, then save last.pt."""
        try:
            return self._run()
        finally:
            self.release()

    def _run(self) -> Result:
        cfg, p = self.config, self.progress
        chars_per_step = cfg.batch_size * cfg.seq_length
        show_bar = self.progress_bar if self.world.is_main else False
        if p.best_precision not in (None, self.precision):
            self.log(f"best.pt was scored in {p.best_precision} and this run evaluates in "
                     f"{self.precision}: best.pt stays as it is")  # fmt: skip
        with (
            self._metrics_log() as metrics,
            ProgressBar(self.budget.max_steps, p.step, chars_per_step, show_bar) as bar,
        ):
            self._clock = (time.perf_counter(), p.seconds)
            # Every rank takes the same steps: the clock and stop requests are agreed after each.
            _, stopping = self.world.agree(p.seconds, self.stop.requested)
            self.model.train()
            while not self.budget.spent(p.step, p.seconds) and not stopping:
                inputs, targets = self._batch()
                lr = self._learning_rate()
                self.world.seed_step(cfg.seed, p.step)
                train_loss = self._train_step(inputs, targets, lr)
                p.step += 1
                stopping = self._agree(self.stop.requested)
                metrics.count_step()
                bar.advance()

                final = self.budget.spent(p.step, p.seconds)
                if (cfg.eval_every and p.step % cfg.eval_every == 0) or final:
                    self._record(metrics, train_loss, lr, whole=final)
                    stopping = self._agree(stopping)
                bar.describe(p.step / self.n_batches, train_loss, p.last_val_loss)
                if cfg.checkpoint_every and p.step % cfg.checkpoint_every == 0 and not final:
                    self._save(rundir.LAST)
        # The final save is not allowed to fail quietly: the CLI reports it (old file intact).
        checkpoint = self._checkpoint()
        if self.world.is_main:
            ckpt.save(checkpoint, self.run_dir / rundir.LAST)
        return Result(
            run_dir=self.run_dir,
            step=p.step,
            epoch=p.step / self.n_batches,
            seconds=p.seconds,
            best_val_loss=p.best_val_loss,
            final_val_loss=p.last_val_loss,
            stopped_by="budget" if self.budget.spent(p.step, p.seconds) else "signal",
            signal=self.stop.signal,
            checkpoint_warnings=self.warnings,
            final_val_scope=self._scope(whole=True),
        )

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's inputs and targets: this rank's rows, on the device."""
        cfg = self.config
        epoch, index = divmod(self.progress.step, self.n_batches)
        if self._epoch != epoch:
            offset = epoch_offset(epoch, cfg.seq_length, cfg.seed) if cfg.shift_epochs else 0
            loader = CyclicBatches(self.data.train, cfg.batch_size, cfg.seq_length, offset)
            self._epoch_loader, self._epoch = loader, epoch
        if index == 0:
            self.state = None  # rows do not continue across epochs
        inputs, targets = self._epoch_loader[index]
        inputs, targets = inputs[self.rows], targets[self.rows]
        return inputs.to(self.device), targets.to(self.device)

    def _learning_rate(self) -> float:
        p = self.progress
        return self.schedule.learning_rate(
            p.step, p.anchor.progress_at(self.budget.fraction(p.step, p.seconds))
        )

    def _agree(self, stop: bool) -> bool:
        """Agree with the other ranks on the clock (training time over all invocations) and on
        whether to stop; returns whether to stop."""
        started, seconds_before = self._clock
        now = seconds_before + (time.perf_counter() - started)
        self.progress.seconds, stopping = self.world.agree(now, stop)
        return stopping

    def _train_step(self, inputs: torch.Tensor, targets: torch.Tensor, lr: float) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(self.device, self.amp):
            logits, state = self.network(inputs, self.state)
            loss = char_loss(logits, targets)
        value = self.world.average(loss.item())  # all ranks see a NaN, so all stop together
        if not math.isfinite(value):
            raise diverged(f"the loss became {value}", self.progress.step + 1, self.run_dir)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.average is not None:
            self.average.update(self.model)
        self.state = detach_state(state)
        return value

    def _scope(self, whole: bool) -> str:
        """What an evaluation scores: part (the first eval_chars of the validation text, for
        periodic ones when set), sample (a large text's fixed sample) or all."""
        if not whole and self.config.eval_chars:
            return "part"
        return "all" if sample_windows(len(self.data.val)) is None else "sample"

    def _evaluate(self, whole: bool) -> float:
        cfg = self.config
        val = self.data.val
        part = self._scope(whole) == "part"

        def score() -> float:
            # With weight averaging on, the average is the model that is scored and saved.
            model = self.model if self.average is None else self.average.model
            device, amp = self.device, self.amp
            if part:
                return evaluate(model, val[: cfg.eval_chars + 1], cfg.batch_size,
                                cfg.seq_length, device, amp)[0]  # fmt: skip
            return evaluate_sampled(model, val, cfg.batch_size, cfg.seq_length, device, amp)[0]

        # Rank 0 scores the plain model (not DDP's, whose forward would wait for the other
        # ranks); they wait for its result instead.
        return self.world.share(score)

    def _record(self, metrics: MetricsLog, train_loss: float, lr: float, whole: bool) -> None:
        """Evaluate, add the metrics line, and save best.pt on a new best."""
        p = self.progress
        rate = metrics.rate()  # the training speed since the last evaluation, not counting it
        p.last_val_loss = val_loss = self._evaluate(whole=whole)
        eval_chars = self.config.eval_chars
        whole = whole or not eval_chars or eval_chars + 1 >= len(self.data.val)  # all was scored
        # Only a score of the whole split, in the precision of the best so far, compares with it.
        comparable = whole and p.best_precision in (None, self.precision)
        improved = comparable and math.isfinite(val_loss)
        improved = improved and (p.best_val_loss is None or val_loss < p.best_val_loss)
        if improved:
            p.best_val_loss, p.best_precision = val_loss, self.precision
        epoch = p.step / self.n_batches
        scope = self._scope(whole)
        line = metrics.record(p.step, epoch, p.seconds, train_loss, val_loss, scope, lr, rate)
        self.log(line + ("  *best" if improved else ""))
        if not math.isfinite(val_loss):
            raise diverged(f"the validation loss became {val_loss}", p.step, self.run_dir)
        if improved:
            self._save(rundir.BEST)
        metrics.start_window()

    def _metrics_log(self) -> MetricsLog:
        cfg = self.config
        # Only rank 0 writes the metrics; the other ranks write theirs nowhere.
        path = self.run_dir / rundir.METRICS if self.world.is_main else os.devnull
        try:
            return MetricsLog(path, cfg.batch_size * cfg.seq_length, self._warn)
        except OSError as error:
            raise unwritable(self.run_dir, error) from None
