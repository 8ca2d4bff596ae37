"""How long a window the weight average should have: several averages of one training run.

    python -m benchmarks.averaging_windows --out DIR [--ramps 5,3,2] -- TRAIN FLAGS...

`ema` averages over about the last ninth of the steps so far (its ramp, RAMP = 10 in
charrnn/averaging.py: window (RAMP + n) / (RAMP - 1) steps after n of them), until the setting
caps it. A longer window averages more of the jitter away but also more of the weights from
before the learning rate came down. Every window can be screened on the same trajectory: the
average only watches training, so this runs `charrnn train TRAIN FLAGS --ema 0.9999 --out DIR`
once (the cap set out of the way), folds the same weights into one more average per ramp in
`--ramps` after every step, and at the end writes each as DIR/windows/ramp{R}.pt (the run's
last.pt with that average as its model), and the raw weights as DIR/windows/raw.pt. Score
them with `charrnn eval FILE --split val`. Each extra average costs one pass over the weights
a step (~1 ms for 1x768), which the run pays for all of them alike.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from benchmarks.screens import run_charrnn
from charrnn import averaging
from charrnn import checkpoint as ckpt

CAP = 0.9999  # no run here is long enough for the cap to bind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ramps", default="5,3,2")
    parser.add_argument("train", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    ramps = [int(r) for r in args.ramps.split(",")]
    extra: dict[int, torch.nn.Module] = {}
    original = averaging.WeightAverage.update

    @torch.no_grad()
    def update(self: averaging.WeightAverage, model: torch.nn.Module) -> None:
        if not extra:  # the first step: every average starts from the same initial weights
            extra.update({ramp: copy.deepcopy(self.model) for ramp in ramps})
        n = self.updates
        original(self, model)
        raw = self._tensors(model)
        for ramp, averaged in extra.items():
            decay = min(CAP, (1 + n) / (ramp + n))
            torch._foreach_lerp_(self._tensors(averaged), raw, 1.0 - decay)

    averaging.WeightAverage.update = update
    flags = [f for f in args.train if f != "--"]
    try:
        run_charrnn(["train", *flags, "--ema", str(CAP), "--out", str(args.out)])
    except SystemExit as done:
        if done.code not in (0, None):
            raise
    last = torch.load(args.out / "last.pt", weights_only=True)
    windows = args.out / "windows"
    windows.mkdir(exist_ok=True)
    ckpt.save({**last, "model": last["averaging"]["raw"]}, windows / "raw.pt")
    for ramp, averaged in extra.items():
        weights = {k: v.detach().cpu() for k, v in averaged.state_dict().items()}
        ckpt.save({**last, "model": weights}, windows / f"ramp{ramp}.pt")


if __name__ == "__main__":
    main()
