"""Baselines, written from scratch for comparison (no charrnn training code is used).

    python -m benchmarks.baselines plain  --corpus PATH --seconds 600
    python -m benchmarks.baselines lesson --corpus PATH --seconds 600

- plain: embedding + 1x512 nn.LSTM + linear head, batch 32, seq 100, Adam 2e-3, linear
  warm-up then cosine decay over the time budget, no dropout. The "plain LSTM" of the
  performance issue.
- lesson: the lesson's model: one-hot input, 2x512 nn.LSTM with dropout 0.5 (between layers
  and before the head), batch 128, seq 100, Adam 1e-3, constant rate.

Both train in fp32, or with --precision bf16 under the same bf16 autocast charrnn uses on CPUs
that are fast at it (weights, optimiser and loss in fp32), so a comparison can be made at equal
precision; `--device cuda` trains and scores on a GPU (fp32 there without TF32). Adam runs its
fused kernel, as charrnn's optimiser does, so that part of a step is as fast as charrnn's too.
Both use the classic char-rnn batching (rows of the training text, targets shifted by one),
carry the hidden state between batches, clip gradients at 5, and finish with the mean
cross-entropy (fp32) over the whole validation text (the last --val-fraction, cut as charrnn
cuts it), scored statefully in 32 rows. Prints one JSON object: the final validation loss, the
seconds it trained, and a (seconds, val loss) curve.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self, vocab: int, hidden: int, layers: int, embedding: int, dropout: float):
        super().__init__()
        self.vocab = vocab
        self.embedding = nn.Embedding(vocab, embedding) if embedding else None
        self.lstm = nn.LSTM(embedding or vocab, hidden, layers, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)  # fmt: skip
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x, state=None):
        x = self.embedding(x) if self.embedding else F.one_hot(x, self.vocab).float()
        out, state = self.lstm(x, state)
        return self.head(self.drop(out)), state


RECIPES = {
    "plain": dict(hidden=512, layers=1, embedding=64, dropout=0.0, batch=32, seq=100,
                  lr=2e-3, warmup=100, cosine=True),
    "lesson": dict(hidden=512, layers=2, embedding=0, dropout=0.5, batch=128, seq=100,
                   lr=1e-3, warmup=0, cosine=False),
}  # fmt: skip


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def validation_loss(net: Net, val: torch.Tensor, rows: int = 32, seq: int = 1000) -> float:
    net.eval()
    length = (len(val) - 1) // rows
    x = val[: rows * length].view(rows, length)
    y = val[1 : rows * length + 1].view(rows, length)
    total, state = 0.0, None
    for t in range(0, length, seq):
        logits, state = net(x[:, t : t + seq], state)
        total += F.cross_entropy(logits.flatten(0, 1), y[:, t : t + seq].flatten(),
                                 reduction="sum").item()  # fmt: skip
    net.train()
    return total / (rows * length)


def train(recipe: str, corpus: str, seconds: float, eval_every: float, precision: str = "fp32",
          val_fraction: float = 0.1, threads: int = 0, device: str = "cpu") -> dict:  # fmt: skip
    r = RECIPES[recipe]
    if threads:
        torch.set_num_threads(threads)
    # fp32 is fp32 on a GPU too (no TF32), as in charrnn's fp32 scoring
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(1337)
    text = Path(corpus).read_text(encoding="utf-8")
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([index[c] for c in text], dtype=torch.long, device=device)
    split = len(data) - int(len(data) * val_fraction)
    amp = torch.bfloat16 if precision == "bf16" else None
    train_data, val = data[:split], data[split:]
    batch, seq = r["batch"], r["seq"]
    n_batches = len(train_data) // (batch * seq)
    kept = train_data[: n_batches * batch * seq]
    x_all = kept.view(batch, -1)
    y_all = torch.cat([kept[1:], kept[:1]]).view(batch, -1)

    net = Net(len(chars), r["hidden"], r["layers"], r["embedding"], r["dropout"]).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=r["lr"], fused=True)
    start = time.perf_counter()
    curve, step, state, next_eval = [], 0, None, eval_every
    while (elapsed := time.perf_counter() - start) < seconds:
        k = step % n_batches
        if k == 0:
            state = None
        warm = min(1.0, (step + 1) / r["warmup"]) if r["warmup"] else 1.0
        decay = 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed / seconds))) if r["cosine"] else 1
        for group in optimizer.param_groups:
            group["lr"] = r["lr"] * warm * decay
        with torch.autocast(torch.device(device).type, dtype=amp, enabled=amp is not None):
            logits, state = net(x_all[:, k * seq : (k + 1) * seq], state)
        targets = y_all[:, k * seq : (k + 1) * seq].flatten()
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        optimizer.step()
        state = tuple(s.detach() for s in state)
        step += 1
        if eval_every and time.perf_counter() - start >= next_eval:
            synchronize(device)  # a GPU's queued steps count before the clock is read
            curve.append((round(time.perf_counter() - start, 1), validation_loss(net, val)))
            next_eval += eval_every
    synchronize(device)
    seconds = time.perf_counter() - start  # the budget, and a GPU's last queued steps
    final = validation_loss(net, val)
    return {
        "device": device,
        "recipe": recipe,
        "precision": precision,
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "steps": step,
        "chars_per_sec": step * batch * seq / seconds,
        "final_val_loss": final,
        "final_train_loss": loss.item(),
        "curve": curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--eval-every", type=float, default=0, help="seconds; 0 = at the end")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads; 0 = torch's default")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    print(json.dumps(train(args.recipe, args.corpus, args.seconds, args.eval_every,
                           args.precision, args.val_fraction, args.threads,
                           args.device)))  # fmt: skip


if __name__ == "__main__":
    main()
