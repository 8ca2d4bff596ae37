"""Sizing the model for the budget and the machine (``auto_size``).

Two machines of the same description can differ 3x in matrix speed, and a model sized to read
~18 epochs of a text in 10 minutes on one reads 6 on the other. So before training, the run
times a few training steps of each candidate shape on this machine (at its threads, device and
precision), predicts how many characters each would read in the rest of the budget, and takes
the largest candidate that still reads enough of them for its size (the rule below). Where the
precision is `auto` on a CPU with bf16 instructions, each candidate is timed in bf16 and in fp32
and trains in the faster: such CPUs differ the other way too (bf16 2x faster with AMX, 1.1-1.5x
slower on a Xeon with AVX512-BF16 alone).

The rule was fitted on measured runs (benchmarks/NOTES.md, "Sizing for the machine"): a run
that trains at speed ``s`` for ``T`` seconds takes the same steps as one at ``2s`` for ``T/2``
(the schedule follows the budget's fraction, not the clock), so what decides the best size is
the number of characters a candidate reads, compared with its number of weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass, replace
from functools import partial

import torch

from charrnn.config import ModelConfig, TrainConfig
from charrnn.devices import PRECISION_NAMES, autocast, optimizer_options
from charrnn.model import CharModel, count_parameters
from charrnn.scoring import char_loss

# The settings auto_size chooses; any of them given in a config file or as a flag is kept.
CHOSEN = ("hidden_size", "num_layers", "batch_size", "dropout", "weight_drop", "weight_decay",
          "learning_rate", "min_lr_fraction")  # fmt: skip
SHAPE = ("hidden_size", "num_layers")

# The fitted rule: the largest candidate that reads at least this many characters per weight.
# benchmarks/NOTES.md ("Sizing for the machine") has the runs it was fitted on: the larger
# rung lost at 2.8 and 4.3 (1x768 to 1x512 at batch 16, by 0.033 and 0.015) and at 3.1 (1x1024
# to 1x768, by 0.064), and 1x768 is the tuned full-speed choice at 7.1-7.5. This is about the
# geometric mean of 4.3 and 7.5, ~25% from each: more than a probe's timing moves.
CHARS_PER_WEIGHT = 5.7
# Of the budget, the share spent training (the rest: evaluations and checkpoints; measured
# 97% in the default's 600 s runs, whose metrics.jsonl times both).
TRAINING_SHARE = 0.96
# Regularisation grows with the epochs a model will read: none for one pass over the text
# (a model that sees each character once cannot memorise it), full strength (FULL, below)
# from 16 on, and in between in proportion to log2(epochs).
FULL_STRENGTH_EPOCHS = 16.0
# Without a time limit, the budget a run is sized for (a run bounded by steps or epochs is
# sized by those instead).
UNBOUNDED_SECONDS = 600.0


@dataclass(frozen=True)
class Candidate:
    """One rung of the ladder: a shape with the batch and learning rate that suit it."""

    hidden_size: int
    num_layers: int = 1
    batch_size: int = 64
    learning_rate: float = 3.5e-3
    # The final learning rate / peak when the weights are averaged (`ema`); None: the config's.
    averaged_min_lr_fraction: float | None = None

    @property
    def name(self) -> str:
        return f"{self.num_layers}x{self.hidden_size}"

    def floor(self, train_config: TrainConfig) -> float | None:
        """The min_lr_fraction this rung sets for `train_config`, or None to keep the config's."""
        return self.averaged_min_lr_fraction if train_config.ema else None


# Smallest first. 1x768 at 3.5e-3 is the old fixed default (tuned at full speed here); the
# larger rungs, for GPUs and many-core machines, take a lower rate (1x1024 at 3.5e-3 lost, Y7).
# The rungs below it are chosen on slower machines, where a run takes too few steps at batch
# 64: there (1x512, 600 s on a 2.4x slower CPU, held-out training text) batch 32 won by 0.030
# nats, a rate of 5e-3 at 32 by another 0.021 (7e-3 tied it, 2.5e-3 lost), and batch 16 at 5e-3
# by another 0.015, reading fewer characters (benchmarks/NOTES.md, "bf16 is not always the
# faster" and the sections after it).
LADDER = (
    Candidate(256, batch_size=16, learning_rate=5e-3),
    Candidate(384, batch_size=16, learning_rate=5e-3),
    Candidate(512, batch_size=16, learning_rate=5e-3),
    # With the weights averaged, 1x768 ends its cosine decay at 0.2 of the peak rather than
    # 0.05: the average does the smoothing the last of the decay did, and the higher rate keeps
    # learning (-0.0037 and -0.0053 on two paired seeds; NOTES.md, "A higher floor").
    Candidate(768, averaged_min_lr_fraction=0.2),
    Candidate(1024, learning_rate=2.5e-3),
    Candidate(1536, learning_rate=2e-3),
)


Amp = torch.dtype | None  # an autocast dtype; None: plain fp32
# Characters per second of a shape in each precision given (``time_precisions``, shared).
Timer = Callable[[ModelConfig, TrainConfig, tuple[Amp, ...]], tuple[float, ...]]


@dataclass(frozen=True)
class Timed:
    """The precision to train in: the faster of those timed (or the only one)."""

    amp: Amp
    speeds: dict[str, float]  # chars/s by precision name; empty when nothing was timed

    @property
    def name(self) -> str:
        return PRECISION_NAMES[self.amp]

    def against(self) -> str:
        """'fp32, 1.38x bf16': the choice and how much faster it timed than the others."""
        mine = self.speeds.get(self.name)
        others = [f"{mine / speed:.2f}x {name}" for name, speed in self.speeds.items()
                  if name != self.name and mine]  # fmt: skip
        return ", ".join([self.name, *others])


def fastest(amps: tuple[Amp, ...], speeds: tuple[float, ...]) -> Timed:
    """The fastest of `amps` by their timed `speeds` (a tie keeps the first)."""
    best = max(range(len(amps)), key=lambda i: speeds[i])
    named = {PRECISION_NAMES[amp]: speed for amp, speed in zip(amps, speeds, strict=True)}
    return Timed(amps[best], named)


@dataclass(frozen=True)
class Measured:
    """A candidate as this machine runs it: its weights, speed and what it would read."""

    candidate: Candidate
    weights: int
    chars_per_second: float | None  # None: not timed (a budget in steps or epochs)
    chars: float  # characters it would read in the budget
    epochs: float
    precision: Timed  # the precision it would train in, and what each precision timed

    @property
    def chars_per_weight(self) -> float:
        return self.chars / self.weights


@dataclass(frozen=True)
class Sizing:
    """What auto_size chose and why."""

    model_config: ModelConfig
    train_config: TrainConfig
    measured: list[Measured]  # in ladder order, up to the first that reads too little
    chosen: Measured
    reason: str
    probe_seconds: float

    @property
    def amp(self) -> Amp:
        return self.chosen.precision.amp


@dataclass(frozen=True)
class Regularisation:
    dropout: float
    weight_drop: float
    weight_decay: float


# Full strength, measured at ~17 epochs (NOTES.md, "Weight decay"): AdamW's weight decay 0.3
# (0.1 lost, 0.5 was no better, 1.0 lost by far) with dropout 0.15 and weight drop 0.2
# (without weight decay, 0.2 and 0.3 were best: runs Y1-Y6).
FULL = Regularisation(dropout=0.15, weight_drop=0.2, weight_decay=0.3)


def regularisation(epochs: float) -> Regularisation:
    """The regularisation for a model that will read `epochs` passes over its text."""
    strength = min(1.0, max(0.0, math.log2(max(epochs, 1.0)) / math.log2(FULL_STRENGTH_EPOCHS)))
    return Regularisation(*(round(full * strength, 2) for full in astuple(FULL)))


def _candidates(model_config: ModelConfig, given: frozenset[str]) -> list[Candidate]:
    """The ladder, or the given shape alone (a given batch size or rate is kept by _apply)."""
    if given & set(SHAPE):
        return [Candidate(model_config.hidden_size, model_config.num_layers)]
    return list(LADDER)


def size(
    model_config: ModelConfig,
    train_config: TrainConfig,
    given: frozenset[str],
    vocab_size: int,
    train_chars: int,
    timer: Timer,
    share: Callable[[Callable[[], float]], float] = lambda compute: compute(),
    amps: tuple[Amp, ...] = (None,),
) -> Sizing:
    """Choose the shape, batch, regularisation and precision for this budget on this machine.

    `timer(model_config, train_config, amps)` measures a candidate's training speed in
    characters per second in each precision (``time_precisions`` on this process's device; the
    trainer shares rank 0's figures with the other ranks). Candidates are timed smallest first
    and the timing stops at the first one that would read too little: every larger one is slower
    and has more weights. `amps` are the precisions to time each candidate in
    (``devices.precision_choices``; more than one only for a budget in time, where every
    candidate is timed); it trains in the faster, which is then saved by name in the train
    config.

    `share(compute)` gives every process rank 0's value of a clock reading (the trainer's
    ``World.share``): the time already spent decides how much a candidate would read, so each
    rank reading its own clock could choose differently, or stop timing at another rung.
    """
    started = time.perf_counter()
    candidates = _candidates(model_config, given)
    measured: list[Measured] = []
    for candidate in candidates:
        # Timed with full regularisation: the masks cost time, and no choice has more of it.
        shaped = _apply(candidate, FULL, model_config, train_config, given)
        weights = parameters_of(shaped[0], vocab_size)
        spent = share(lambda: time.perf_counter() - started)  # the timing is inside the budget
        timed = _PrecisionTimer(partial(timer, *shaped), amps)
        speed, chars = _predicted_chars(shaped[1], train_chars, spent, timed)
        measured.append(Measured(candidate, weights, speed, chars,
                                 chars / max(train_chars, 1), timed.result))  # fmt: skip
        # Stop timing at the first rung that reads too little: every larger one is slower and
        # has more weights. A budget in steps needs no timing and reads more with the larger
        # batch of the rungs from 1x768 on, so there every rung is weighed.
        timed_rung = measured[-1].chars_per_second is not None
        if len(candidates) > 1 and timed_rung and measured[-1].chars_per_weight < CHARS_PER_WEIGHT:
            break
    fits = [m for m in measured if m.chars_per_weight >= CHARS_PER_WEIGHT]
    chosen = fits[-1] if fits else measured[0]
    chosen_model, chosen_train = _apply(
        chosen.candidate, regularisation(chosen.epochs), model_config, train_config, given
    )
    chosen_train = replace(chosen_train, auto_size=False)  # chosen: a rerun trains this
    if len(chosen.precision.speeds) > 1:  # chosen between precisions: a rerun trains in it
        chosen_train = replace(chosen_train, precision=chosen.precision.name)
    return Sizing(
        model_config=chosen_model,
        train_config=chosen_train,
        measured=measured,
        chosen=chosen,
        reason=_reason(chosen, measured, given, chosen_model, chosen_train),
        probe_seconds=share(lambda: time.perf_counter() - started),
    )


class _PrecisionTimer:
    """A candidate's speed in the faster of `amps`, timed only if asked for (a budget in steps
    or epochs needs no speed); `result` says which precision, and what each timed."""

    def __init__(self, time_in: Callable[[tuple[Amp, ...]], tuple[float, ...]],
                 amps: tuple[Amp, ...]) -> None:  # fmt: skip
        self.time_in, self.amps = time_in, amps
        self.result = Timed(amps[0], {})

    def __call__(self) -> float:
        self.result = fastest(self.amps, self.time_in(self.amps))
        return self.result.speeds[self.result.name]


def _apply(
    candidate: Candidate,
    regularised: Regularisation,
    model_config: ModelConfig,
    train_config: TrainConfig,
    given: frozenset[str],
) -> tuple[ModelConfig, TrainConfig]:
    """The configs with a candidate's settings in place of every setting not given."""
    values = {
        "hidden_size": candidate.hidden_size,
        "num_layers": candidate.num_layers,
        "dropout": regularised.dropout,
        "weight_drop": regularised.weight_drop,
        "weight_decay": regularised.weight_decay,
        "batch_size": candidate.batch_size,
        "learning_rate": candidate.learning_rate,
    }
    if candidate.floor(train_config) is not None:
        values["min_lr_fraction"] = candidate.floor(train_config)
    chosen = {key: value for key, value in values.items() if key not in given}
    model_keys = {"hidden_size", "num_layers", "dropout", "weight_drop"}
    return (
        replace(model_config, **{k: v for k, v in chosen.items() if k in model_keys}),
        replace(train_config, **{k: v for k, v in chosen.items() if k not in model_keys}),
    )


def _predicted_chars(
    train_config: TrainConfig, train_chars: int, spent: float, timed: Callable[[], float]
) -> tuple[float | None, float]:
    """(speed or None, characters) a run of these settings would read in its budget, `spent`
    seconds of it gone: the first of its limits it would reach (a time limit needs the speed;
    the others do not)."""
    per_step = train_config.batch_size * train_config.seq_length
    bounds = []
    if train_config.max_steps:
        bounds.append(train_config.max_steps * per_step)
    if train_config.max_epochs:
        bounds.append(train_config.max_epochs * train_chars)
    if train_config.max_time or not bounds:
        speed = timed()
        seconds = max(0.0, (train_config.max_time or UNBOUNDED_SECONDS) - spent)
        bounds.append(speed * seconds * TRAINING_SHARE)
        return speed, min(bounds)
    return None, min(bounds)


def _reason(chosen: Measured, measured: list[Measured], given: frozenset[str],
            model_config: ModelConfig, train_config: TrainConfig) -> str:  # fmt: skip
    read = f"reads ~{chosen.chars / 1e6:.1f} M characters ({chosen.epochs:.1f} epochs)"
    if len(measured) == 1 and given & set(SHAPE):
        why = f"the shape was given; it {read}"
    elif chosen.chars_per_weight >= CHARS_PER_WEIGHT:
        larger = measured[-1] if measured[-1] is not chosen else None
        per_weight = f"{chosen.chars_per_weight:.1f} per weight (>= {CHARS_PER_WEIGHT:g})"
        why = f"the largest that {read}, {per_weight}"
        if larger is not None:
            why += (f"; {larger.candidate.name} would read {larger.chars_per_weight:.1f} "
                    "per weight")  # fmt: skip
    else:
        why = f"the smallest; even it {read}, {chosen.chars_per_weight:.1f} per weight"
    timed = f"; in {chosen.precision.against()}" if len(chosen.precision.speeds) > 1 else ""
    floor = ""
    if chosen.candidate.floor(train_config) is not None and "min_lr_fraction" not in given:
        floor = (f"; weights averaged, so the rate decays to {train_config.min_lr_fraction:g} "
                 "of its peak")  # fmt: skip
    return (
        f"{chosen.candidate.name}: {why}; dropout {model_config.dropout:g}, weight drop "
        f"{model_config.weight_drop:g}, weight decay {train_config.weight_decay:g} for "
        f"{chosen.epochs:.1f} epochs{floor}{timed}"
    )


def time_precisions(
    model_config: ModelConfig,
    train_config: TrainConfig,
    vocab_size: int,
    device: torch.device,
    amps: tuple[Amp, ...],
    steps: int = 2,
    min_seconds: float = 0.5,
) -> tuple[float, ...]:
    """Characters per second of full training steps (forward, backward, clip, AdamW) of this
    shape on random text in each precision of `amps`, after an untimed warm-up step in each.

    The precisions take turns, a step each, so a machine whose speed drifts (these move 20-40%
    within a minute) moves them alike: timed one after the other, a 1.2x difference came out
    either way round. At least `steps` turns, and more until `min_seconds` a precision have
    passed (a small model's step is over too soon to time alone). Runs under a forked random
    state, so the run's seeded stream is untouched by the probe."""
    batch, length = train_config.batch_size, train_config.seq_length
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        model = CharModel(model_config, vocab_size).to(device)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **optimizer_options(device))
        ids = torch.randint(vocab_size, (batch, length + 1), device=device)
        inputs, targets = ids[:, :-1], ids[:, 1:]
        for amp in amps:  # the warm-up
            training_step(model, optimizer, inputs, targets, device, amp)
        spent, turns = [0.0] * len(amps), 0
        while turns < steps or sum(spent) < min_seconds * len(amps):
            for i, amp in enumerate(amps):
                _synchronize(device)
                started = time.perf_counter()
                training_step(model, optimizer, inputs, targets, device, amp)
                _synchronize(device)
                spent[i] += time.perf_counter() - started
            turns += 1
    return tuple(turns * batch * length / seconds for seconds in spent)


def training_step(
    model: CharModel,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    device: torch.device,
    amp: torch.dtype | None,
) -> None:
    """One step as the trainer takes it: forward and loss under autocast, backward, clipping,
    the optimiser (what a timing of a shape, or of a core, must include)."""
    with autocast(device, amp):
        logits, _ = model(inputs)
        loss = char_loss(logits, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parameters_of(model_config: ModelConfig, vocab_size: int) -> int:
    with torch.device("meta"):
        return count_parameters(CharModel(model_config, vocab_size))
