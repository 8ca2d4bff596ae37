"""The compiled sampling step of LSTMs (kernel.c), built at first use.

At batch 1 a character through torch costs ~20 calls of about a microsecond each beside one
matrix product (benchmarks/NOTES.md, "Batch-1 sampling"). kernel.c takes a character through
every layer in one call: each layer's cell, and its product in int8 weights AND int8
activations (exact int32 dot products, which compilers turn into VNNI instructions where the
CPU has them). `CompiledStepper` is called as `charrnn.sample.Stepper` is, so the draw, stop
strings, scoring and `charrnn serve`'s batches are the same code whichever step runs; every
batch row is computed on its own, so a served request still gives the text it gives alone. It
is the int8 step of LSTMs on a CPU wherever it builds; the loss it costs is measured beside the
weight-only int8 and exact fp32 steps in benchmarks/RESULTS.md.

It is built with the system's C compiler ($CC, else cc, gcc or clang) for this CPU
(-march=native) into charrnn's cache (charrnn.cache), keyed by the source, the flags and the
CPU, so later runs load it in milliseconds. Without a compiler, or with CHARRNN_KERNEL=0, the
torch int8 step runs instead (the same model; slightly different arithmetic, so other texts).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from charrnn.cache import cache_root
from charrnn.errors import CharRNNError, SamplingError

SOURCE = Path(__file__).with_name("kernel.c")
# No -ffast-math and no contraction into FMAs: the same bits on every machine (kernel.c).
FLAGS = ("-std=c99", "-O3", "-march=native", "-ffp-contract=off", "-fPIC", "-shared", "-pthread")
ENV_SWITCH = "CHARRNN_KERNEL"  # "0" turns the kernel off
BUILD_SECONDS = 120
_BUILDING = threading.Lock()  # one build at a time in a process (between processes: the rename)


@dataclass(frozen=True)
class Built:
    """The loaded library, or None and why not."""

    library: ctypes.CDLL | None
    why_not: str = ""


def compiler() -> list[str] | None:
    """The compiler's command ($CC may carry arguments, e.g. "ccache gcc"), or None."""
    for command in (shlex.split(os.environ.get("CC", "")), ["cc"], ["gcc"], ["clang"]):
        if command and shutil.which(command[0]):
            return command
    return None


def cpu_identity() -> str:
    """What -march=native depends on: the CPU's model and instruction sets where the system
    tells them (Linux /proc/cpuinfo, macOS sysctl), with what platform knows."""
    known = f"{platform.system()} {platform.machine()} {platform.processor()}"
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        wanted = [line for line in lines if line.startswith(("model name", "flags", "Features"))]
        return known + "\n" + "\n".join(dict.fromkeys(wanted))  # every core repeats them
    except OSError:
        pass
    try:  # macOS: e.g. "Apple M2", whose instructions an M1 lacks
        done = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                              text=True, timeout=5)  # fmt: skip
        return f"{known} {done.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        return known


@functools.cache
def load() -> Built:
    """Build (once per source, compiler and CPU) and load the kernel."""
    if os.environ.get(ENV_SWITCH) == "0":
        return Built(None, f"turned off by {ENV_SWITCH}=0")
    cc = compiler()
    if cc is None:
        return Built(None, "no C compiler (set CC, or install cc, gcc or clang)")
    parts = [SOURCE.read_text(), " ".join(FLAGS), " ".join(cc), cpu_identity()]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]
    try:
        folder = cache_root() / "kernels"
        folder.mkdir(parents=True, exist_ok=True)
    except (OSError, CharRNNError) as error:
        return Built(None, f"no cache folder to build in: {error}")
    path = folder / f"lstm-{key}.so"
    with _BUILDING:
        if not path.exists():
            why_not = _build(cc, path)
            if why_not:
                return Built(None, why_not)
    try:
        library = ctypes.CDLL(str(path))
    except OSError as error:
        return Built(None, f"could not load {path}: {error}")
    net, pointer, count = ctypes.POINTER(Net), ctypes.c_void_p, ctypes.c_int
    library.charrnn_terms.argtypes = [net, pointer, count, pointer, count]
    library.charrnn_terms.restype = None
    library.charrnn_step.argtypes = [net, pointer, count, *[pointer] * 5, count]
    library.charrnn_step.restype = ctypes.c_int
    return Built(library)


def _build(cc: list[str], path: Path) -> str:
    """Compile kernel.c into `path`, whole or not at all: "" or why it failed."""
    partial = path.with_name(f".{path.stem}.{os.getpid()}.so")  # renamed whole into place
    try:
        command = [*cc, *FLAGS, "-o", str(partial), str(SOURCE)]
        done = subprocess.run(command, capture_output=True, timeout=BUILD_SECONDS)
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines() or ["no message"]
            errors = [line for line in lines if "error" in line] or lines
            return f"{' '.join(cc)} could not build it: {errors[0]}"
        os.replace(partial, path)
        return ""
    except (OSError, subprocess.SubprocessError) as error:
        return f"{' '.join(cc)} could not build it: {error}"
    finally:
        partial.unlink(missing_ok=True)  # after a failure or an interrupt; gone if renamed


class Net(ctypes.Structure):
    """kernel.c's Net: the weights, as pointers into tensors that CompiledStepper keeps."""

    _fields_ = [
        ("layers", ctypes.c_int),
        ("hidden", ctypes.c_int),
        ("vocab", ctypes.c_int),
        ("table", ctypes.c_void_p),
        ("weights", ctypes.POINTER(ctypes.c_void_p)),
        ("row_sums", ctypes.POINTER(ctypes.c_void_p)),
        ("scales", ctypes.POINTER(ctypes.c_void_p)),
        ("biases", ctypes.POINTER(ctypes.c_void_p)),
        ("widths", ctypes.POINTER(ctypes.c_int)),
    ]


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight as int8 with one scale per row (max |row| / 127): (int8, contiguous; scales).
    The int8 of both steps, this one's and torch's (charrnn.sample.Int8)."""
    scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127
    return torch.round(weight / scale[:, None]).to(torch.int8).contiguous(), scale


def _pointers(tensors: list[torch.Tensor]):
    return (ctypes.c_void_p * len(tensors))(*(t.data_ptr() for t in tensors))


State = tuple[torch.Tensor, torch.Tensor]  # an LSTM's (h, c), each (layers, batch, hidden)


class CompiledStepper:
    """`step(ids (B,), state) -> (logits (B, V), next state)` through kernel.c, as
    charrnn.sample.Stepper: each layer's product of the step before holds its recurrent term
    for this one, kept for the call that continues from the state it returned; any other
    state gets its terms computed first. A returned state is never written again."""

    def __init__(
        self,
        library: ctypes.CDLL,
        table: torch.Tensor,
        matrices: list[tuple[torch.Tensor, torch.Tensor]],
        widths: list[int],
    ):
        """`table`: (V, 4H) first-layer input terms; per layer, its stacked matrix (rows: what
        reads h now, then W_hh) and bias; `widths`: the rows read now (the last: V)."""
        self.library = library
        self.hidden = matrices[0][0].shape[1]
        self.vocab = widths[-1]
        self.rows = [weight.shape[0] for weight, _ in matrices]
        self.table = table.float().contiguous()
        # int8 weights with one scale per row, and each row's sum.
        self.weights, self.row_sums, self.scales, self.biases = [], [], [], []
        for weight, bias in matrices:
            quantised, scale = int8_rows(weight)
            self.weights.append(quantised)
            self.row_sums.append(quantised.sum(dim=1, dtype=torch.int32).contiguous())
            self.scales.append(scale.float().contiguous())
            self.biases.append(bias.float().contiguous())
        groups = (self.weights, self.row_sums, self.scales, self.biases)
        self._arrays = [_pointers(group) for group in groups]
        self._widths = (ctypes.c_int * len(widths))(*widths)
        self.layers = len(matrices)
        net = Net(self.layers, self.hidden, self.table.shape[0], self.table.data_ptr(),
                  *self._arrays, self._widths)  # fmt: skip
        self.net = ctypes.pointer(net)
        # The state a call returned and its products (the next call's recurrent terms).
        self._ahead: tuple[State, torch.Tensor] | None = None
        self._total = sum(self.rows)  # products a batch row
        self._last = self._total - self.rows[-1]  # where the last layer's rows start
        self._step = library.charrnn_step  # (a call here saves an attribute lookup a step)

    @property
    def streamed_bytes(self) -> int:
        """Bytes of int8 weights a step reads. Above sample.STREAMING_BYTES the sampler gives
        even batch 1 every core: kernel.c's helper thread then keeps half of the rows in its
        core's cache from one character to the next (measured: a 1x768 model's 2.4 MB at
        batch 1, 8,300 characters/s on two threads against 4,400 on one; benchmarks/NOTES.md).
        Smaller models stay on one thread."""
        return sum(weight.numel() for weight in self.weights)

    def _buffer(self, batch: int) -> torch.Tensor:
        """A call's own buffer (kernel.c): the products, then room for its scratch."""
        scratch = -(-batch * self.hidden // 4) + batch  # the quantised h's bytes, the steps
        return torch.empty(batch * self._total + scratch, dtype=torch.float32, device="cpu")

    def terms(self, h: torch.Tensor) -> torch.Tensor:
        """The products of a state's h (layers, B, H), float32, contiguous: what a call
        from it needs first."""
        buffer = self._buffer(h.shape[1])
        self.library.charrnn_terms(self.net, h.data_ptr(), h.shape[1], buffer.data_ptr(),
                                   torch.get_num_threads())  # fmt: skip
        return buffer

    def __call__(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        # Lean on purpose: at batch 1 each line here costs as much as a tenth of the step.
        ahead = self._ahead
        if ahead is not None and ahead[0] is state:
            (h, c), terms = state, ahead[1]
        else:
            h, c = (part.to("cpu", torch.float32).contiguous() for part in state)
            if h.shape != c.shape or h.dim() != 3 or h.shape[0::2] != (self.layers, self.hidden):
                raise SamplingError(
                    f"an LSTM state of shape {tuple(h.shape)} does not fit this model "
                    f"({self.layers} layers of {self.hidden})"
                )
            terms = self.terms(h)
        if ids.dtype != torch.int64 or not ids.is_contiguous():
            ids = ids.to(torch.int64).contiguous()
        batch = h.shape[1]
        if ids.shape != (batch,):
            raise SamplingError(f"{tuple(ids.shape)} ids for a batch of {batch}")
        h_new, c_new, products = torch.empty_like(h), torch.empty_like(c), self._buffer(batch)
        # Threads: torch's setting (the sampler's choice: charrnn.sample.choose_threads): from
        # 2, kernel.c shares a small batch's products with its helper thread, a large batch's
        # among that many threads.
        refused = self._step(self.net, ids.data_ptr(), batch, c.data_ptr(), terms.data_ptr(),
                             h_new.data_ptr(), c_new.data_ptr(), products.data_ptr(),
                             torch.get_num_threads())  # fmt: skip
        if refused:
            raise SamplingError(f"a character id outside the vocabulary (0-{self.vocab - 1})")
        new_state = (h_new, c_new)
        self._ahead = (new_state, products)
        rows = self.rows[-1]
        logits = products.as_strided((batch, self.vocab), (rows, 1), batch * self._last)
        return logits, new_state
