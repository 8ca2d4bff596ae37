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

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from charrnn import checkpoint as ckpt
from charrnn import config as config_module
from charrnn.batching import CyclicBatches, epoch_offset
from charrnn.config import ModelConfig, TrainConfig
from charrnn.corpus import Vocabulary, read_text, resolve_corpus, split_train_val
from charrnn.devices import autocast, autocast_dtype, pick_device
from charrnn.distributed import World, fingerprint
from charrnn.errors import CheckpointError, ConfigError, CorpusError, TrainingError
from charrnn.model import CharModel, State, count_parameters, detach_state
from charrnn.schedule import Anchor, Budget, Schedule
from charrnn.scoring import bits_per_char, char_loss, evaluate


@dataclass
class Data:
    vocab: Vocabulary
    train: torch.Tensor
    val: torch.Tensor
    corpus_path: Path


def load_data(corpus: str, val_fraction: float, vocab: Vocabulary | None = None) -> Data:
    """Read, encode and split a corpus. With `vocab` (a resumed run), the text must fit it."""
    path = resolve_corpus(corpus)
    text = read_text(str(path))
    own = Vocabulary.from_text(text)
    if vocab is not None and own != vocab:
        raise CorpusError(
            f"corpus {corpus!r} has a different vocabulary ({len(own)} characters) from the "
            f"run's ({len(vocab)}); resume with the corpus the run was trained on"
        )
    vocab = vocab or own
    ids = vocab.encode(text)
    train, val = split_train_val(ids, val_fraction)
    return Data(vocab, train, val, path.resolve())


@dataclass
class Progress:
    """Where a run is; saved in every checkpoint."""

    step: int = 0
    seconds: float = 0.0  # training time over all invocations
    best_val_loss: float | None = None
    last_val_loss: float | None = None
    anchor: Anchor = field(default_factory=Anchor)
    budget_steps: int | None = None  # the budget the anchor was made for
    budget_seconds: float | None = None


@dataclass
class Result:
    run_dir: Path
    step: int
    epoch: float
    seconds: float
    best_val_loss: float | None
    final_val_loss: float | None
    stopped_by: str  # budget | signal
    signal: int | None = None
    parameters: int = 0
    checkpoint_warnings: list[str] = field(default_factory=list)


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


def default_run_dir(corpus: str, cell: str, root: Path = Path("checkpoints")) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = Path(corpus).stem if corpus.endswith(".txt") or "/" in corpus else corpus
    return root / f"{name}-{cell}-{stamp}"


class Trainer:
    """One training run: set up from configs (or a checkpoint), then `run()`."""

    def __init__(
        self,
        model_config: ModelConfig,
        train_config: TrainConfig,
        run_dir: Path,
        *,
        resume: dict[str, Any] | None = None,
        log: Callable[[str], None] = lambda line: None,
        stop: StopRequest | None = None,
        progress_bar: bool | None = None,
        world: World | None = None,
    ):
        self.model_config = model_config
        self.config = train_config
        self.run_dir = Path(run_dir)
        self.world = world or World()
        self.log = log if self.world.is_main else lambda line: None  # rank 0 speaks for all
        self.stop = stop or StopRequest()
        self.progress_bar = progress_bar
        cfg = train_config

        if cfg.threads or self.world.size > 1:
            torch.set_num_threads(cfg.threads or self.world.threads())
        self.device = self.world.place(pick_device(cfg.device))
        self.amp = autocast_dtype(self.device, cfg.precision)

        if resume:
            ckpt.check_resumable(resume, cfg.batch_size)
        vocab = Vocabulary.from_list(resume["vocab"]) if resume else None
        corpus = resume.get("corpus_path", cfg.corpus) if resume else cfg.corpus
        if resume and not Path(corpus).is_file():
            corpus = cfg.corpus  # moved since: fall back to the name the user gave
        self.data = load_data(corpus, cfg.val_fraction, vocab)
        self.vocab = self.data.vocab
        # Validate the shape now, so a too-short text is refused before anything is written.
        self.n_batches = len(CyclicBatches(self.data.train, cfg.batch_size, cfg.seq_length))
        self.rows = self.world.rows(cfg.batch_size)  # this rank's rows of every batch
        if len(self.data.val) < 2:
            raise CorpusError(
                f"the validation split has {len(self.data.val)} characters; raise val_fraction "
                "or use a longer text"
            )

        torch.manual_seed(cfg.seed)
        try:
            self.model = CharModel(model_config, len(self.vocab)).to(self.device)
        except (RuntimeError, MemoryError) as error:  # torch's failed allocations are both
            first = str(error).strip().splitlines()[0][:200]
            raise TrainingError(f"cannot build the model (too large?): {first}") from None
        self.optimizer = self._make_optimizer()
        self.schedule = Schedule(
            cfg.learning_rate, cfg.lr_schedule, cfg.min_lr_fraction, cfg.warmup_steps
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.state: State | None = None
        self._epoch, self._epoch_loader = -1, None
        self.progress = Progress()
        if resume:
            self._restore(resume)
        self.world.check_agreement(
            fingerprint(self.vocab.to_list(), self.data.train, self.data.val),
            self.progress.step,
            {**config_module.to_dict(model_config), **config_module.to_dict(cfg)},
        )
        self.network = self.world.wrap(self.model)
        self.budget = self._budget()
        self._anchor_budget()
        # The first write, after everything else was accepted: a refused run touches nothing,
        # and an unwritable run directory is refused before training is announced. Only rank 0
        # writes to the run directory.
        if self.world.is_main:
            self._prepare_run_dir()

    # -- setup -------------------------------------------------------------------------------

    def _prepare_run_dir(self) -> None:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if removed := ckpt.remove_stale_temporaries(self.run_dir):
                self.log(f"removed {removed} unfinished checkpoint file(s) of a killed run")
            text = config_module.to_toml(self.model_config, self.config).encode("utf-8")
            ckpt.write_atomically(self.run_dir / "config.toml", lambda file: file.write(text))
        except OSError as error:
            raise unwritable(self.run_dir, error) from None

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        extra = {"fused": True} if self.device.type == "cuda" else {}
        return kind(
            self.model.parameters(),
            lr=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            **extra,
        )

    def _budget(self) -> Budget:
        cfg = self.config
        limits = []
        if cfg.max_steps:
            limits.append(cfg.max_steps)
        if cfg.max_epochs:
            # min(): a huge --max-epochs times the epoch length overflows to infinity.
            limits.append(max(1, round(min(cfg.max_epochs * self.n_batches, 2**62))))
        # --max-time counts this invocation's time: add what earlier invocations trained.
        seconds = self.progress.seconds + cfg.max_time if cfg.max_time else None
        return Budget(min(limits) if limits else None, seconds)

    def _anchor_budget(self) -> None:
        """On resume with a different budget, stretch the rest of the schedule (see schedule)."""
        p = self.progress
        if (p.budget_steps, p.budget_seconds) == (self.budget.max_steps, self.budget.max_seconds):
            return
        if p.step > 0:
            old = Budget(p.budget_steps, p.budget_seconds)
            reached = p.anchor.progress_at(old.fraction(p.step, p.seconds))
            p.anchor = Anchor(reached, self.budget.fraction(p.step, p.seconds))
        p.budget_steps, p.budget_seconds = self.budget.max_steps, self.budget.max_seconds

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(checkpoint["model"])
            # Only the learned moments come from the file. How the optimiser runs (rate, betas,
            # flags such as fused, which depend on the device) is this run's config and device.
            groups = self.optimizer.state_dict()["param_groups"]
            saved_state = checkpoint["optimizer"]["state"]
            self.optimizer.load_state_dict({"state": saved_state, "param_groups": groups})
            saved = checkpoint["progress"]
            self.progress = Progress(
                step=int(saved["step"]),
                seconds=float(saved["seconds"]),
                best_val_loss=saved["best_val_loss"],
                last_val_loss=saved["last_val_loss"],
                anchor=Anchor(*saved["anchor"]),
                budget_steps=saved["budget_steps"],
                budget_seconds=saved["budget_seconds"],
            )
            hidden = checkpoint["hidden_state"]  # a list of 1 or 2 tensors, or None
            if hidden is not None:
                self.state = tuple(h[:, self.rows].to(self.device) for h in hidden)
            torch.set_rng_state(checkpoint["rng"]["torch"])
            if self.device.type == "cuda" and checkpoint["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(checkpoint["rng"]["cuda"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise CheckpointError(f"cannot resume from this checkpoint: {first[:200]}") from None

    # -- checkpoints -------------------------------------------------------------------------

    def _checkpoint(self) -> dict[str, Any]:
        p = self.progress
        state = self.world.gather_rows(self.state)  # the whole batch's, so any N can resume
        hidden = None if state is None else [h.detach().cpu() for h in state]
        return {
            **ckpt.header(),
            "model_config": config_module.to_dict(self.model_config),
            "train_config": config_module.to_dict(self.config),
            "vocab": self.vocab.to_list(),
            "corpus_path": str(self.data.corpus_path),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "progress": {
                "step": p.step,
                "epoch": p.step / self.n_batches,
                "seconds": p.seconds,
                "best_val_loss": p.best_val_loss,
                "last_val_loss": p.last_val_loss,
                "anchor": [p.anchor.progress, p.anchor.fraction],
                "budget_steps": p.budget_steps,
                "budget_seconds": p.budget_seconds,
            },
            "hidden_state": hidden,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
            },
            "parameters": count_parameters(self.model),
        }

    def _save(self, name: str, warnings: list[str]) -> None:
        checkpoint = self._checkpoint()
        if not self.world.is_main:
            return
        try:
            ckpt.save(checkpoint, self.run_dir / name)
        except CheckpointError as error:
            # A failed periodic save (disk full, say) keeps the old file and the run goes on:
            # losing a checkpoint interval beats losing the run. The final save is retried below.
            warnings.append(str(error))
            self.log(f"warning: {error}")

    # -- the loop ----------------------------------------------------------------------------

    def _loader(self, epoch: int) -> CyclicBatches:
        cfg = self.config
        offset = epoch_offset(epoch, cfg.seq_length, cfg.seed) if cfg.shift_epochs else 0
        return CyclicBatches(self.data.train, cfg.batch_size, cfg.seq_length, offset)

    def _train_step(self, inputs: torch.Tensor, targets: torch.Tensor, lr: float) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(self.device, self.amp):
            logits, state = self.network(inputs, self.state)
            loss = char_loss(logits, targets)
        value = self.world.average(loss.item())  # all ranks see a NaN, so all stop together
        if not math.isfinite(value):
            raise TrainingError(
                f"the loss became {value} at step {self.progress.step + 1}; stopped without "
                f"saving it (last.pt holds the last good checkpoint); lower --learning-rate "
                "or --grad-clip"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.state = detach_state(state)
        return value

    def _evaluate(self, whole: bool) -> float:
        cfg = self.config
        val = self.data.val
        if not whole and cfg.eval_chars:
            val = val[: cfg.eval_chars + 1]

        def score() -> float:
            model, device, amp = self.model, self.device, self.amp
            return evaluate(model, val, cfg.batch_size, cfg.seq_length, device, amp)[0]

        # Rank 0 scores the plain model (not DDP's, whose forward would wait for the other
        # ranks); they wait for its result instead.
        return self.world.share(score)

    def run(self) -> Result:
        cfg, p, main = self.config, self.progress, self.world.is_main
        # Only rank 0 writes the metrics; the other ranks write theirs nowhere.
        metrics_path = self.run_dir / "metrics.jsonl" if main else os.devnull
        try:
            # Unbuffered: a line that fails to be written (disk full) is dropped, not kept in
            # a buffer that would fail again when the file is closed.
            metrics = open(metrics_path, "ab", buffering=0)  # noqa: SIM115
        except OSError as error:
            raise unwritable(self.run_dir, error) from None
        warnings: list[str] = []
        chars_per_step = cfg.batch_size * cfg.seq_length
        start = time.perf_counter()
        start_seconds = p.seconds
        window_start, window_steps, train_loss = start, 0, float("nan")
        show_bar = sys.stderr.isatty() if self.progress_bar is None else self.progress_bar
        bar = tqdm(
            total=self.budget.max_steps,
            initial=p.step,
            desc="train",
            unit="step",
            file=sys.stderr,
            disable=not (main and show_bar),
            dynamic_ncols=True,
        )
        stopped_by = "budget"
        # Every rank takes the same steps: the clock and stop requests are agreed after each.
        _, stopping = self.world.agree(p.seconds, self.stop.requested)
        self.model.train()
        try:
            while not self.budget.spent(p.step, p.seconds):
                if stopping:
                    stopped_by = "signal"
                    break
                epoch, index = divmod(p.step, self.n_batches)
                if self._epoch != epoch:
                    self._epoch_loader, self._epoch = self._loader(epoch), epoch
                if index == 0:
                    self.state = None  # rows do not continue across epochs
                inputs, targets = self._epoch_loader[index]
                inputs, targets = inputs[self.rows], targets[self.rows]  # this rank's rows
                inputs, targets = inputs.to(self.device), targets.to(self.device)

                progress = p.anchor.progress_at(self.budget.fraction(p.step, p.seconds))
                lr = self.schedule.learning_rate(p.step, progress)
                self.world.seed_step(cfg.seed, p.step)
                train_loss = self._train_step(inputs, targets, lr)
                p.step += 1
                p.seconds, stopping = self.world.agree(
                    start_seconds + (time.perf_counter() - start), self.stop.requested
                )
                window_steps += 1
                bar.update(1)

                final = self.budget.spent(p.step, p.seconds)
                if (cfg.eval_every and p.step % cfg.eval_every == 0) or final:
                    now = time.perf_counter()
                    rate = window_steps * chars_per_step / max(now - window_start, 1e-9)
                    self._record(metrics, train_loss, lr, rate, whole=final, warnings=warnings)
                    window_start, window_steps = time.perf_counter(), 0
                    p.seconds, stopping = self.world.agree(
                        start_seconds + (time.perf_counter() - start), stopping
                    )
                steps_per_second = bar.format_dict.get("rate") or 0.0  # tqdm's smoothed rate
                bar.set_postfix(
                    chars_s=f"{steps_per_second * chars_per_step:,.0f}",
                    epoch=f"{p.step / self.n_batches:.2f}",
                    loss=f"{train_loss:.3f}",
                    val=f"{p.last_val_loss:.3f}" if p.last_val_loss is not None else "-",
                    refresh=False,
                )
                if cfg.checkpoint_every and p.step % cfg.checkpoint_every == 0 and not final:
                    self._save("last.pt", warnings)
        finally:
            bar.close()
            metrics.close()
        # The final save is not allowed to fail quietly: the CLI reports it (old file intact).
        checkpoint = self._checkpoint()
        if main:
            ckpt.save(checkpoint, self.run_dir / "last.pt")
        return Result(
            run_dir=self.run_dir,
            step=p.step,
            epoch=p.step / self.n_batches,
            seconds=p.seconds,
            best_val_loss=p.best_val_loss,
            final_val_loss=p.last_val_loss,
            stopped_by=stopped_by,
            signal=self.stop.signal,
            parameters=count_parameters(self.model),
            checkpoint_warnings=warnings,
        )

    def _record(self, metrics, train_loss, lr, rate, *, whole: bool, warnings) -> None:
        p = self.progress
        val_loss = self._evaluate(whole=whole)
        p.last_val_loss = val_loss
        improved = p.best_val_loss is None or val_loss < p.best_val_loss
        if improved:
            p.best_val_loss = val_loss
        line = {
            "step": p.step,
            "epoch": round(p.step / self.n_batches, 4),
            "time": round(p.seconds, 3),
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_bpc": bits_per_char(val_loss),
            "val_scope": "all" if whole or not self.config.eval_chars else "part",
            "lr": lr,
            "chars_per_sec": round(rate, 1),
        }
        self._append(metrics, line, warnings)
        self.log(
            f"step {p.step:>6}  epoch {line['epoch']:.2f}  train {train_loss:.4f}  "
            f"val {val_loss:.4f} ({line['val_bpc']:.3f} bpc)  lr {lr:.2e}  "
            f"{rate:,.0f} chars/s{'  *best' if improved else ''}"
        )
        if improved:
            self._save("best.pt", warnings)

    def _append(self, metrics, line: dict[str, Any], warnings: list[str]) -> None:
        """One whole line, or (disk full) a warning and no line at all: never half a line."""
        data = (json.dumps(line) + "\n").encode("utf-8")
        end = metrics.tell()
        try:
            written = metrics.write(data)
            reason = None if written == len(data) else "the disk took only part of the line"
        except OSError as error:
            reason = error.strerror or str(error)
        if reason is None:
            return
        with contextlib.suppress(OSError):
            metrics.truncate(end)
        # Like a failed periodic checkpoint: a missing metrics line beats a lost run.
        warnings.append(f"could not append to metrics.jsonl: {reason}")
        self.log(f"warning: {warnings[-1]}")


def resume_configs(
    checkpoint: dict[str, Any], overrides: dict[str, Any]
) -> tuple[ModelConfig, TrainConfig]:
    """The run's saved configs with the run-control overrides applied; others are refused."""
    try:
        model_config = config_module.build(ModelConfig, checkpoint["model_config"])
        saved_train = dict(checkpoint["train_config"])
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"checkpoint has invalid configs: {error}") from None
    allowed = config_module.run_control_fields()
    saved = {**config_module.to_dict(model_config), **saved_train}
    refused = [k for k, v in overrides.items() if k not in allowed and saved.get(k) != v]
    if refused:
        raise ConfigError(
            f"cannot change {', '.join(refused)} when resuming: it would change the model, the "
            f"data or the optimiser; only {', '.join(sorted(allowed))} may change"
        )
    saved_train.update({k: v for k, v in overrides.items() if k in allowed})
    return model_config, config_module.build(TrainConfig, saved_train)


def describe(model_config: ModelConfig, train_config: TrainConfig) -> list[tuple[str, str]]:
    """The resolved config as (key, value) rows, for the CLI's table."""
    rows = []
    for config in (model_config, train_config):
        for f in dataclasses.fields(config):
            rows.append((f.name, str(getattr(config, f.name))))
    return rows
