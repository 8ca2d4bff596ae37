"""One generation: samples drawn one character a step from a context, as one batch.

    priming = model.read_prime("ROMEO:")            # charrnn.priming: the prime, read in chunks
    generation = model.generation(priming.read(), 300, stop=["\\n\\n"], num_samples=3)
    for pieces in generation: ...                   # each step: one new piece per sample
    generation.samples()                            # text, why it ended, mean log-probability

Stop strings: each sample watches its own new text (not the prime) with charrnn.stops and ends
at the first stop string it writes, which is kept at the end of its text; the others go on. The
batch ends when every sample has ended or `length` steps are done.

Seed: a generation always draws from a seeded generator; without a seed it makes one
(`new_seed`) and reports it (`seed`), so any text can be written again. The seed is the
batch's: the same seed, prime, settings and number of samples give the same samples.

Mean log-probability: the mean, over a sample's new characters (up to and including its stop
string), of log p(character | everything before it) under the model's own distribution at
temperature 1 (log-softmax of its logits), whatever temperature, top-k, top-p or greedy chose
the character, so that numbers from different settings compare: it says how likely the model
finds the text, not how likely the sampler was to draw it. With int8 weights, it is the int8
model's distribution (the one sampled from).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from charrnn import machine
from charrnn.devices import sampling_threads
from charrnn.errors import ConfigError
from charrnn.priming import Context
from charrnn.stops import StopStrings

if TYPE_CHECKING:
    from charrnn.sample import SamplingOptions, TextGenerator

SEED_LIMIT = 2**63  # seeds are 0 .. 2**63 - 1 (charrnn.use_config.SampleConfig.seed)


# A drawn seed stays below 2**53: JavaScript's numbers (the web page, most JSON clients, jq
# before 1.7) hold integers exactly only that far, and a rounded seed repeats no text.
DRAWN_SEED_LIMIT = 2**53


def new_seed() -> int:
    """A seed for a generation that was given none, to be reported so it can be repeated."""
    return secrets.randbelow(DRAWN_SEED_LIMIT)


# Memory per character a generation keeps: a slot in its sample's list of characters, and a
# character of the joined text (up to 4 bytes), with room for the list's growth.
BYTES_PER_CHAR = 16


def check_fits(num_samples: int, length: int, model: torch.nn.Module | None = None) -> None:
    """Refuse (ConfigError) samples that, kept whole, would not fit in half the free memory:
    before a single character is generated, not after minutes of swapping. Without the
    `model`, its state (a few kB a sample) is left out: a check before it is loaded."""
    state = 0
    if model is not None:
        config = model.config
        state = 4 * (4 * config.num_layers * config.hidden_size + 3 * model.vocab_size)
    too_big = machine.beyond_half(num_samples * (length * BYTES_PER_CHAR + state), free=True)
    if too_big:
        raise ConfigError(
            f"{num_samples:,} samples x {length:,} characters would take {too_big}; ask for "
            "fewer or shorter samples"
        )


@dataclass(frozen=True)
class Sample:
    """One finished sample: its new text (the prime not included), why it ended ("stop": it
    wrote a stop string, kept at the end of `text`; "length": it reached the length), and the
    mean log-probability of its new characters (None when it has none)."""

    text: str
    stopped: str
    mean_log_prob: float | None


class Generation:
    """`num_samples` samples being generated from `context`, one character each a step.

    Iterating runs it: each step yields one piece per sample, its new character, or "" for a
    sample that has ended. It can be left early (an interrupted continuation): `samples()` and
    `carry()` then tell how far it got.
    """

    def __init__(
        self,
        generator: TextGenerator,
        context: Context,
        length: int,
        options: SamplingOptions,
        *,
        num_samples: int = 1,
        seed: int | None = None,
        stops: Sequence[str] = (),
        score: bool = True,
    ):
        from charrnn.sample import choose_threads, step_weight_bytes

        options.check()
        if length < 0:
            raise ConfigError(f"length must be 0 or more, got {length}")
        if num_samples < 1:
            raise ConfigError(f"num_samples must be at least 1, got {num_samples}")
        if seed is not None and not 0 <= seed < SEED_LIMIT:
            raise ConfigError(f"seed must be from 0 to {SEED_LIMIT - 1}, got {seed}")
        check_fits(num_samples, length, generator.model)
        self.generator, self.length, self.options = generator, length, options
        self.num_samples, self.seed = num_samples, new_seed() if seed is None else seed
        self.watchers = [StopStrings(stops) for _ in range(num_samples)]
        self.texts: list[list[str]] = [[] for _ in range(num_samples)]
        self.stopped = [False] * num_samples
        self.threads = generator.threads or choose_threads(
            num_samples, step_weight_bytes(generator.stepper), generator.device
        )
        state = tuple(s.repeat(1, num_samples, 1) for s in context.state)
        # Where the batch stands, in one attribute so an interrupt never sees half of it: the
        # logits of the next step, the state, and the ids drawn but not yet read (or None).
        self._at = (context.logits.float().expand(num_samples, -1), state, None)
        # When scoring: each sample's sum of log-probabilities, and 1.0 while it is running
        # (0.0 once it has ended: what the batch draws for it after that is not counted).
        self.score = score
        self._log_prob_sums = torch.zeros(num_samples, device=context.logits.device)
        self._running = torch.ones(num_samples, device=context.logits.device)
        self._steps: Iterator[list[str]] | None = None

    def __iter__(self) -> Iterator[list[str]]:
        if self._steps is None:
            self._steps = self._run()
        return self._steps

    @torch.inference_mode()
    def _run(self) -> Iterator[list[str]]:
        from charrnn.sample import Draws, next_ids

        chars, stepper = self.generator.vocab.chars, self.generator.stepper
        watching = bool(self.watchers[0].stops)
        draws = Draws(self.generator.device, self.seed, tuple(self._at[0].shape))
        with sampling_threads(self.threads):
            for position in range(self.length):
                logits, state, _ = self._at
                ids = next_ids(logits, self.options, draws)
                self._at = (logits, state, ids)
                if self.score:
                    log_probs = torch.log_softmax(logits, -1).gather(1, ids[:, None]).squeeze(1)
                    self._log_prob_sums += log_probs * self._running
                pieces = []
                for k, char in enumerate(chars[i] for i in ids.tolist()):
                    if self.stopped[k]:
                        pieces.append("")
                        continue
                    self.texts[k].append(char)
                    pieces.append(char)
                    if watching and self.watchers[k].feed(char) is not None:
                        self.stopped[k] = True
                        self._running[k] = 0.0
                yield pieces
                if all(self.stopped):
                    return
                if position + 1 < self.length:
                    self._at = (*stepper(ids, state), None)

    def samples(self) -> list[Sample]:
        """Each sample as far as it got (mean_log_prob None unless scored)."""
        sums = self._log_prob_sums.tolist()
        means = [sums[k] / len(text) if self.score and text else None
                 for k, text in enumerate(self.texts)]  # fmt: skip
        ended = ["stop" if stopped else "length" for stopped in self.stopped]
        return [Sample("".join(text), why, mean)
                for text, why, mean in zip(self.texts, ended, means, strict=True)]  # fmt: skip

    def carry(self) -> Context:
        """The context after the last character written (of a one-sample generation): where a
        next prime is read from to carry the text on."""
        if self.num_samples != 1:
            raise ConfigError("only the context of a single sample can be carried on")
        logits, state, pending = self._at
        if pending is not None:
            with torch.inference_mode(), sampling_threads(self.threads):
                logits, state = self.generator.stepper(pending, state)
            self._at = (logits, state, None)
        return Context(logits, state)
