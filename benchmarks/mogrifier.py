"""What a cell that changes the LSTM's step costs to train on a CPU: the Mogrifier LSTM (Melis
et al., 2019), one of issue 16's ideas toward 1.40, timed beside torch's fused nn.LSTM.

    python -m benchmarks.mogrifier [--rounds 0 4 5] [--repeats 3] [--hidden-size 768]
    python -m benchmarks.mogrifier --rounds 4 --charrnn train|eval ...   (a quality screen)

Before each step a Mogrifier lets the input and the previous hidden state gate each other in
turns (round 1: x = 2 sigmoid(Q h) * x, round 2: h = 2 sigmoid(R x) * h, ...), then takes an
ordinary LSTM step on the two. Because x_t now depends on h_{t-1}, the input product can no
longer be made for the whole sequence at once, and oneDNN's fused LSTM (which charrnn's "lstm"
core trains with) cannot run it: the cell must be a time loop of small products, as
charrnn.cells.GateLSTM is. A layer-normalised LSTM has the same problem (its norms sit inside
the step). `--rounds 0` is that loop with no mogrification: it computes exactly what nn.LSTM
does, so it prices the loop alone.

Each variant is charrnn's model (embedding, core, dropout, head) with only the core replaced,
trained as charrnn trains it (weight drop on W_hh, autocast at the machine's precision, AdamW,
clipping) on one random batch; the repeats are interleaved across variants so that a
neighbour's load hits them alike, and the median is reported. The Mogrifier is not a charrnn
cell; this module only measures it. `--charrnn` runs charrnn itself (train, then eval of
the run, each so called) with the "lstm" core built as a Mogrifier of the first `--rounds`: the
screen in benchmarks/NOTES.md ("A Mogrifier ... LSTM").
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import Tensor, nn

from benchmarks.screens import VOCAB, interleaved_speeds, run_charrnn, step_config, step_heading
from charrnn import cores
from charrnn.cell_kinds import KINDS
from charrnn.config import ModelConfig
from charrnn.cores import lstm_step
from charrnn.model import CharModel

Pair = tuple[Tensor, Tensor]  # (h, c), each (1, B, H)


class MogrifierLSTM(nn.Module):
    """One batch-first LSTM layer with `rounds` of mogrification; torch's weight names, shapes
    and gate order (so charrnn's weight drop finds ``weight_hh_l0``)."""

    def __init__(self, input_size: int, hidden_size: int, rounds: int):
        super().__init__()
        bound = 1 / math.sqrt(hidden_size)

        def uniform(*shape: int, limit: float = bound) -> nn.Parameter:
            return nn.Parameter(torch.empty(*shape).uniform_(-limit, limit))

        self.weight_ih_l0 = uniform(4 * hidden_size, input_size)
        self.weight_hh_l0 = uniform(4 * hidden_size, hidden_size)
        self.bias_ih_l0 = uniform(4 * hidden_size)
        self.bias_hh_l0 = uniform(4 * hidden_size)
        # Odd rounds (Q, input_size x hidden) gate x by h; even ones (R) gate h by x.
        shapes = [(input_size, hidden_size) if r % 2 == 0 else (hidden_size, input_size)
                  for r in range(rounds)]  # fmt: skip
        self.mogrify = nn.ParameterList(uniform(*s, limit=1 / math.sqrt(s[1])) for s in shapes)

    def forward(self, x: Tensor, state: Pair) -> tuple[Tensor, Pair]:
        h, c = state[0][0], state[1][0]  # (B, H): one layer
        bias = self.bias_ih_l0 + self.bias_hh_l0
        w_ih, w_hh = self.weight_ih_l0.t(), self.weight_hh_l0.t()
        gating = [m.t() for m in self.mogrify]
        outputs = []
        for t in range(x.shape[1]):
            x_t, h_in = x[:, t], h
            for r, m in enumerate(gating):
                if r % 2 == 0:
                    x_t = 2 * torch.sigmoid(h_in @ m) * x_t
                else:
                    h_in = 2 * torch.sigmoid(x_t @ m) * h_in
            # Then the plain LSTM cell, the one charrnn's fast sampler steps with.
            h, c = lstm_step(torch.addmm(bias, x_t, w_ih), h_in @ w_hh, (h, c))
            outputs.append(h)
        return torch.stack(outputs, 1), (h[None], c[None])


def model_for(config: ModelConfig, rounds: int | None) -> CharModel:
    """charrnn's model of `config`; with `rounds`, its core replaced by a Mogrifier loop."""
    model = CharModel(config, VOCAB)
    if rounds is not None:
        model.core = MogrifierLSTM(config.embedding_dim, config.hidden_size, rounds)
    return model.train()


def use_in_charrnn(rounds: int) -> None:
    """Make this process's charrnn build its "lstm" core as a Mogrifier of `rounds` (one layer;
    checkpoints it writes are read back only by a process that did the same)."""

    def build(_config: ModelConfig, common: dict) -> MogrifierLSTM:
        return MogrifierLSTM(common["input_size"], common["hidden_size"], rounds)

    cores.CORES["lstm"] = cores.Core(KINDS["lstm"], build, fast_step=None)


def measure(hidden_size: int, rounds: list[int], repeats: int) -> dict[str, float]:
    """Median characters/s of a training step: nn.LSTM and a Mogrifier of each round count."""
    config = step_config(hidden_size)
    torch.manual_seed(0)
    models = {"nn.LSTM (fused)": model_for(config, None)}
    models.update({f"Mogrifier, {r} rounds": model_for(config, r) for r in rounds})
    return interleaved_speeds(models, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, nargs="+", default=[0, 4, 5])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hidden-size", type=int, default=768)
    parser.add_argument(
        "--charrnn", nargs=argparse.REMAINDER, help="run charrnn so, its lstm core a Mogrifier"
    )
    args = parser.parse_args()
    if args.charrnn is not None:
        use_in_charrnn(args.rounds[0])
        run_charrnn(args.charrnn)
        return
    speeds = measure(args.hidden_size, args.rounds, args.repeats)
    print(step_heading(args.hidden_size))
    fused = speeds["nn.LSTM (fused)"]
    for name, speed in speeds.items():
        print(f"  {name:22} {speed:10,.0f} chars/s   {fused / speed:4.1f}x the fused step's time")


if __name__ == "__main__":
    main()
