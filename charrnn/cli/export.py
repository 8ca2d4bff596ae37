"""`charrnn export`: write a run's model as an ONNX file that runs without charrnn or torch."""

from pathlib import Path
from typing import Annotated

import typer

from charrnn.cli.common import err


def export(
    run: Annotated[
        str | None,
        typer.Argument(
            help="A run directory (its best.pt, else last.pt) or a .pt file "
            "\\[default: the newest run].",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="The .onnx file to write \\[default: model.onnx in the run directory].",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the --out file if it exists.")
    ] = False,
) -> None:
    """Write the model as ONNX (lstm, gru, rnn cells): one step, ids and state in, logits and
    state out, vocabulary in its metadata; examples/sample_onnx.py runs it without charrnn."""
    from charrnn import rundir
    from charrnn.export import export_run, state_names

    run = run if run is not None else str(rundir.latest())
    done = export_run(run, out, force=force)
    states = ", ".join(
        f"{name} [{done.num_layers}, batch, {done.hidden_size}]" for name in state_names(done.cell)
    )
    err.print(
        f"wrote {done.path} ({done.size / 1e6:.2f} MB) from {done.checkpoint}: "
        f"{done.cell} {done.num_layers}x{done.hidden_size}, {done.vocab_size} characters",
        markup=False,
    )
    err.print(
        f"inputs ids [batch], {states}; outputs logits [batch, {done.vocab_size}] and the "
        f"state as *_out (torch's {done.exporter} exporter; onnxruntime matches the model in "
        f"torch to {done.max_difference:.1e})",
        markup=False,
        style="dim",
    )
