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


def cpu_identity() -> tuple[str | None, bool]:
    """Family and model numbers ("family 6 model 167"), and whether it has AMX tiles.

    Two CPUs reported by the same name ("Intel(R) Xeon(R) Processor") differed 3x in bf16
    matrix speed here: the numbers and AMX tell them apart where the name does not."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        return None, False
    numbers = None
    if "cpu family" in fields and "model" in fields:
        numbers = f"family {fields['cpu family']} model {fields['model']}"
    return numbers, "amx_bf16" in fields.get("flags", "").split()


def describe() -> dict:
    from charrnn.devices import cpu_has_bf16

    numbers, amx = cpu_identity()
    return {
        "cpu": cpu_model(),
        "cpu_id": numbers,
        "amx": amx,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "fast_bf16": cpu_has_bf16(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
