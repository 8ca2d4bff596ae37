"""Which machine a benchmark ran on: every figure in RESULTS.md is reported with it."""

from __future__ import annotations

import os
import platform

import torch


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo, or what platform knows where that is missing."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> dict:
    from charrnn.devices import cpu_has_bf16

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "fast_bf16": cpu_has_bf16(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
