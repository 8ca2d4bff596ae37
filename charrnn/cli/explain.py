"""`charrnn explain`: a text coloured by what the model saw in it (its surprise at each
character, or one unit's gate), and the units that follow a pattern of the text."""

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from charrnn.cli.common import err, out, print_json, visible
from charrnn.cli.evaluate import CHECKPOINT
from charrnn.errors import ConfigError

# One value, a note and a coloured character each: 20,000 is pages of text, a few MB of HTML.
MAX_CHARS, MAX_CHARS_LIMIT = 20_000, 10_000_000
TOP_UNITS = 5  # per pattern: a few to try with --show gate, not a ranking of every unit
SHOWS = ("surprise", "gate", "gates")


# Typer reads a command's options from its signature, so much of this function's length is
# its option list; its body checks the options before any work, then reads and shows.
def explain(
    checkpoint: CHECKPOINT,
    text: Annotated[str | None, typer.Option("--text", help="The text to read.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="Read the text from this file.")
    ] = None,
    max_chars: Annotated[
        int,
        typer.Option(
            "--max-chars",
            help="Read and show at most this many characters of the text (the first ones).",
            min=1,
            max=MAX_CHARS_LIMIT,
        ),
    ] = MAX_CHARS,
    # --show, --layer, --unit and --gate default to None, so that one typed where it would do
    # nothing can be told from one left out, and refused (_refuse_ignored).
    show: Annotated[
        str | None,
        typer.Option(
            help="surprise (the loss on each character), gate (one unit's gate) or gates "
            "(every gate of one unit, a row a character: the lesson's step).",
            show_default="surprise",
        ),
    ] = None,
    layer: Annotated[
        int | None,
        typer.Option(
            help="Layer of the unit for --show gate(s) (0 = the first).", show_default="0"
        ),
    ] = None,
    unit: Annotated[
        int | None,
        typer.Option(
            help="Unit within the layer for --show gate(s) (0 = the first).", show_default="0"
        ),
    ] = None,
    gate: Annotated[
        str | None,
        typer.Option(
            help="For --show gate, --find and --top-units. An LSTM's, the lesson's names: learn "
            "(its ignore factor i; also ignore), combine (its candidate N), learnt (its output "
            "N*i), forget (f), kept (its output c_{t-1}*f), remember (its output, the cell "
            "state), use, cell (state) or hidden (state); a gate's name shows its factor, "
            "learnt/kept/remember/hidden its output. A GRU's: reset (the lesson's combine), "
            "update, candidate or hidden. A plain RNN's: hidden.",
            show_default="cell for an LSTM, else hidden",
        ),
    ] = None,
    find: Annotated[
        str | None,
        typer.Option(
            help="List the units that follow quotes, newline or line-position; show the best."
        ),
    ] = None,
    top_units: Annotated[
        int | None,
        typer.Option(
            help="Units to list per pattern (every pattern unless --find).",
            show_default=str(TOP_UNITS),
            min=1,  # None (not given) is the default; 0 would list nothing, so it is refused
        ),
    ] = None,
    skip_unknown: Annotated[
        bool, typer.Option("--skip-unknown", help="Show characters the model never saw, unscored.")
    ] = False,
    html_file: Annotated[
        Path | None,
        typer.Option("--html", help="Also write the view as a self-contained HTML page."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the --html file if it exists.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The values as JSON.")] = False,
) -> None:
    """Colour a text by what the model saw: its surprise at each character, or one unit's gate."""
    from charrnn import checkpoint as ckpt
    from charrnn import explain as explaining
    from charrnn import files, rundir
    from charrnn.corpus import read_start
    from charrnn.scoring import read

    if (text is None) == (file is None):
        raise ConfigError("give the text to read with exactly one of --text or --file")
    if show is not None and show not in SHOWS:
        raise ConfigError(f"--show must be surprise, gate or gates; got {show!r}")
    if gate is not None:
        explaining.check_gate_name(gate)  # a bad name is refused whatever else was asked
    _refuse_ignored(show, layer, unit, gate, find, top_units)
    if show == "gates" and html_file is not None:
        raise ConfigError("--html draws one coloured view, and --show gates is a table of "
                          "every gate; use --show gate --gate NAME with --html")  # fmt: skip
    if force and html_file is None:
        raise ConfigError("--force replaces the --html file, so without --html it would do "
                          "nothing; add --html or leave out --force")  # fmt: skip
    finding = find is not None or top_units is not None
    path = rundir.find_checkpoint(checkpoint, rundir.FOR_USING)
    if html_file is not None:  # before the work
        inputs = {"the checkpoint": path} | ({} if file is None else {"the --file text": file})
        files.refuse_replacing_inputs(html_file, "--html", inputs)
        files.check_outputs([html_file], force, create_folder=False)
    model, vocab = ckpt.restore_model(ckpt.load(path))
    if finding or show == "gate":  # before reading the text
        gate = explaining.default_gate(model) if gate is None else gate
        explaining.gate_name(gate, explaining.gate_family(model))  # an LSTM's name for a GRU?
    if not finding and show in ("gate", "gates"):
        layer, unit = (0 if layer is None else layer), (0 if unit is None else unit)
        explaining.check_unit(model, layer, unit)
    if text is not None:
        shown, total = text[:max_chars], len(text)
    else:
        # The text to colour is not a corpus: its errors say --file, and a path is only a path
        # (a file called "shakespeare" is that file, not the bundled corpus). Only the
        # characters shown are decoded, so a large file costs no more memory than they do.
        start = read_start(file, max_chars, "the text given with --file")
        shown, total = start.text, start.total_chars
    if len(shown) < total:
        err.print(f"showing the first {len(shown):,} of {total:,} characters (--max-chars)")
    reading = read(vocab, shown, skip_unknown)

    def unit_view(layer: int, unit: int):
        if show == "gates":  # the unit's whole step
            return explaining.unit_steps(model, reading, layer, unit)
        return explaining.unit_trace(model, reading, gate, layer, unit)

    matches = None
    if finding:
        patterns = (find,) if find is not None else explaining.PATTERNS
        matches = explaining.top_units(
            model, reading, patterns, gate, TOP_UNITS if top_units is None else top_units
        )
        best = explaining.best_match(matches)
        view = unit_view(best.layer, best.unit)
    elif show in ("gate", "gates"):
        view = unit_view(layer, unit)
    else:
        view = explaining.surprise(model, vocab, reading)

    if html_file is not None:
        files.write_texts({html_file: explaining.to_html(view, f"read by {path}")})
        err.print(Text(f"wrote {html_file}"))
    if as_json:
        payload = view.to_json()
        if matches is not None:
            payload["units"] = [m.to_json() for found in matches.values() for m in found]
        print_json(payload)
        return
    if matches is not None:
        out.print(_units_table(matches, gate))
    if isinstance(view, explaining.UnitSteps):
        out.print(_steps_table(view))
        unread = " (blank: a character the model never saw, not read)" if any(
            value is None for value in next(iter(view.columns.values()))) else ""  # fmt: skip
        err.print(f"{view.title}: {view.equations}{unread}")
        return
    out.print(_coloured(view))
    _legend(view)


def _refuse_ignored(show, layer, unit, gate, find, top_units) -> None:
    """Options typed where they would do nothing: one of them is a mistake, so say which.

    --find and --top-units pick their units (and show the best one's gate), so --layer, --unit
    and --show surprise would be overridden; without them the view is the surprise unless
    --show gate, and then --layer, --unit and --gate have nothing to choose; --show gates shows
    every gate, so --gate has nothing to choose there either.
    """
    typed = [flag for flag, value in (("--layer", layer), ("--unit", unit)) if value is not None]
    if find is not None or top_units is not None:
        picker = "--find" if find is not None else "--top-units"
        if show == "surprise":
            typed.append("--show surprise")
        if typed:
            named = " and ".join(typed)
            raise ConfigError(
                f"{picker} picks its own units and shows the best one's gate, so {named} would "
                f"do nothing; leave out {picker} or {named}"
            )
    elif show == "gates":
        if gate is not None:
            raise ConfigError(
                "--show gates shows every gate of the unit, so --gate would do nothing; leave "
                "out --gate, or use --show gate --gate NAME"
            )
    elif show != "gate":
        typed += ["--gate"] if gate is not None else []
        if typed:
            named = " and ".join(typed)
            # --gate alone also serves --find (which gate's activity it ranks).
            wanted = "--show gate or --find" if typed == ["--gate"] else "--show gate"
            raise ConfigError(
                f"without {wanted} the view is the surprise at each character, so {named} "
                f"would do nothing; add {wanted} or leave out {named}"
            )


def _steps_table(steps) -> Table:
    """A row a character read, a column a gate, each value on its gate's colours."""
    table = Table(box=None, pad_edge=False)
    table.add_column("char", justify="left")
    for name in steps.columns:
        table.add_column(name, justify="right")
    for row, char in enumerate(steps.chars):
        values = [steps.columns[name][row] for name in steps.columns]
        cells = [Text("") if value is None else Text(f"{value:+.3f}",
                 style=_background(steps.scales[name], value))
                 for name, value in zip(steps.columns, values, strict=True)]  # fmt: skip
        shown = "\u2423" if char == " " else visible(char) if not char.isprintable() else char
        table.add_row(shown, *cells)  # a space as a visible box: a blank cell says nothing
    return table


def _units_table(matches, gate: str) -> Table:
    table = Table(title=f"units whose {gate} follows a pattern of the text", box=None)
    for column in ("pattern", "layer", "unit", "correlation"):
        table.add_column(column, justify="left" if column == "pattern" else "right")
    for found in matches.values():
        for m in found:
            table.add_row(m.pattern, str(m.layer), str(m.unit), f"{m.correlation:+.3f}")
    return table


def _coloured(view) -> Text:
    """The text with each character's value as its background colour; whitespace made visible."""
    coloured = Text()
    for char, value in zip(view.text, view.values, strict=True):
        shown = visible(char) + ("\n" if char == "\n" else "") if not char.isprintable() else char
        coloured.append(shown, style="" if value is None else _background(view.scale, value))
    return coloured


def _background(scale, value: float) -> str:
    return "black on rgb({},{},{})".format(*scale.rgb(value))


def _legend(view) -> None:
    scale = view.scale
    low = Text(f" {scale.low:.3g} ", style=_background(scale, scale.low))
    high = Text(f" {scale.high:.3g} ", style=_background(scale, scale.high))
    scored = [v for v in view.values if v is not None]
    mean = (
        f"; mean {sum(scored) / len(scored):.3f} over {len(scored):,} characters" if scored else ""
    )
    missing = f" (uncoloured: {view.missing})" if len(scored) < len(view.values) else ""
    err.print(Text.assemble(f"{view.title}: ", low, " to ", high, f"{missing}{mean}"))
