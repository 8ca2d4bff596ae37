"""The speeds section: the default (auto-sized) against the plain LSTM baseline at three
speeds this machine can make, each pair given the same threads and precision:

    full speed   all cores, the fast precision (bf16 where the CPU has it)
    half speed   one thread, same precision
    fp32 only    all cores, fp32 (a CPU without fast bf16)

Ours is `charrnn train --config default` with --threads / --precision (benchmarks.quality's
run, scored after it in fp32 as `charrnn eval` scores); the baseline is scored every tenth of
its budget and reported at its best, as early stopping would keep it. With `fixed`, the old
fixed default (1x768, tuned at full speed) also runs at full speed, beside the auto-sized one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks import quality

# name: (charrnn settings, the baseline's threads (0 = all), its precision (None = ours'))
SPEEDS = {
    "full speed": ([], 0, None),
    "half speed": (["threads=1"], 1, None),
    "fp32 only": (["precision=fp32"], 0, "fp32"),
}
# The default before auto_size: what it chose at full speed here, fixed.
FIXED_1X768 = ["auto_size=false", "hidden_size=768", "num_layers=1", "batch_size=64", "dropout=0.2",
               "weight_drop=0.3", "learning_rate=0.0035"]  # fmt: skip


def measure(config: str, corpus: Path, seconds: float, workdir: Path, *, sets: list[str],
            fixed: bool, step=lambda line: None) -> dict[str, Any]:  # fmt: skip
    """Every pair of the section, in one go."""
    pairs: dict[str, Any] = {}
    results: dict[str, Any] = {"pairs": pairs}
    for name, (settings, threads, precision) in SPEEDS.items():
        step(f"speeds: charrnn {config} at {name}, {seconds:.0f} s")
        ours = quality.ours(config, corpus, seconds, workdir, [*sets, *settings])
        used = precision or ("bf16" if ours["precision"] == "bf16" else "fp32")
        step(f"speeds: plain LSTM baseline at {name} ({used}), {seconds:.0f} s")
        plain = quality.baseline("plain", corpus, seconds, used, ours["val_fraction"], threads)
        pairs[name] = {"ours": ours, "plain": plain, "threads": threads or "all"}
        # Kept as it goes: a stopped 70-minute section keeps the pairs it measured.
        (workdir / "speeds-partial.json").write_text(json.dumps(results, indent=2) + "\n")
    if fixed:
        step(f"speeds: the fixed 1x768 default at full speed, {seconds:.0f} s")
        results["fixed_1x768"] = quality.ours(config, corpus, seconds, workdir,
                                              [*sets, *FIXED_1X768])  # fmt: skip
    return results
