"""Dynamic evaluation (Krause et al. 2017, 2018): the model keeps learning from the text it has
just scored.

The text is read in order, a chunk of ``seq_length`` characters at a time, carrying the hidden
state from chunk to chunk as static evaluation does. Each chunk is *scored first* (its loss is
what counts) and only then learned from: one gradient step on that chunk's mean loss. So every
character is predicted before the model has seen it, and nothing is peeked at; what the model
gains is the recent text (names of the scene, the speaker's words), which a static model can
only hold in its hidden state.

The step is RMS-normalised, as in Krause et al. 2018, with the mean square of the gradients
kept online over the chunks already read (bias-corrected, so the first steps are not huge)::

    ms <- beta * ms + (1 - beta) * g**2
    w  <- w - lr * g / (sqrt(ms / (1 - beta**t)) + eps)
    w  <- w + decay * (w0 - w)          # back toward the trained weights w0

``decay`` pulls the adapted weights back toward the trained ones, so adaptations to text long
past fade. ``lr = 0`` leaves the weights as trained: the dynamic loss is then exactly the static
loss of the same layout (both are reported, so the gain is measured like for like).

The model given is never changed: the adaptation runs on a copy.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from charrnn.batching import evaluation_chunks
from charrnn.config import build
from charrnn.devices import autocast
from charrnn.errors import ConfigError
from charrnn.model import CharModel, State, detach_state, select_rows
from charrnn.scoring import bits_per_char, char_loss
from charrnn.use_config import DynamicConfig

# Declared (with their bounds and help) in charrnn.use_config.DynamicConfig, chosen on held-out
# training text by benchmarks/dynamic_eval.py (NOTES.md says on what model).
DEFAULT_LR = DynamicConfig().dynamic_lr
DEFAULT_DECAY = DynamicConfig().dynamic_decay
SEQ_LENGTH = 50  # characters scored between two updates
ROWS = 1  # one stream: each update learns from the text just read, not from 64 other places
BETA = 0.99  # how long the running mean square of the gradients remembers
EPS = 1e-8


@dataclass(frozen=True)
class DynamicScore:
    """Dynamic and static loss of one text in one layout, in nats per character."""

    loss: float  # dynamic: each chunk scored by the model adapted to the chunks before it
    static_loss: float  # the trained weights, same layout and the same arithmetic
    characters: int
    lr: float
    decay: float
    rows: int
    seq_length: int

    @property
    def gain(self) -> float:
        """Nats per character the adaptation saved (positive: dynamic is better)."""
        return self.static_loss - self.loss

    def to_json(self) -> dict:
        return {
            "loss": self.loss,
            "bpc": bits_per_char(self.loss),
            "static_loss": self.static_loss,
            "gain": self.gain,
            "characters": self.characters,
            "lr": self.lr,
            "decay": self.decay,
            "rows": self.rows,
            "seq_length": self.seq_length,
        }


def check_settings(lr: float, decay: float) -> None:
    """Refuse a learning rate or decay that cannot mean anything, in one line (the rules are
    DynamicConfig's)."""
    build(DynamicConfig, {"dynamic_lr": lr, "dynamic_decay": decay})


class _RMSAdapter:
    """The update rule above, on a copy of the model's parameters."""

    def __init__(self, model: CharModel, lr: float, decay: float):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.trained = [p.detach().clone() for p in self.params]
        self.mean_square = [torch.zeros_like(p) for p in self.params]
        self.lr, self.decay, self.steps = lr, decay, 0

    @torch.no_grad()
    def step(self) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        self.steps += 1
        torch._foreach_mul_(self.mean_square, BETA)
        torch._foreach_addcmul_(self.mean_square, grads, grads, value=1 - BETA)
        denominator = torch._foreach_sqrt(self.mean_square)
        torch._foreach_div_(denominator, math.sqrt(1 - BETA**self.steps))
        torch._foreach_add_(denominator, EPS)
        torch._foreach_addcdiv_(self.params, grads, denominator, value=-self.lr)
        if self.decay:
            torch._foreach_lerp_(self.params, self.trained, self.decay)
        for p in self.params:
            p.grad = None


def _chunk_loss(model: CharModel, inputs, targets, state: State, amp) -> tuple[torch.Tensor, State]:
    """Summed loss of a chunk and the state after it (with autograd, as both passes score)."""
    with autocast(inputs.device, amp):
        logits, state = model(inputs, state)
    return char_loss(logits, targets, reduction="sum"), state


def dynamic_evaluate(
    model: CharModel,
    ids: torch.Tensor,
    *,
    lr: float = DEFAULT_LR,
    decay: float = DEFAULT_DECAY,
    seq_length: int = SEQ_LENGTH,
    rows: int = ROWS,
    device: torch.device | None = None,
    amp: torch.dtype | None = None,
) -> DynamicScore:
    """Dynamic and static loss over every character of `ids` after the first (see above).

    Both passes run the same forward arithmetic (with autograd), so with ``lr = 0`` they agree
    exactly; static evaluation without autograd (``scoring.evaluate``) agrees to ~1e-7.
    """
    check_settings(lr, decay)
    device = device or model.head.weight.device
    trained = model.to(device)
    adapted = copy.deepcopy(trained).eval()  # no dropout; the caller's model is never stepped
    was_training = trained.training
    trained.eval()
    adapter = _RMSAdapter(adapted, float(lr), float(decay))
    chunks = evaluation_chunks(ids, rows, seq_length)
    width = chunks[0].inputs.shape[0]
    static_state, dynamic_state = trained.init_state(width), adapted.init_state(width)
    static_total = dynamic_total = 0.0
    count = 0
    try:
        for chunk in chunks:
            if chunk.continues_row is not None:
                static_state = select_rows(static_state, [chunk.continues_row])
                dynamic_state = select_rows(dynamic_state, [chunk.continues_row])
            inputs, targets = chunk.inputs.to(device).long(), chunk.targets.to(device).long()
            loss, static_state = _chunk_loss(trained, inputs, targets, static_state, amp)
            static_total += loss.item()
            static_state = detach_state(static_state)
            loss, dynamic_state = _chunk_loss(adapted, inputs, targets, dynamic_state, amp)
            dynamic_total += loss.item()  # scored before it is learned from
            if not math.isfinite(dynamic_total):  # too large a step: the weights blew up
                raise ConfigError(
                    f"dynamic evaluation diverged (loss {dynamic_total}) with dynamic_lr "
                    f"{lr:g}; use a smaller --dynamic-lr"
                )
            (loss / targets.numel()).backward()
            adapter.step()
            dynamic_state = detach_state(dynamic_state)
            count += targets.numel()
    finally:
        trained.zero_grad(set_to_none=True)
        trained.train(was_training)
    return DynamicScore(dynamic_total / count, static_total / count, count, float(lr),
                        float(decay), width, seq_length)  # fmt: skip
