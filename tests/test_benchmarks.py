"""The benchmark harness runs end to end on a tiny setting (no timings are asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_harness_writes_a_report(tmp_path, corpus_file):
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--tiny", "--corpus",
               str(corpus_file), "--out", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["ours"]["final_val_loss"] > 0 and results["plain"]["final_val_loss"] > 0
    assert results["throughput"]["chars_per_sec"] > 0
    assert results["sampling"]["charrnn_batch1"][0] > 0
    assert results["data_scale"]["encoded_dtype"] == "torch.uint8"
    report = (tmp_path / "RESULTS.md").read_text()
    for heading in ("Quality per CPU-minute", "Training throughput", "Sampling", "Scale of data"):
        assert heading in report
