"""Where a model runs and at what precision, decided in one place for training and reading.

``pick_device`` turns a name (auto, cpu, cuda, mps) into a torch device, refusing an absent
accelerator; ``autocast_dtype`` turns a precision (auto, fp32, bf16, fp16) into the dtype
autocast runs the matrix products in, or None for plain fp32; ``autocast`` is that context;
``optimizer_options`` picks the optimiser's kernel; ``sampling_threads`` sets torch's CPU
threads for a while (the sampler's, the prime's reading).
Weights, optimiser state and the loss stay fp32 whatever the precision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from charrnn.errors import ConfigError


def pick_device(name: str) -> torch.device:
    """auto = cuda, else mps, else cpu. Asking for an absent accelerator is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for but no CUDA GPU is available; use cpu")
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ConfigError("device mps was asked for but is not available; use cpu")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Whether the CPU has bf16 matrix instructions (AMX or AVX512-BF16). With AMX they run
    bf16 products 2-3x faster than fp32; with AVX512-BF16 alone they can be slower (a Xeon
    without AMX trained 1.1-1.5x faster in fp32), so `auto` times both (precision_choices)."""
    cpu = torch.cpu
    amx = getattr(cpu, "_is_amx_tile_supported", lambda: False)
    avx512_bf16 = getattr(cpu, "_is_avx512_bf16_supported", lambda: False)
    return bool(amx() or avx512_bf16())


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32.

    auto: bf16 on GPUs that have it and on CPUs with bf16 instructions (AMX / AVX512-BF16),
    fp32 elsewhere; weights, optimiser and loss stay fp32. A new training run times auto's two
    CPU choices instead of trusting the instructions (``precision_choices``).
    """
    if precision == "fp32" or device.type == "mps":
        return None
    if device.type == "cpu":
        if precision == "fp16":
            raise ConfigError("fp16 autocast is for CUDA GPUs; use bf16 or fp32 on the CPU")
        if precision == "bf16" or cpu_has_bf16():
            return torch.bfloat16
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def precision_choices(device: torch.device, precision: str) -> tuple[torch.dtype | None, ...]:
    """The autocast dtypes a new training run times to pick the faster, in order of preference
    on a tie: `auto` on a CPU with bf16 instructions gives bf16 and fp32 (whether bf16 is the
    faster there is a matter of measurement); anything else gives the one autocast_dtype names.
    """
    if device.type == "cpu" and precision == "auto" and cpu_has_bf16():
        return (torch.bfloat16, None)
    return (autocast_dtype(device, precision),)


def optimizer_options(device: torch.device) -> dict[str, bool]:
    """Keyword arguments for torch's Adam/AdamW on `device`: the fused kernel (one pass over the
    weights instead of a chain of foreach passes) where we have run it, CPUs and CUDA GPUs. On
    the CPU it made a 1x768 training step ~4% faster (benchmarks/NOTES.md)."""
    return {"fused": True} if device.type in ("cpu", "cuda") else {}


# The precisions an autocast dtype (None: plain fp32) is named by, in checkpoints and messages.
PRECISION_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to `dtype` on `device`; with None, a context that changes nothing."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


@contextlib.contextmanager
def sampling_threads(threads: int) -> Iterator[None]:
    """torch's CPU threads set to `threads` inside, put back after (a sampler chooses its own:
    see charrnn.sample.choose_threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
