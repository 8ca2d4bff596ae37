"""A learned neural cache after the LSTM: a screen toward issue 16's 1.40, and what it costs.

    python -m benchmarks.neural_cache [--memory 300] [--size 128] [--repeats 5]
    python -m benchmarks.neural_cache --charrnn train|eval ...   (a quality screen)

Dynamic evaluation shows how much the validation text pays for remembering what it has just
read (0.15 nats: names of the scene's speakers, words repeated a few lines apart). An LSTM
keeps that only in its state. Grave et al. (2016) let a trained model look back instead: the
hidden state at t is compared with the states at earlier positions j, and the characters that
followed those positions are proposed for t + 1. Here that cache is learned with the model,
as one attention head:

    query q(h_t), keys k(h_j) for j < t (this window's, and the kept keys of the last
    `memory` positions of the row's earlier windows, detached) and a sentinel key with no
    value;
    values: an embedding of the character that followed j (x_{j+1}, never t's own target);
    h_t' = h_t + o(attention)     (o starts at zero, so a fresh model is the plain LSTM)

and the head reads h_t' (after the usual dropout). Position t only sees characters up to x_t,
so the loss is still an honest next-character loss. All of it is a few batched products over
the whole window, not a loop over time: oneDNN's fused LSTM still runs the recurrence.

The memory is the rows' recent keys, carried like the LSTM's state: a call with no state
(a new text), a switch between training and evaluation or a change of batch size starts it
empty. Not a charrnn setting: this module only screens and times it. `--charrnn` runs charrnn
itself (train, then eval of the run) with the cache in its model (checkpoints it writes are
read back only so); the results are in benchmarks/NOTES.md ("A learned neural cache").
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.screens import VOCAB, interleaved_speeds, run_charrnn, step_config, step_heading
from charrnn.config import ModelConfig
from charrnn.model import CharModel, State


class LearnedCache(nn.Module):
    """The attention head over a row's recent states, reading the characters that followed."""

    def __init__(self, hidden_size: int, vocab_size: int, memory: int, size: int):
        super().__init__()
        self.memory = memory
        self.query, self.key = nn.Linear(hidden_size, size), nn.Linear(hidden_size, size)
        self.next_value = nn.Embedding(vocab_size, size)
        self.sentinel = nn.Parameter(torch.zeros(size))  # "nothing here is worth copying"
        self.out = nn.Linear(size, hidden_size)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        # The memory: (B, M, size) keys of the row's last positions and (B, M) the ids that
        # followed them. Keys, not states (as Transformer-XL keeps its memory): the key of a
        # remembered position is computed once, not again at each of the next windows.
        self.recent: tuple[Tensor, Tensor] | None = None

    def forward(self, hidden: Tensor, ids: Tensor, fresh: bool) -> Tensor:
        """hidden (B, T, H) the core's output for input ids (B, T) -> (B, T, H)."""
        rows, length, _ = hidden.shape
        query, keys = self.query(hidden), self.key(hidden)
        if fresh or self.recent is None or self.recent[0].shape[0] != rows:
            past, past_next = keys.new_zeros(rows, 0, keys.shape[2]), ids.new_zeros(rows, 0)
        else:
            past, past_next = self.recent
            # The last remembered position's next character is this window's first input.
            past_next = torch.cat([past_next[:, :-1], ids[:, :1]], 1)
        keys = torch.cat([past.to(keys.dtype), keys], 1)  # (B, M + T, size)
        # Position j's value is x_{j+1}; the window's last one is not known yet (a placeholder
        # the mask never lets anyone read, filled in by the next call).
        following = torch.cat([past_next, ids[:, 1:], ids[:, :1]], 1)
        values = self.next_value(following).to(query.dtype)
        kept = max(0, keys.shape[1] - self.memory)  # not [-memory:]: memory 0 keeps none
        self.recent = (keys[:, kept:].detach(), following[:, kept:])
        keys = torch.cat([self.sentinel.to(keys.dtype).expand(rows, 1, -1), keys], 1)
        values = torch.cat([values.new_zeros(rows, 1, values.shape[2]), values], 1)
        # Key 0 is the sentinel, 1..M the memory, 1 + M + j window position j: query t may
        # read keys up to M + t, i.e. window positions j <= t - 1, whose values are <= x_t.
        remembered = past.shape[1]
        visible = torch.arange(keys.shape[1], device=hidden.device)[None, :] <= (
            remembered + torch.arange(length, device=hidden.device)[:, None]
        )
        read = F.scaled_dot_product_attention(query, keys, values, attn_mask=visible)
        return hidden + self.out(read)


def forward_with_cache(model: CharModel, ids: Tensor, state: State | None = None):
    """CharModel.forward (its steps, repeated here so the screen leaves charrnn untouched)
    with the cache between the core and the dropout before the head."""
    fresh = state is None or model.cache_mode != model.training
    model.cache_mode = model.training
    if state is None:
        state = model.init_state(ids.shape[0])
    x = model.encode_input(ids)
    dropped = model._dropped_weights() if model.training and model.config.weight_drop > 0 else None
    out, state = model._run_core(x, state, dropped)
    out = model.cache(out, ids, fresh)
    return model.head(model.dropout(out)), state


def add_cache(model: CharModel, memory: int, size: int) -> CharModel:
    model.cache = LearnedCache(model.config.hidden_size, model.vocab_size, memory, size)
    model.cache_mode = None  # the mode of the last call: a switch empties the memory
    return model


class CachedCharModel(CharModel):
    """charrnn's model with the cache."""

    def __init__(self, config: ModelConfig, vocab_size: int, memory: int, size: int):
        super().__init__(config, vocab_size)
        add_cache(self, memory, size)

    forward = forward_with_cache  # type: ignore[assignment]


def use_in_charrnn(memory: int, size: int) -> None:
    """Make every CharModel this process builds carry a cache: for `charrnn train` and `eval`
    (the fast sampler steps its own LSTM and would leave the cache out: not for `sample`)."""
    plain_init = CharModel.__init__

    def init(self: CharModel, config: ModelConfig, vocab_size: int) -> None:
        plain_init(self, config, vocab_size)
        add_cache(self, memory, size)

    CharModel.__init__ = init  # type: ignore[method-assign]
    CharModel.forward = forward_with_cache  # type: ignore[method-assign]


class Carried(nn.Module):
    """Calls a model with a state, as the trainer does, so a cached model keeps its memory
    between timed steps (training_step calls with none, which would empty it each time)."""

    def __init__(self, model: CharModel):
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor) -> tuple[Tensor, State]:
        return self.model(ids, self.model.init_state(ids.shape[0]))


def measure(hidden_size: int, memory: int, size: int, repeats: int) -> dict[str, float]:
    """Median characters/s of a training step with and without the cache, interleaved."""
    config = step_config(hidden_size)
    torch.manual_seed(0)
    cached = CachedCharModel(config, VOCAB, memory, size).train()
    models = {
        "LSTM": CharModel(config, VOCAB).train(),
        f"LSTM + cache ({memory} back, size {size})": Carried(cached),
    }
    return interleaved_speeds(models, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", type=int, default=300, help="positions remembered back")
    parser.add_argument("--size", type=int, default=128, help="query, key and value size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden-size", type=int, default=768)
    parser.add_argument(
        "--charrnn", nargs=argparse.REMAINDER, help="run charrnn so, its model with the cache"
    )
    args = parser.parse_args()
    if args.charrnn is not None:
        use_in_charrnn(args.memory, args.size)
        run_charrnn(args.charrnn)
        return
    speeds = measure(args.hidden_size, args.memory, args.size, args.repeats)
    print(step_heading(args.hidden_size))
    plain = speeds["LSTM"]
    for name, speed in speeds.items():
        print(f"  {name:36} {speed:10,.0f} chars/s   {plain / speed:4.2f}x the LSTM's time")


if __name__ == "__main__":
    main()
