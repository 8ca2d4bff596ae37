"""Generating text: prime the state once, then carry it one character at a time.

    from charrnn import load_model
    model = load_model("checkpoints/my-run")          # a run directory or a .pt file
    print(model.generate(prime="ROMEO:", length=200, temperature=0.8, seed=1))
    for char in model.stream(prime="\\n", length=100): ...

Speed: at batch 1 a step is one small matrix-vector product per layer, so the cost is
streaming the recurrent weights through the cache plus per-operation overhead (about a
microsecond a torch call, most of a step beside the product). The fast path (`Stepper`)
removes what it can: the first layer's input projection is a precomputed table (one row per
character: embedding @ W_ih + biases), each layer's output feeds one product that makes both
what reads it now (the head, or the next layer's input) and its own recurrent term for the
next step, weights are pre-transposed and contiguous, and a step is a handful of torch calls
with no autograd and no module dispatch. `Draws` draws the sampling noise ahead in blocks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from charrnn import checkpoint as ckpt
from charrnn import kernel
from charrnn.cores import LSTM_FAST, core_of
from charrnn.corpus import Vocabulary, describe_char
from charrnn.devices import sampling_threads  # noqa: F401 (where benchmarks/ import it from)
from charrnn.errors import ConfigError, CorpusError, SamplingError
from charrnn.generation import Generation
from charrnn.kernel import CompiledStepper
from charrnn.model import CharModel, State
from charrnn.priming import PRIME_CHUNK, Context, Prime, Priming
from charrnn.use_config import MIN_TEMPERATURE


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False

    def check(self) -> None:
        if not self.temperature >= MIN_TEMPERATURE:
            raise ConfigError(
                f"temperature must be at least {MIN_TEMPERATURE}, got {self.temperature} (use "
                "greedy for the most likely character)"
            )
        if self.top_k < 0:
            raise ConfigError(f"top-k must be 0 (off) or more, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top-p must be in (0, 1], got {self.top_p}")


def filter_logits(logits: torch.Tensor, options: SamplingOptions) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p) filtering; masked entries become -inf."""
    logits = logits / options.temperature
    if options.top_k and options.top_k < logits.shape[-1]:
        kth = torch.topk(logits, options.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if options.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Drop a token when the ones before it already reach top_p (the first always stays).
        drop_sorted = cumulative - torch.softmax(sorted_logits, dim=-1) >= options.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


class Draws:
    """The random numbers of one generation's draws, (B, V) a step, from one seeded generator.

    On a CPU, torch.multinomial(p, 1, generator) draws q ~ Exp(1) in p's shape and returns
    argmax(p / q) (its fast path for one draw a row, pytorch issue 11931). Here the q of many
    steps are drawn in one call, at a fraction of the per-call cost. Where torch fills a tensor
    from the generator in order (its CPU default: torch 2.13, which CI pins, is tested) these
    are the very numbers, so the ids are torch.multinomial's for the same seed; builds that
    draw exponentials through MKL seed each call afresh, and there the texts differ from
    multinomial's but still follow the seed. Elsewhere (CUDA) torch.multinomial is called.

    Each refill checks the step's probabilities: a model whose state overflowed (its
    probabilities are NaN from then on) is refused within one block instead of writing the
    same character forever.
    """

    NUMBERS = 1 << 16  # q drawn a call at the most (256 KB), so a large batch draws fewer steps
    STEPS = 256  # and steps a call at the most

    def __init__(self, device: torch.device, seed: int, shape: tuple[int, int]):
        self.generator = torch.Generator(device)
        self.generator.manual_seed(seed)
        self.on_cpu = device.type == "cpu"
        self.shape = shape
        self.steps = max(1, min(self.STEPS, self.NUMBERS // (shape[0] * shape[1])))
        self._ahead: list[torch.Tensor] = []  # the block's steps not used yet, last first

    def exponential(self, probabilities: torch.Tensor) -> torch.Tensor:
        """The q to divide this step's (B, V) `probabilities` by (checked on each refill)."""
        if not self._ahead:
            if not bool(torch.isfinite(probabilities).all()):
                raise SamplingError(
                    "the model's probabilities are not finite (its state overflowed); this "
                    "model cannot generate from here: try another prime or checkpoint"
                )
            block = torch.empty(self.steps, *self.shape, dtype=torch.float32, device="cpu")
            self._ahead = list(block.exponential_(1, generator=self.generator).unbind(0))[::-1]
        return self._ahead.pop()

    def choose(self, probabilities: torch.Tensor) -> torch.Tensor:
        """(B, V) probabilities (any positive scale) -> (B,) ids, one drawn from each row."""
        if not self.on_cpu:
            return torch.multinomial(probabilities, 1, generator=self.generator).squeeze(1)
        return (probabilities / self.exponential(probabilities)).argmax(dim=-1)


def next_ids(logits: torch.Tensor, options: SamplingOptions, draws: Draws) -> torch.Tensor:
    """(B, V) logits -> (B,) sampled ids."""
    if options.greedy:
        return logits.argmax(dim=-1)
    return draws.choose(torch.softmax(filter_logits(logits, options), dim=-1))


INT8_MIN_HIDDEN = 256  # smaller models fit in cache: int8's conversions would cost more


class Dense:
    """``x @ W.T + b`` with W pre-transposed and contiguous: one addmm a call."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        self.weight_t, self.bias = weight.T.contiguous(), bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x, self.weight_t)


class Int8:
    """``x @ W.T + b`` with W stored as int8 plus one bf16 scale per output row.

    At batch 1 a step is bound by streaming the weights through the cache; int8 weights are a
    quarter of fp32, and the kernel (torch's weight-only int8 matmul) runs 2.5-3x faster. The
    cost in quality is measured by benchmarks/sampling.py.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        if not hasattr(torch, "_weight_int8pack_mm"):
            raise ConfigError("int8 sampling needs a torch with _weight_int8pack_mm (>= 2.3)")
        self.weight, scales = kernel.int8_rows(weight)
        self.scales = scales.to(torch.bfloat16)
        self.bias = bias

    @classmethod
    def where_safe(cls, weight: torch.Tensor, bias: torch.Tensor) -> Int8 | Dense:
        """Int8, or Dense for a weight whose input size is not a multiple of 16: torch's int8
        kernel reads past such rows and crashes the process (seen with 24 and 300 inputs;
        never with multiples of 16)."""
        return cls(weight, bias) if weight.shape[1] % 16 == 0 else Dense(weight, bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = torch._weight_int8pack_mm(x.to(torch.bfloat16), self.weight, self.scales)
        return torch.add(self.bias, out)  # float32, as the bias


def stacked_matrices(
    model: CharModel,
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]], list[int]]:
    """What a one-character step multiplies, for a kind with a fast step (see Stepper):
    the first layer's input table (V, G*H: one row per character, embedding @ W_ih + biases),
    each layer's stacked matrix and bias (rows: what reads its output now, i.e. the next
    layer's input projection or the head, then its own W_hh), and how many rows read it now."""
    fast = core_of(model.config.cell).fast_step
    core = model.core
    with torch.no_grad():
        # Per layer: its input projection's weight and bias (b_hh folded in, except for
        # the GRU, whose reset gate scales W_hn h + b_hn), and its recurrent ones.
        inputs, recurrents = [], []
        for k in range(model.config.num_layers):
            w_ih = getattr(core, f"weight_ih_l{k}")
            w_hh = getattr(core, f"weight_hh_l{k}")
            b_ih = getattr(core, f"bias_ih_l{k}", None)
            b_hh = getattr(core, f"bias_hh_l{k}", None)
            b_ih = torch.zeros_like(w_ih[:, 0]) if b_ih is None else b_ih
            b_hh = torch.zeros_like(w_hh[:, 0]) if b_hh is None else b_hh
            fold = fast.fold_recurrent_bias
            inputs.append((w_ih, b_ih + b_hh if fold else b_ih))
            recurrents.append((w_hh, torch.zeros_like(b_hh) if fold else b_hh))
        vocab_inputs = model.encode_input(
            torch.arange(model.vocab_size, device=model.head.weight.device)
        )
        w_ih, bias = inputs[0]
        table = (vocab_inputs @ w_ih.T + bias).contiguous()  # (V, G*H)
        head = model.head.weight, model.head.bias
        if head[1] is None:
            head = head[0], torch.zeros_like(head[0][:, 0])
        reads = [*inputs[1:], head]  # what reads layer k's output at the same step
        matrices = [
            (torch.cat([now_w, w_hh]), torch.cat([now_b, b_hh]))
            for (now_w, now_b), (w_hh, b_hh) in zip(reads, recurrents, strict=True)
        ]
    return table, matrices, [weight.shape[0] for weight, _ in reads]


class Stepper:
    """One character per call, through the cell kind's fast step (see charrnn.cores) for
    nn.LSTM / nn.GRU / nn.RNN cores and the gate-level twins.

    A layer's output h_t feeds two products: what reads it at this step (the next layer's
    input projection, or the head) and the layer's own recurrent projection at the next step.
    One matrix holds both (``outputs[k]``: rows ``[0, widths[k])`` the first, the rest
    ``W_hh``), so a layer costs one product a step; the recurrent half is kept for the next
    call (``_ahead``) and used when that call continues from the state this one returned (as a
    generation does). Any other state gets its recurrent terms computed first (one product
    more a layer). So a returned state must not be edited in place: copy it to change it.

    Kinds without a fast step (peephole LSTMs) fall back to the model's own forward, one step a
    call. With ``int8``, every matrix product of a step uses int8 weights; the first layer's
    input table stays exact.
    """

    def __init__(self, model: CharModel, int8: bool = False):
        self.model = model
        fast = core_of(model.config.cell).fast_step
        self.step = None if fast is None else fast.make(model.config)
        if fast is None:
            return
        project = Int8.where_safe if int8 else Dense
        # The state a call returned, each layer's recurrent term for the call after it, and
        # each layer's part of that state.
        self._ahead: tuple[State, list[torch.Tensor], list] | None = None
        self.table, matrices, self.widths = stacked_matrices(model)
        self.outputs = [project(weight, bias) for weight, bias in matrices]

    @property
    def streamed_bytes(self) -> int:
        """Bytes of weights torch's threads read a step."""
        if self.step is None:
            return forward_bytes(self.model)
        weights = [output.weight if isinstance(output, Int8) else output.weight_t
                   for output in self.outputs]  # fmt: skip
        return sum(weight.numel() * weight.element_size() for weight in weights)

    def __call__(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """ids (B,) -> logits (B, V) and the next state."""
        if self.step is None:
            logits, state = self.model(ids.unsqueeze(1), state)
            return logits[:, 0], state
        ahead = self._ahead
        if ahead is not None and ahead[0] is state:
            _, terms, layer_states = ahead
        else:
            terms = self._terms(state)
            layer_states = [[part[k] for part in state] for k in range(len(self.outputs))]
        x = self.table.index_select(0, ids)  # the first layer's input term
        new_states, next_terms = [], []  # per layer: its new (h, c) or (h,); its next term
        for output, width, layer_state in zip(self.outputs, self.widths, layer_states, strict=True):
            layer_state = self.step(x, terms[len(next_terms)], layer_state)
            both = output(layer_state[0])
            x = both[:, :width]  # the next layer's input term, or the logits
            next_terms.append(both[:, width:])
            new_states.append(layer_state)
        state = tuple(map(stack, zip(*new_states, strict=True)))
        self._ahead = (state, next_terms, new_states)
        return x, state

    def _terms(self, state: State) -> list[torch.Tensor]:
        """Each layer's recurrent term for a state that does not continue the last call."""
        return [
            output(state[0][k])[:, width:]
            for k, (output, width) in enumerate(zip(self.outputs, self.widths, strict=True))
        ]


def stack(layers: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """(layers, B, H) from each layer's (B, H); one layer is a view, not a copy."""
    return layers[0].unsqueeze(0) if len(layers) == 1 else torch.stack(layers)


# Above this many bytes of weights per step, a batch-1 step is bound by reading them (from
# memory, or from a cache they overflow), and two cores each holding half read them far faster;
# below it one thread avoids barrier overhead.
STREAMING_BYTES = 1 << 20


def forward_bytes(model: CharModel) -> int:
    """Bytes of weights the model's own forward reads a step (reading a prime goes through it,
    whichever step samples)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def step_weight_bytes(stepper: Stepper | CompiledStepper) -> int:
    """The bytes of weights torch reads a step (what decides its threads: choose_threads)."""
    return stepper.streamed_bytes


def choose_threads(batch: int, weight_bytes: int, device: torch.device) -> int:
    """Small batches of small models: one thread (a barrier costs more than it saves). Large
    weights or batches: every core (measured at batch 1 on 2 cores, 1x768: torch's int8 step
    1.8x faster on two threads than on one, the compiled step 2.2x, exact fp32 1.5x)."""
    cores = torch.get_num_threads()
    if device.type != "cpu" or batch > 8 or weight_bytes > STREAMING_BYTES:
        return cores
    return 1


class TextGenerator:
    """A loaded model and its vocabulary, ready to write text."""

    def __init__(
        self,
        model: CharModel,
        vocab: Vocabulary,
        device: torch.device,
        int8: bool | None = None,
        threads: int | None = None,
        compiled: bool = True,
    ):
        self.model = model.to(device).eval()
        self.vocab = vocab
        self.device = device
        if int8 is None:  # auto: int8 where it pays (measured cost: ~0.0003 nats/char)
            int8 = device.type == "cpu" and model.config.hidden_size >= INT8_MIN_HIDDEN
        self.int8 = int8
        # int8 on a CPU for an LSTM: the compiled step (charrnn.kernel) unless `compiled` is
        # False or it does not build here (then `compiled_why_not` says why); else torch's.
        self.compiled_why_not: str | None = None
        stepper: Stepper | CompiledStepper | None = None
        lstm = core_of(model.config.cell).fast_step is LSTM_FAST
        if compiled and int8 and device.type == "cpu" and lstm:
            built = kernel.load()
            if built.library is None:
                self.compiled_why_not = built.why_not
            else:
                stepper = CompiledStepper(built.library, *stacked_matrices(self.model))
        self.stepper = stepper or Stepper(self.model, int8=int8)
        self.threads = threads

    @property
    def sampler(self) -> str:
        """What steps a generation: "compiled int8" (charrnn.kernel), "int8" or "exact"."""
        if isinstance(self.stepper, CompiledStepper):
            return "compiled int8"
        return "int8" if self.int8 else "exact"

    @classmethod
    def load(
        cls, path: str, device: str = "auto", int8: bool | None = None, threads: int | None = None
    ) -> TextGenerator:
        from charrnn.devices import pick_device

        checkpoint = ckpt.load(path)
        model, vocab = ckpt.restore_model(checkpoint)
        return cls(model, vocab, pick_device(device), int8=int8, threads=threads)

    def default_prime(self) -> str:
        for char in ("\n", " "):
            if char in self.vocab:
                return char
        return self.vocab.chars[0]

    def clean_prime(self, prime: str | None, skip_unknown: bool = False) -> str:
        prime = self.default_prime() if prime is None or prime == "" else prime
        unknown = self.vocab.unknown(prime)
        if unknown and not skip_unknown:
            names = ", ".join(describe_char(c) for c in unknown)
            raise CorpusError(
                f"the prime has characters the model never saw: {names}; "
                "remove them or pass --skip-unknown"
            )
        prime = "".join(c for c in prime if c in self.vocab)
        if not prime:
            raise CorpusError("no character of the prime is in the model's vocabulary")
        return prime

    def read_prime(
        self,
        prime: str | None = None,
        *,
        path: str | Path | None = None,
        skip_unknown: bool = False,
        context: Context | None = None,
        chunk_chars: int = PRIME_CHUNK,
    ) -> Priming:
        """A prime text or file, checked, to read through the model (charrnn.priming): in chunks
        of `chunk_chars` characters, from `context` (to carry a text on) or a zero state."""
        threads = self.threads or choose_threads(1, forward_bytes(self.model), self.device)
        return Priming(self.model, self.vocab, Prime(prime, path), default=self.default_prime(),
                       skip_unknown=skip_unknown, context=context, threads=threads,
                       chunk_chars=chunk_chars)  # fmt: skip

    def generation(self, context: Context, length: int = 500, *, temperature: float = 0.8,
                   top_k: int = 0, top_p: float = 1.0, greedy: bool = False,
                   seed: int | None = None, num_samples: int = 1,
                   stop: Sequence[str] = (), score: bool = True) -> Generation:  # fmt: skip
        """Samples from `context`, to run by iterating (charrnn.generation); `score` computes
        each sample's mean log-probability (a few operations a step)."""
        options = SamplingOptions(temperature, top_k, top_p, greedy)
        return Generation(self, context, length, options, num_samples=num_samples, seed=seed,
                          stops=stop, score=score)  # fmt: skip

    def stream(self, prime: str | None = None, length: int = 500, *, temperature: float = 0.8,
               top_k: int = 0, top_p: float = 1.0, greedy: bool = False,
               seed: int | None = None, skip_unknown: bool = False,
               stop: Sequence[str] = ()) -> Iterator[str]:  # fmt: skip
        """The new characters of one sample as they are generated (prime not included); it ends
        early after a stop string (kept).

        Bad options are refused here, before the first character, not on first iteration.
        """
        context = self.read_prime(prime, skip_unknown=skip_unknown).read()
        generation = self.generation(context, length, temperature=temperature, top_k=top_k,
                                     top_p=top_p, greedy=greedy, seed=seed, stop=stop,
                                     score=False)  # fmt: skip
        return (pieces[0] for pieces in generation)

    def generate(self, prime: str | None = None, length: int = 500, *, temperature: float = 0.8,
                 top_k: int = 0, top_p: float = 1.0, greedy: bool = False,
                 seed: int | None = None, num_samples: int = 1, skip_unknown: bool = False,
                 stop: Sequence[str] = ()) -> str | list[str]:  # fmt: skip
        """The prime followed by up to `length` new characters (ending at the first stop string,
        kept); a list of strings if num_samples > 1."""
        priming = self.read_prime(prime, skip_unknown=skip_unknown)
        generation = self.generation(priming.read(), length, temperature=temperature,
                                     top_k=top_k, top_p=top_p, greedy=greedy, seed=seed,
                                     num_samples=num_samples, stop=stop, score=False)  # fmt: skip
        for _ in generation:
            pass
        prime = "".join(priming.pieces())
        texts = [prime + sample.text for sample in generation.samples()]
        return texts[0] if num_samples == 1 else texts


def load_model(
    path: str, device: str = "auto", int8: bool | None = None, threads: int | None = None
) -> TextGenerator:
    """Load a checkpoint (a .pt file or a run directory) for generation.

    ``int8``: None (auto) uses int8 for the step's matrix products on a CPU when the model has
    256 or more units (for an LSTM, the compiled step of charrnn.kernel where it builds); for
    the default 1x768 LSTM at batch 1 that runs about 5.3 times as fast as exact fp32 on two
    threads (3.7 on one) for a measured cost of about 0.0003 nats/char (benchmarks/RESULTS.md,
    "Sampling"); True or False forces it.
    ``threads``: CPU threads while sampling; None chooses by batch and model size.
    """
    return TextGenerator.load(path, device, int8, threads)
