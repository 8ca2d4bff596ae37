"""Dropout with masks drawn quickly on the CPU.

torch draws a CPU dropout mask one element at a time on its single-threaded Mersenne Twister
generator. For the default model that was 23% of a training step on two cores (the 4.9 million
output activations and the 2.4 million recurrent weights of each step; benchmarks/NOTES.md).
Here a mask comes from 16 random bits per element made in bulk by numpy's PCG64 generator,
about ten times faster. The generator is seeded from torch's own, so `torch.manual_seed`, the
random state saved in checkpoints (exact resume) and the per-rank seeds of a multi-process run
govern these masks exactly as they govern torch's.

On other devices torch's own dropout is already fast and is used unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LEVELS = 1 << 16  # a mask element keeps its value when its 16 random bits are >= p * LEVELS


def dropout_mask(shape: torch.Size | tuple[int, ...], p: float, like: torch.Tensor) -> torch.Tensor:
    """A mask of 0 and 1 / (1 - p) in `like`'s dtype: each element is 0 with probability p.

    p is rounded to a multiple of 1/65536, and the kept elements scaled by the rounded value,
    so the mask's mean is exactly 1 in expectation.
    """
    threshold = round(p * LEVELS)
    seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64).item())
    count = int(np.prod(shape))
    bits = np.random.Generator(np.random.PCG64(seed)).integers(
        np.iinfo(np.int16).min, np.iinfo(np.int16).max, count, dtype=np.int16, endpoint=True
    )
    keep = torch.from_numpy(bits).view(shape) >= threshold + np.iinfo(np.int16).min
    return keep.to(like.dtype).mul_(LEVELS / (LEVELS - threshold))


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout`, with the mask drawn by `dropout_mask` on the CPU."""
    if not training or p == 0:
        return x
    if x.device.type != "cpu" or p >= 1:
        return F.dropout(x, p, training=True)
    return x * dropout_mask(x.shape, p, x)


class Dropout(nn.Dropout):
    """`nn.Dropout` with `dropout`'s fast CPU masks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
