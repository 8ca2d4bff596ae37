"""Export a trained model to ONNX: the one-step model, to run without charrnn or torch.

    ids (batch,) int64 ─ embedding/one-hot ─ core, one time step ─ head ─ logits (batch, vocab)
    h   (layers, batch, hidden)  ───────────┘        └──────────────────── h_out (same shape)
    c   (layers, batch, hidden)  (lstm only) ─┘      └──────────────────── c_out (lstm only)

A caller starts from zero states, feeds one character id per row and call, and passes
``h_out`` (and ``c_out``) back in as the next call's ``h`` (and ``c``): this is charrnn's own
sampling loop, and ``examples/sample_onnx.py`` is that loop in numpy and onnxruntime alone.
The batch is a dynamic axis, so one file serves any number of rows. The file's metadata holds
what a runner needs besides the graph: the vocabulary (a JSON list, id = position), both
configs, charrnn's version and a short usage text.

Only torch's own cores export (``lstm``, ``gru``, ``rnn``): ONNX has LSTM, GRU and RNN
operators for them. The gate-level cells (``gate-lstm``, ``peephole-lstm``, ``gate-gru``) are
refused; ``--cell lstm`` trains the same LSTM, exportable.

Library code: raises ExportError (or the checkpoint's errors), never prints.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from charrnn import __version__, files, rundir
from charrnn import checkpoint as ckpt
from charrnn import config as config_module
from charrnn.cell_kinds import EXPORTABLE_CELLS, cell_kind
from charrnn.errors import CheckpointError, ConfigError, ExportError
from charrnn.vocab import UNKNOWN

DEFAULT_NAME = "model.onnx"  # written into the run directory unless --out says otherwise

# Opset 18: the opset torch's dynamo exporter writes natively (its torchlib), so the graph is
# not run through a version converter (torch's default, 20, would be); the TorchScript exporter
# writes it too, and onnxruntime runs it from 1.14 (2023) on.
OPSET = 18

INSTALL = 'pip install -e ".[export]" (in a checkout) or pip install "charrnn[export]"'

# The export checks its own file: onnxruntime must give the torch step's logits over a few
# steps.
# A wrong graph is off by whole units; 1e-3 leaves room for the rounding of other kernels
# on large models (the tests hold tiny ones to 1e-4 over 200 steps).
VERIFY_STEPS, VERIFY_BATCH, VERIFY_TOLERANCE = 16, 2, 1e-3


def state_names(cell: str) -> tuple[str, ...]:
    """The state inputs of an exported cell, in order (outputs add ``_out``)."""
    return ("h", "c")[: cell_kind(cell).state_count]


def input_names(cell: str) -> list[str]:
    return ["ids", *state_names(cell)]


def output_names(cell: str) -> list[str]:
    return ["logits", *(f"{name}_out" for name in state_names(cell))]


class OneStep(nn.Module):
    """One time step of a CharModel, as the exported graph: ``(ids, h[, c]) -> (logits, h[, c])``.

    Built from the model's own submodules and called with torch's nn.LSTM / nn.GRU / nn.RNN
    conventions (``core(x, (h, c))`` for an LSTM, ``core(x, h)`` otherwise), so it does not
    depend on how charrnn carries its state. Dropout is absent: this is the eval-mode model.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.embedding = model.embedding  # None: the lesson's one-hot input
        self.core = model.core
        self.head = model.head
        self.vocab_size = model.vocab_size
        self.is_lstm = cell_kind(model.config.cell).state_count == 2  # (h, c)

    def forward(self, ids: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None):
        if self.embedding is not None:
            x = self.embedding(ids)  # (B, E)
        else:
            x = F.one_hot(ids, self.vocab_size).to(self.head.weight.dtype)  # (B, V)
        x = x.unsqueeze(1)  # (B, 1, E): one time step, batch first
        if self.is_lstm:
            out, (h, c) = self.core(x, (h, c))
            return self.head(out[:, 0]), h, c  # (B, V), (L, B, H), (L, B, H)
        out, h = self.core(x, h)
        return self.head(out[:, 0]), h


@dataclass(frozen=True)
class Exported:
    """What `export_run` wrote, for the CLI to report."""

    path: Path
    checkpoint: Path
    cell: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    exporter: str  # "dynamo" or "torchscript": which of torch's exporters made the file
    max_difference: float  # largest |logit| difference from torch in the export's check
    size: int  # bytes


def check_cell(cell: str) -> None:
    if cell not in EXPORTABLE_CELLS:
        raise ExportError(
            f"cannot export a {cell!r} model: ONNX export supports the "
            f"{', '.join(EXPORTABLE_CELLS)} cells (torch's own cores); "
            "`charrnn train --cell lstm` trains an exportable LSTM"
        )


def require_extra() -> None:
    """The export's optional packages are importable, or an ExportError says what to install."""
    try:
        import onnx  # noqa: F401  (the file format: metadata, serialising)
        import onnxruntime  # noqa: F401  (the export checks its own file with it)
        import onnxscript  # noqa: F401  (torch's dynamo exporter writes its graph with it)
    except ImportError as error:
        missing = error.name or "an ONNX package"
        raise ExportError(
            f"charrnn export needs the export extra ({missing} is not installed): {INSTALL}"
        ) from None


def default_out(checkpoint_path: Path) -> Path:
    """<run dir>/model.onnx, beside the checkpoint it comes from."""
    return Path(checkpoint_path).parent / DEFAULT_NAME


def export_run(run: str | Path, out: str | Path | None = None, force: bool = False) -> Exported:
    """Export a run's model (a run directory: best.pt, else last.pt; or a .pt file) to ONNX.

    Refuses an existing `out` unless `force`, and writes atomically: a failure leaves the old
    file (or none). Raises ExportError, CheckpointError.
    """
    source = rundir.find_checkpoint(run, rundir.FOR_USING)
    target = default_out(source) if out is None else Path(out).expanduser()
    if target.is_dir():
        raise ExportError(f"--out {str(target)!r} is a directory; name the .onnx file to write")
    checkpoint = ckpt.load(source)  # first: what the input is (an .onnx given?) comes first
    # Neither the checkpoint read nor any file of its run is replaced, --force or not.
    run_files = {f"the run's {name}": source.parent / name
                 for name in (*rundir.RUN_FILES, rundir.CONFIG)}  # fmt: skip
    instead = f"another file, such as {str(default_out(source))!r}"
    files.refuse_replacing_inputs(target, "--out", {"the checkpoint": source} | run_files,
                                  ExportError, instead)  # fmt: skip
    if target.exists() and not force:
        raise ExportError(f"{str(target)!r} already exists; pass --force to replace it")
    model_config, vocab = ckpt.describe_model(checkpoint)
    check_cell(model_config.cell)
    require_extra()
    model, _ = ckpt.restore_model(checkpoint)
    proto, exporter, difference = to_onnx(model.eval(), describe(checkpoint))
    data = proto.SerializeToString()
    try:
        files.write_atomically(target, lambda file: file.write(data))
    except OSError as error:
        raise ExportError(f"could not write {str(target)!r}: {error.strerror or error}") from None
    return Exported(
        path=target,
        checkpoint=source,
        cell=model_config.cell,
        num_layers=model_config.num_layers,
        hidden_size=model_config.hidden_size,
        vocab_size=len(vocab),
        exporter=exporter,
        max_difference=difference,
        size=len(data),
    )


def describe(checkpoint: dict[str, Any]) -> dict[str, str]:
    """The metadata written into the file: every value a string (ONNX's metadata_props)."""
    model_config, vocab = ckpt.describe_model(checkpoint)
    layers, hidden = model_config.num_layers, model_config.hidden_size
    states = state_names(model_config.cell)
    shapes = ", ".join(f"{name} [{layers}, batch, {hidden}]" for name in states)
    usage = (
        f"One character step of a charrnn {model_config.cell} model. Inputs: ids [batch] "
        f"(int64, positions in the vocab list), {shapes} (float32; zeros to start). Outputs: "
        f"logits [batch, {len(vocab)}], "
        + ", ".join(f"{name}_out" for name in states)
        + " (the state to pass as "
        + ", ".join(states)
        + " with the next character). Sample the next id from softmax(logits / temperature)."
        + (
            " Read a character outside the vocab as 'unknown' (U+FFFD)."
            if vocab.maps_unknown
            else ""
        )
    )
    try:
        train_config = config_module.from_saved(
            config_module.TrainConfig, checkpoint["train_config"]
        )
    except ConfigError as error:
        raise CheckpointError(f"checkpoint has an invalid train config: {error}") from None
    # A model trained with --max-vocab reads characters it never saw as this one.
    unknown = {"unknown": UNKNOWN} if vocab.maps_unknown else {}
    return {
        **unknown,
        "vocab": json.dumps(vocab.to_list(), ensure_ascii=False),
        "model_config": json.dumps(config_module.to_dict(model_config)),
        "train_config": json.dumps(config_module.to_dict(train_config)),
        "charrnn_version": __version__,
        "usage": usage,
    }


def to_onnx(model: nn.Module, metadata: dict[str, str]) -> tuple[Any, str, float]:
    """(ModelProto with `metadata`, the exporter that made it, its largest logit difference).

    torch's dynamo exporter first: it is the one torch maintains (the TorchScript exporter is
    deprecated), and on torch 2.13 it exports all three cores and onnxruntime matches charrnn
    to ~1e-7. The TorchScript exporter is the fallback for a torch whose dynamo exporter fails
    on a graph (or is too old to have one): both write the same inputs, outputs and opset.
    """
    check_cell(model.config.cell)
    step = OneStep(model).eval()
    failures = []
    for exporter, export in (("dynamo", _dynamo_export), ("torchscript", _torchscript_export)):
        try:
            with _quiet():
                proto = export(step, model.config)
            _add_metadata(proto, metadata)
            difference = verify(proto.SerializeToString(), step, model.config)
        except Exception as error:  # any exporter failure: try the next, report both if all fail
            failures.append(f"{exporter}: {_first_line(error)}")
            continue
        if difference <= VERIFY_TOLERANCE:
            return proto, exporter, difference
        failures.append(f"{exporter}: onnxruntime's logits differ from torch's by {difference:.2g}")
    raise ExportError("could not export the model to ONNX (" + "; ".join(failures) + ")")


def _example(model_config: config_module.ModelConfig) -> tuple[torch.Tensor, ...]:
    # Batch 2, not 1: an exporter may treat a size-1 example dimension as a constant.
    ids = torch.zeros(VERIFY_BATCH, dtype=torch.long)
    shape = (model_config.num_layers, VERIFY_BATCH, model_config.hidden_size)
    return (ids, *(torch.zeros(shape) for _ in state_names(model_config.cell)))


def _dynamo_export(step: OneStep, model_config: config_module.ModelConfig):
    batch = torch.export.Dim("batch")
    dynamic = {"ids": {0: batch}, **{name: {1: batch} for name in state_names(model_config.cell)}}
    program = torch.onnx.export(
        step,
        _example(model_config),
        dynamo=True,
        opset_version=OPSET,
        input_names=input_names(model_config.cell),
        output_names=output_names(model_config.cell),
        dynamic_shapes=dynamic,
        verbose=False,
    )
    return program.model_proto


def _torchscript_export(step: OneStep, model_config: config_module.ModelConfig):
    import onnx

    cell = model_config.cell
    axes = {"ids": {0: "batch"}, "logits": {0: "batch"}}
    axes.update({name: {1: "batch"} for name in input_names(cell)[1:] + output_names(cell)[1:]})
    buffer = io.BytesIO()
    torch.onnx.export(
        step,
        _example(model_config),
        buffer,
        dynamo=False,
        opset_version=OPSET,
        input_names=input_names(cell),
        output_names=output_names(cell),
        dynamic_axes=axes,
    )
    return onnx.load_from_string(buffer.getvalue())


def _add_metadata(proto: Any, metadata: dict[str, str]) -> None:
    kept = [entry for entry in proto.metadata_props if entry.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = metadata["usage"]


@torch.inference_mode()
def verify(data: bytes, step: OneStep, model_config, steps: int = VERIFY_STEPS) -> float:
    """The largest |logit| difference between onnxruntime running `data` and the one-step
    module in torch, over `steps` steps of fixed ids at batch VERIFY_BATCH, each row carrying
    its own state (torch's state conventions, not charrnn's: see OneStep)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    cell = model_config.cell
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, step.vocab_size, (steps, VERIFY_BATCH), generator=generator)
    _, *expected_states = _example(model_config)
    states = [s.numpy() for s in expected_states]
    worst = 0.0
    for t in range(steps):
        expected, *expected_states = step(ids[t], *expected_states)
        logits, *states = session.run(
            output_names(cell), dict(zip(input_names(cell), [ids[t].numpy(), *states], strict=True))
        )
        worst = max(worst, float((torch.from_numpy(logits) - expected).abs().max()))
    return worst


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch's exporters warn and log (about torchvision, deprecations) as they go: the library
    never prints, so that is held back here."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
