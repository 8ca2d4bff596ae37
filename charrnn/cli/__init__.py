"""The command line: parse, call the library, show the result. No model or training logic here.

One module per command (or pair of related commands); `common` holds the consoles and the one
place that turns errors into exit codes, `settings` derives options from charrnn.config.

    charrnn/cli/batches.py    inspect-batches
    charrnn/cli/train.py      train
    charrnn/cli/sample.py     sample (charrnn/cli/interactive.py: its --interactive prompt)
    charrnn/cli/runs.py       inspect, runs
    charrnn/cli/evaluate.py   eval
    charrnn/cli/explain.py    explain
    charrnn/cli/serve.py      serve
    charrnn/cli/export.py     export
    charrnn/cli/cache.py      cache list, cache clear
"""

import os
import signal
import sys
from typing import Annotated

import typer

from charrnn import __version__
from charrnn.allocator import keep_freed_memory
from charrnn.cli import batches, cache, evaluate, explain, export, runs, sample, serve, train
from charrnn.cli.common import (
    Terminated,
    debugging,
    guarded,
    out,
    quiet_closed_pipes_outside_commands,
    silence_stdout,
)

app = typer.Typer(
    name="charrnn",
    help="Character-level recurrent networks: train on any UTF-8 text, then sample from it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for name, command in (
    ("inspect-batches", batches.inspect_batches),
    ("train", train.train),
    ("sample", sample.sample),
    ("inspect", runs.inspect_run),
    ("runs", runs.runs),
    ("eval", evaluate.eval_command),
    ("explain", explain.explain),
    ("serve", serve.serve),
    ("export", export.export),
):
    app.command(name)(guarded(command))
app.add_typer(cache.app, name="cache")


def version_callback(value: bool) -> None:
    if value:
        try:
            out.print(f"charrnn {__version__}")
        except BrokenPipeError:  # outside `guarded`: typer would make a closed pipe exit 1
            silence_stdout()
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=version_callback, is_eager=True, help="Show version."),
    ] = None,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", help="Show the traceback of an error (for bug reports); or CHARRNN_DEBUG=1."
        ),
    ] = False,
) -> None:
    """charrnn: learn to write like any text, one character at a time."""
    debugging["on"] = debug or os.environ.get("CHARRNN_DEBUG", "") not in ("", "0")


def _terminate(signum, frame) -> None:
    raise Terminated


def run() -> None:
    """The `charrnn` command (and ``python -m charrnn``): the app, with a clean multi-process exit.

    A process of a multi-process run (a torchrun worker) leaves without the interpreter's
    teardown. After an early exit (the ranks refused to train together, within a second of
    connecting), gloo's threads sometimes abort that teardown ("terminate called without an
    active exception", SIGABRT), which would replace the exit status the rank has reported.
    """
    signal.signal(signal.SIGTERM, _terminate)  # train installs its own: it saves first
    quiet_closed_pipes_outside_commands()
    keep_freed_memory()  # a training step ~1.5x faster where malloc is glibc's: charrnn.allocator
    try:
        app(prog_name="charrnn")
    except SystemExit as done:
        if os.environ.get("WORLD_SIZE", "1").strip() in ("1", ""):  # torchrun sets it >= 2
            raise  # (one that is not a number was refused in one line: the exit stands)
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
