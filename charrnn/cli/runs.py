"""`charrnn inspect` (one run, its facts and loss curves) and `charrnn runs` (a folder of runs,
side by side). The facts come from charrnn.insight; this module only draws them."""

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from charrnn.cli.common import (
    VISIBLE_LEGEND,
    err,
    facts_table,
    loss_text,
    one_line,
    out,
    print_json,
    visible,
)
from charrnn.errors import CheckpointError

CURVE_MARKERS = {"train": "•", "val": "◆"}
CURVE_STYLES = {"•": "cyan", "◆": "magenta"}
JSON = Annotated[bool, typer.Option("--json", help="The same facts as JSON.")]


def inspect_run(
    path: Annotated[
        str,
        typer.Argument(help="A .pt file, a run directory (its last.pt) or a folder of runs."),
    ],
    as_json: JSON = False,
) -> None:
    """Describe a checkpoint: corpus, vocabulary, model, training and its loss curves."""
    from charrnn import insight, rundir

    if rundir.holds_runs(Path(path)):
        _show_runs(insight.list_runs(path), Path(path), as_json)
        return
    summary = insight.summarize(path)
    if as_json:
        print_json(summary.to_json())
        return
    train_config = summary.train_config
    parts = ", ".join(f"{name} {count:,}" for name, count in summary.parameters_by_part.items())
    facts = facts_table()
    facts.add_row("checkpoint", Text(f"{summary.path} (written {summary.written:%Y-%m-%d %H:%M})"))
    facts.add_row("corpus", Text(_corpus_text(summary)))
    if summary.init_from:
        facts.add_row("started from", Text(_start_text(summary.init_from)))
    facts.add_row("vocabulary", f"{len(summary.vocab)} characters")
    facts.add_row("", Text("".join(visible(c) for c in summary.vocab)))
    facts.add_row("model", Text(_model_text(summary.model_config)))
    architecture = insight.architecture(summary.model_config, len(summary.vocab))
    facts.add_row("architecture", Text("\n".join(architecture)))
    facts.add_row("parameters", f"{summary.parameters:,} ({parts})")
    facts.add_row(
        "training",
        f"{summary.step:,} steps, {summary.epoch:.2f} epochs, {_duration(summary.seconds)}; "
        f"batches of {train_config.get('batch_size')} x {train_config.get('seq_length')} "
        f"characters, learning rate {train_config.get('learning_rate')}",
    )
    facts.add_row("best val loss", loss_text(summary.best_val_loss))
    facts.add_row("last val loss", loss_text(summary.last_val_loss))
    out.print(facts)
    out.print(VISIBLE_LEGEND, style="dim")
    _curves(summary.metrics, summary.metrics_notes)
    for note in summary.metrics_notes:
        err.print(Text(one_line(f"note: {note}"), style="yellow"))


def _corpus_text(summary) -> str:
    files = summary.corpus_files
    if len(files) <= 1:
        text = summary.corpus
    else:
        total = sum(f.get("size", 0) for f in files if isinstance(f.get("size"), int))
        text = f"{len(files)} files, {total:,} bytes: {files[0].get('path')}, ..."
    fingerprint = summary.corpus_fingerprint
    return text + (f" (sha256 {fingerprint[:16]}...)" if fingerprint else "")


def _start_text(start: dict) -> str:
    """Where a fine-tune started: the checkpoint, its step and loss, the characters added."""
    step, loss = start.get("step"), start.get("best_val_loss")
    added = start.get("added") or []
    parts = [str(start.get("path"))]
    if isinstance(step, int):
        parts.append(f"step {step:,}")
    if isinstance(loss, float):
        parts.append(f"best val loss {loss:.4f}")
    parts.append(f"vocabulary {start.get('vocab_size')} + {len(added)} new character(s)")
    return ", ".join(parts)


def _curves(metrics, notes) -> None:
    from charrnn import insight
    from charrnn.textplot import line_chart

    lines = line_chart(insight.loss_curves(metrics), CURVE_MARKERS)
    if not lines:
        if metrics:  # evaluations, none with a finite loss: promise 14 logs a diverged one so
            why = "its evaluations have no finite loss (the run diverged?)"
        elif notes:  # a file, but no line of it could be read
            why = "none of its metrics.jsonl could be read (the note below says why)"
        else:
            why = "it has no evaluation in a metrics.jsonl next to the checkpoint"
        out.print(f"no loss curves: {why}")
        return
    legend = Text("\nloss (nats/char) against step:  ")
    for name, marker in CURVE_MARKERS.items():
        legend.append(f"{marker} {name}  ", style=CURVE_STYLES[marker])
    out.print(legend)
    for line in lines:
        out.print(Text.assemble(*((char, CURVE_STYLES.get(char, "")) for char in line)))


def runs(
    folder: Annotated[
        Path, typer.Argument(help="A folder of run directories.", show_default=True)
    ] = Path("checkpoints"),
    as_json: JSON = False,
) -> None:
    """List the runs in a folder side by side, newest first."""
    from charrnn import insight

    _show_runs(insight.list_runs(folder), folder, as_json)


def _show_runs(listing, folder: Path, as_json: bool) -> None:
    from charrnn.insight import NOT_SAVED_YET

    for name, reason in listing.unreadable.items():
        err.print(Text(one_line(f"skipped {name}: {reason}"), style="yellow"))
    for name in listing.not_saved_yet:  # not damage: a run that has nothing to show yet
        err.print(Text(one_line(f"skipped {name}: {NOT_SAVED_YET}"), style="yellow"))
    if as_json:
        print_json({"runs": [run.to_json() for run in listing.runs],
                    "unreadable": listing.unreadable,
                    "not_saved_yet": listing.not_saved_yet})  # fmt: skip
    if not listing.runs and not listing.not_saved_yet and listing.unreadable:
        # Nothing to list, nothing still training: a script must not read success.
        raise CheckpointError(
            f"none of the {len(listing.unreadable)} run(s) in {str(folder)!r} could be read (the "
            "skipped lines say why); `charrnn inspect RUN` says more of one, and a run with a "
            "whole last.pt or best.pt is listed"
        )
    if as_json:
        return
    if not listing.runs:
        out.print("no run has a checkpoint yet")
        return
    rows = [(run.run_name, _numbers(run)) for run in listing.runs]
    widths = [max([len(name), *(len(numbers[i]) for _, numbers in rows)])
              for i, name in enumerate(RUN_COLUMNS)]  # fmt: skip
    name_width = max([len("run"), *(len(name) for name, _ in rows)])
    # A default run name (shakespeare-lstm-20261201-103000) is about as wide as the numbers:
    # when both do not fit on one line, each name gets a line of its own above its numbers.
    if name_width + sum(widths) + 2 * len(widths) + 1 <= out.width:
        table = _runs_table([name_width, *widths], ["run", *RUN_COLUMNS])
        for name, numbers in rows:
            table.add_row(Text(name), *numbers)
        out.print(table)
        return
    out.print(_runs_table(widths, RUN_COLUMNS))
    for name, numbers in rows:
        out.print(Text(name, style="bold"))
        row = _runs_table(widths, RUN_COLUMNS, show_header=False)
        row.add_row(*numbers)
        out.print(row)


RUN_COLUMNS = ("cell", "size", "params", "steps", "epochs", "best val", "bpc", "written")


def _runs_table(widths: list[int], headers, show_header: bool = True) -> Table:
    """A table of fixed column widths, so tables printed one after another line up."""
    table = Table(box=None, show_header=show_header, pad_edge=False)
    for index, (header, width) in enumerate(zip(headers, widths, strict=True)):
        left = index == 0 or header == "cell"  # the names; numbers are right-aligned
        table.add_column(header, width=width, no_wrap=True, justify="left" if left else "right")
    return table


def _numbers(run) -> list[str]:
    from charrnn.scoring import bits_per_char

    model, best = run.model_config, run.best_val_loss
    return [
        str(model.get("cell")),
        f"{model.get('num_layers')}x{model.get('hidden_size')}",
        _compact(run.parameters),
        f"{run.step:,}",
        f"{run.epoch:.2f}",
        "-" if best is None else f"{best:.4f}",
        "-" if best is None else f"{bits_per_char(best):.3f}",
        f"{run.written:%Y-%m-%d %H:%M}",
    ]


def _compact(count: int) -> str:
    """9291 -> 9.3k, 3400000 -> 3.4M: parameter counts at a glance."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if count >= size * 0.99995:  # 999,950 shows as 1.0M (it rounds so), not "1000.0k"
            return f"{count / size:.1f}{unit}"
    return str(count)


def _duration(seconds: float) -> str:
    if round(seconds, 1) < 60:  # 59.97 s reads "1 min 00 s", not "60.0 s"
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def _model_text(model_config: dict) -> str:
    embedding = model_config.get("embedding_dim")
    return (
        f"{model_config.get('cell')}, {model_config.get('num_layers')} layer(s) of "
        f"{model_config.get('hidden_size')} units, "
        f"{f'embedding {embedding}' if embedding else 'one-hot input'}, "
        f"dropout {model_config.get('dropout')}"
    )
