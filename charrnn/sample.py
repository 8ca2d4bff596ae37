"""Generating text: prime the state once, then carry it one character at a time.

    from charrnn import load_model
    model = load_model("checkpoints/my-run")          # a run directory or a .pt file
    print(model.generate(prime="ROMEO:", length=200, temperature=0.8, seed=1))
    for char in model.stream(prime="\\n", length=100): ...

Speed: at batch 1 a step is one small matrix-vector product per layer, so the cost is
streaming the recurrent weights through the cache plus per-operation overhead. The fast path
(`Stepper`) removes what it can: the first layer's input projection is a precomputed table
(one row per character: embedding @ W_ih + biases), weights are pre-transposed and contiguous,
and a one-character step is a handful of torch calls with no autograd and no module dispatch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from charrnn import checkpoint as ckpt
from charrnn.cores import core_of
from charrnn.corpus import Vocabulary, describe_char
from charrnn.devices import sampling_threads  # noqa: F401 (where benchmarks/ import it from)
from charrnn.errors import ConfigError, CorpusError
from charrnn.generation import Generation
from charrnn.model import CharModel, State
from charrnn.priming import PRIME_CHUNK, Context, Prime, Priming


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False

    def check(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(
                f"temperature must be greater than 0, got {self.temperature} (use --greedy for "
                "the most likely character)"
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


def next_ids(
    logits: torch.Tensor, options: SamplingOptions, generator: torch.Generator | None
) -> torch.Tensor:
    """(B, V) logits -> (B,) sampled ids."""
    if options.greedy:
        return logits.argmax(dim=-1)
    probabilities = torch.softmax(filter_logits(logits, options), dim=-1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(1)


INT8_MIN_HIDDEN = 256  # smaller models fit in cache: int8's conversions would cost more


def plus_bias(add: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor | None:
    """What a projection adds to its product: a term, its bias, both, or nothing."""
    if add is None or bias is None:
        return bias if add is None else add
    return add + bias


class Dense:
    """``x @ W.T (+ b)`` with W pre-transposed and contiguous (one addmm or mm a call)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight_t, self.bias = weight.T.contiguous(), bias

    def __call__(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        add = plus_bias(add, self.bias)
        return torch.mm(x, self.weight_t) if add is None else torch.addmm(add, x, self.weight_t)


class Int8:
    """``x @ W.T (+ b)`` with W stored as int8 plus one bf16 scale per output row.

    At batch 1 a step is bound by streaming the weights through the cache; int8 weights are a
    quarter of fp32, and the kernel (torch's weight-only int8 matmul) runs 2.5-3x faster. The
    cost in quality is measured by benchmarks/sampling.py.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        if not hasattr(torch, "_weight_int8pack_mm"):
            raise ConfigError("int8 sampling needs a torch with _weight_int8pack_mm (>= 2.3)")
        scales = weight.abs().amax(dim=1).clamp_min(1e-12) / 127
        self.weight = torch.round(weight / scales[:, None]).to(torch.int8).contiguous()
        self.scales = scales.to(torch.bfloat16)
        self.bias = bias

    @classmethod
    def where_safe(cls, weight: torch.Tensor, bias: torch.Tensor | None) -> Int8 | Dense:
        """Int8, or Dense for a weight whose input size is not a multiple of 16: torch's int8
        kernel reads past such rows and crashes the process (seen with 24 and 300 inputs;
        never with multiples of 16)."""
        return cls(weight, bias) if weight.shape[1] % 16 == 0 else Dense(weight, bias)

    def __call__(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        out = torch._weight_int8pack_mm(x.to(torch.bfloat16), self.weight, self.scales)
        add = plus_bias(add, self.bias)
        return out.float() if add is None else torch.add(add, out)  # float32, as add


class Stepper:
    """One character per call, through the cell kind's fast step (see charrnn.cores) for
    nn.LSTM / nn.GRU / nn.RNN cores and the gate-level twins.

    Kinds without a fast step (peephole LSTMs) fall back to the model's own forward, one step a
    call. With ``int8``, every matrix product of a step (recurrent, between layers, head) uses
    int8 weights; the first layer's input table stays exact.
    """

    def __init__(self, model: CharModel, int8: bool = False):
        self.model = model
        fast = core_of(model.config.cell).fast_step
        self.step = None if fast is None else fast.make(model.config)
        if fast is None:
            return
        project = Int8.where_safe if int8 else Dense
        core, layers = model.core, model.config.num_layers
        with torch.no_grad():
            vocab_inputs = model.encode_input(
                torch.arange(model.vocab_size, device=model.head.weight.device)
            )
            # Per layer: (input table or projection from the layer below, recurrent projection).
            self.layers: list[tuple[torch.Tensor | Dense | Int8, Dense | Int8]] = []
            for k in range(layers):
                w_ih = getattr(core, f"weight_ih_l{k}")
                w_hh = getattr(core, f"weight_hh_l{k}")
                b_ih = getattr(core, f"bias_ih_l{k}", None)
                b_hh = getattr(core, f"bias_hh_l{k}", None)
                b_ih = torch.zeros_like(w_ih[:, 0]) if b_ih is None else b_ih
                b_hh = torch.zeros_like(w_hh[:, 0]) if b_hh is None else b_hh
                fold = fast.fold_recurrent_bias  # not for the GRU: r scales (W_hn h + b_hn)
                input_bias = b_ih + b_hh if fold else b_ih
                recurrent = project(w_hh, None if fold else b_hh)
                if k == 0:
                    table = (vocab_inputs @ w_ih.T + input_bias).contiguous()  # (V, G*H)
                    self.layers.append((table, recurrent))
                else:
                    self.layers.append((project(w_ih, input_bias), recurrent))
            self.head = project(model.head.weight, model.head.bias)

    def __call__(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """ids (B,) -> logits (B, V) and the next state."""
        if self.step is None:
            logits, state = self.model(ids.unsqueeze(1), state)
            return logits[:, 0], state
        x = None
        new_state = []  # per layer: its new (h, c) or (h,)
        for k, (input_term, recurrent) in enumerate(self.layers):
            projected = input_term[ids] if k == 0 else input_term(x)
            layer_state = self.step(projected, recurrent, [part[k] for part in state])
            x = layer_state[0]  # the layer's output, the next layer's input
            new_state.append(layer_state)
        logits = self.head(x)
        return logits, tuple(map(stack, zip(*new_state, strict=True)))


def stack(layers: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """(layers, B, H) from each layer's (B, H); one layer is a view, not a copy."""
    return layers[0].unsqueeze(0) if len(layers) == 1 else torch.stack(layers)


# Above this many bytes of weights per step, a batch-1 step is bound by streaming them from
# memory, and two cores stream twice as fast; below it one thread avoids barrier overhead.
STREAMING_BYTES = 1 << 20


def step_weight_bytes(stepper: Stepper) -> int:
    if stepper.step is None:
        return sum(p.numel() * p.element_size() for p in stepper.model.parameters())
    parts = [stepper.head] + [
        p for layer in stepper.layers for p in layer if not isinstance(p, torch.Tensor)
    ]
    return sum(
        part.weight.numel() * part.weight.element_size()
        if isinstance(part, Int8)
        else part.weight_t.numel() * part.weight_t.element_size()
        for part in parts
    )


def choose_threads(batch: int, weight_bytes: int, device: torch.device) -> int:
    """Small batches of small models: one thread (a barrier costs more than it saves). Large
    weights or batches: every core (measured: a 1x768 int8 step at batch 1 runs 1.6x faster on
    two threads than on one)."""
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
    ):
        self.model = model.to(device).eval()
        self.vocab = vocab
        self.device = device
        if int8 is None:  # auto: int8 where it pays (measured cost: ~0.0002 nats/char)
            int8 = device.type == "cpu" and model.config.hidden_size >= INT8_MIN_HIDDEN
        self.int8 = int8
        self.stepper = Stepper(self.model, int8=int8)
        self.threads = threads

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
        threads = self.threads or choose_threads(1, step_weight_bytes(self.stepper), self.device)
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

    ``int8``: None (auto) uses int8 weights for the step's matrix products on a CPU when the
    model has 256 or more units, where it runs about twice as fast at batch 1 for a measured
    cost of about 0.0002 nats/char (benchmarks/RESULTS.md); True or False forces it.
    ``threads``: CPU threads while sampling; None chooses by batch and model size.
    """
    return TextGenerator.load(path, device, int8, threads)
