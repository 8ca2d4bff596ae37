"""`charrnn inspect-batches`: what the cyclic loader feeds the model, drawn step by step."""

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from charrnn import config
from charrnn.cli import settings
from charrnn.cli.common import VISIBLE_LEGEND, err, out, print_json, visible
from charrnn.errors import ConfigError

MAX_DEMO = 10**6  # the lesson's integers: a million of them is already more than anyone reads
VAL_FRACTION = config.declaration("val_fraction")[1]  # the split training makes


def inspect_batches(
    corpus: settings.option("corpus") = None,
    include: settings.option("include") = None,
    exclude: settings.option("exclude") = None,
    max_vocab: settings.option("max_vocab") = None,
    demo: Annotated[
        int | None,
        typer.Option(
            help="Use the integers 1..N as the data, as in the lesson.", min=1, max=MAX_DEMO
        ),
    ] = None,
    batch_size: settings.option("batch_size") = 2,
    seq_length: settings.option("seq_length") = 3,
    steps: Annotated[int, typer.Option(help="How many steps to show.", min=1)] = 2,
    split: Annotated[str | None, typer.Option(help="train or val.", show_default="train")] = None,
    val_fraction: settings.option("val_fraction", shown_default=str(VAL_FRACTION)) = None,
    offset: Annotated[int, typer.Option(help="Rotate the layout along the cycle.", min=0)] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the batches as JSON.")] = False,
) -> None:
    """Show what the cyclic loader feeds the model: inputs beside targets, step by step."""
    import torch

    from charrnn.batching import CyclicBatches, check_shown_fits
    from charrnn.corpus import load_data

    given = settings.check(batch_size=batch_size, seq_length=seq_length,
                           val_fraction=val_fraction, max_vocab=max_vocab)  # fmt: skip
    # The corpus options default to None, so one that is not None was typed; --demo replaces
    # the corpus (and its split), so it would be silently ignored.
    typed = [flag for flag, value in (("--corpus", corpus), ("--include", include),
             ("--exclude", exclude), ("--max-vocab", max_vocab), ("--split", split),
             ("--val-fraction", val_fraction)) if value is not None]  # fmt: skip
    if demo is not None and typed:
        named = " or ".join(typed)
        raise ConfigError(
            f"--demo cannot be combined with {named}: --demo N shows the integers 1..N in place "
            f"of a corpus, so {named} would be ignored; drop --demo to see the corpus, or drop "
            f"{named}"
        )
    corpus = tuple(corpus or ("shakespeare",))
    split = "train" if split is None else split
    val_fraction = VAL_FRACTION if val_fraction is None else val_fraction
    if split not in ("train", "val"):
        raise ConfigError(f"split must be train or val, got {split!r}")
    if demo is not None:
        data, show = torch.arange(1, demo + 1), list  # rows of integers
        source = f"the integers 1..{demo}"
    else:
        # The token cache's memory map: only the rows shown are read from it.
        globs = {"include": tuple(include or ()), "exclude": tuple(exclude or ())}
        loaded = load_data(corpus, val_fraction, max_vocab=given.get("max_vocab", 0), **globs)
        data, show = (loaded.train if split == "train" else loaded.val), loaded.vocab.decode
        source = f"{', '.join(corpus)} ({split} split)"
    batches = CyclicBatches(data, batch_size, seq_length, offset)
    check_shown_fits(batch_size, seq_length, min(steps, len(batches)))
    shown = [(k + 1, *batches[k]) for k in range(min(steps, len(batches)))]

    if as_json:
        print_json({
            "batch_size": batch_size,
            "seq_length": seq_length,
            "n_batches": len(batches),
            "steps": [
                {"step": step, "inputs": [show(row.tolist()) for row in inputs],
                 "targets": [show(row.tolist()) for row in targets]}
                for step, inputs, targets in shown
            ],
        })  # fmt: skip
        return
    if steps > len(batches):
        err.print(f"note: an epoch has only {_steps(len(batches))}; showing them all")
    out.print(_layout(batches, source, len(data), show if demo is None else None))
    # One width for every number, so inputs and targets line up column by column.
    width = len(str(len(data))) if demo is not None else 1
    for step, inputs, targets in shown:
        table = Table(title=f"step {step} of {len(batches)}", title_justify="left")
        table.add_column("row", justify="right")
        table.add_column("inputs")
        table.add_column("targets (inputs shifted by one)")
        for r, (x, y) in enumerate(zip(inputs.tolist(), targets.tolist(), strict=True)):
            xs, ys = (x, y) if demo is not None else (list(show(x)), list(show(y)))
            table.add_row(str(r), _cells(xs, width), _cells(ys, width, new_last=True))
        out.print(table)
    if demo is None:
        out.print(VISIBLE_LEGEND, style="dim")


ROWS_SHOWN, ROW_CHARS_SHOWN = 4, 24  # of the rows line: enough to see the layout


def _steps(count: int) -> str:
    return f"{count:,} step" + ("" if count == 1 else "s")


def _layout(batches, source: str, characters: int, decode) -> Table:
    """The layout's numbers, each with what it means; `decode`: ids -> text (None: integers)."""
    b, s, n = batches.batch_size, batches.seq_length, len(batches)
    summary = Table.grid(padding=(0, 2))
    summary.add_row("data", f"{source}: {characters:,} characters")
    summary.add_row("batch_size", f"{b} contiguous rows")
    summary.add_row("seq_length", f"{s} characters per row per step")
    summary.add_row("n_batches", f"{_steps(n)} per epoch: {characters:,} // (batch_size {b} x "
                                 f"seq_length {s}) = {n:,}")  # fmt: skip
    rows = Text(f"the text (from --offset) is cut into {b} rows of {batches.row_length:,}:")
    for r in range(min(b, ROWS_SHOWN)):
        ids = batches.row(r, ROW_CHARS_SHOWN).tolist()
        shown = " ".join(map(str, ids)) if decode is None else "".join(map(visible, decode(ids)))
        more = " ..." if batches.row_length > ROW_CHARS_SHOWN else ""
        rows.append(f"\nrow {r}: {shown}{more}")
    if b > ROWS_SHOWN:
        rows.append(f"\n... {b - ROWS_SHOWN:,} more rows")
    summary.add_row("rows", rows)
    summary.add_row(
        "used", f"{batches.used:,} characters are inputs once per epoch; {batches.dropped:,} "
        f"dropped at the end (they do not fill a whole step)",
    )  # fmt: skip
    summary.add_row("targets", "the next character of the text; after the last comes the first")
    summary.add_row(
        "state", "row r of step k+1 continues row r of step k, so the model carries each row's "
        "hidden state from one step into the next (detached: gradients stop at the step's edge)",
    )  # fmt: skip
    return summary


def _cells(values: list, width: int, new_last: bool = False) -> Text:
    """A row of integers or characters; `new_last` highlights the target not among the inputs."""
    text = Text()
    for i, value in enumerate(values):
        token = str(value) if isinstance(value, int) else visible(value)
        style = "bold green" if new_last and i == len(values) - 1 else ""
        text.append(token.rjust(width), style=style)
        text.append(" ")
    return text
