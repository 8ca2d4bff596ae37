"""Where the time of a training step goes: torch.profiler over a few steps of a config.

    python -m benchmarks.profile_step [--config default] [--steps 3]

Prints the operators with the most self CPU time. Used for the analysis in NOTES.md.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.throughput import training_step_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        times, shape = training_step_times(args.config, args.steps)
    print(f"{shape['batch_size']} x {shape['seq_length']}, {shape['precision']}, "
          f"{torch.get_num_threads()} threads; step times (s): "
          f"{', '.join(f'{t:.3f}' for t in times)}")  # fmt: skip
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
