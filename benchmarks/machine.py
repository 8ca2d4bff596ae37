"""Which machine a benchmark ran on: every figure in RESULTS.md is reported with it."""

from __future__ import annotations

import os
import platform

import torch


def first_processor() -> dict[str, str]:
    """The fields /proc/cpuinfo gives the first processor (empty where there is no such file)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if not line.strip():
                    break  # the other processors repeat it
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model(fields: dict[str, str] | None = None) -> str:
    """The CPU's name, or what platform knows where /proc/cpuinfo is missing."""
    name = (first_processor() if fields is None else fields).get("model name")
    return name or platform.processor() or "unknown"


def cpu_numbers(fields: dict[str, str]) -> str | None:
    """ "family 6 model 167": two CPUs reported by the same name ("Intel(R) Xeon(R) Processor")
    differed 3x in bf16 matrix speed here; the numbers and AMX tell them apart."""
    if "cpu family" in fields and "model" in fields:
        return f"family {fields['cpu family']} model {fields['model']}"
    return None


def describe() -> dict:
    from charrnn.devices import cpu_has_bf16

    fields = first_processor()
    return {
        "cpu": cpu_model(fields),
        "cpu_id": cpu_numbers(fields),
        "amx": "amx_bf16" in fields.get("flags", "").split(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "fast_bf16": cpu_has_bf16(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
