"""What every command shares: the two consoles, small drawing helpers, and the one place that
turns an error into an exit code.

stdout carries only results (sampled text, JSON, the batches a learner asked to see); tables,
progress and diagnostics go to stderr. Exit codes: 0 ok, 1 a domain error (one red line on
stderr), 2 a usage error (typer's), 130 interrupted, 143 terminated.
"""

from __future__ import annotations

import errno
import functools
import json
import os
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from typer.exceptions import TyperException

from charrnn.errors import CharRNNError


class _Console(Console):
    """rich's Console, except that a reader who closed the pipe (`| head`) is left to `guarded`:
    rich's own `on_broken_pipe` raises SystemExit(1), which would pass the guard silently and
    make `charrnn inspect RUN | head -2` fail where a streamed `sample` ends with 0."""

    def on_broken_pipe(self) -> None:
        self.quiet = True  # nothing more to write to that reader
        raise BrokenPipeError(errno.EPIPE, "the reader closed the pipe")


out = _Console(highlight=False, soft_wrap=True)
err = _Console(stderr=True, highlight=False, soft_wrap=True)


def quiet_closed_pipes_outside_commands() -> None:
    """typer draws --help on rich Consoles of its own, before any command and so outside
    `guarded`, and it maps a BrokenPipeError there to exit 1: make every other Console of this
    process end a closed pipe (`charrnn train --help | head -1`) with 0 too. For the process
    that runs the CLI only (`charrnn.cli.run`), not for a program that imports charrnn."""

    def reader_gone(console: Console) -> None:
        console.quiet = True
        silence_stdout()
        raise SystemExit(0)

    Console.on_broken_pipe = reader_gone  # type: ignore[method-assign]


EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 130, 143

# Whitespace and control characters drawn so a learner can see them.
VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}
VISIBLE_LEGEND = "whitespace shown as ␣ (space), ↵ (newline), ⇥ (tab)"


# Arguments and options that several commands take in the same words.
RUN_TO_USE = Annotated[
    str | None,
    typer.Argument(help="A .pt file or a run directory.", show_default="the newest run"),
]
INT8 = Annotated[
    bool | None,
    typer.Option(
        "--int8/--exact",
        help="int8 (for LSTMs on a CPU: a compiled step; for the default model at batch 1, "
        "~5.3x exact's speed on 2 threads, 3.7x on 1) or exact fp32.",
        show_default="int8 on a CPU for models of 256+ units",
    ),
]


MAX_MESSAGE = 1000  # characters of an error line; a path of 900 kB is not worth reading whole


def fail(message: str) -> typer.Exit:
    err.print(Text(f"error: {one_line(message)}", style="bold red"))
    return typer.Exit(code=EXIT_ERROR)


def one_line(message: str) -> str:
    """`message` on one line of at most MAX_MESSAGE characters: a newline (or any control
    character) in a path or a value is shown escaped, never printed."""
    if not message.isprintable():
        message = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in message)
    if len(message) > MAX_MESSAGE:
        half = MAX_MESSAGE // 2
        message = f"{message[:half]} ... {message[-half:]}"
    return message


class Terminated(Exception):
    """SIGTERM arrived (raised by the handler `run` installs; training handles it itself)."""


# `charrnn --debug COMMAND` or CHARRNN_DEBUG=1: tracebacks for bug reports (set by the app's
# callback on every invocation).
debugging = {"on": False}


def guarded(command):
    """Every error that escapes a command becomes one red line and exit 1, in this one place.

    Domain errors (CharRNNError) say what is wrong and what to do; anything else is a bug or an
    operating-system refusal, named by its type and message, with a pointer to --debug.
    Ctrl-C exits 130 and SIGTERM 143; a reader that closed the pipe (`| head`) ends it quietly.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, TyperException):
            raise  # the CLI's own exits and usage errors (2)
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(code=EXIT_INTERRUPTED) from None
        except Terminated:
            err.print("terminated")
            raise typer.Exit(code=EXIT_TERMINATED) from None
        except BrokenPipeError:
            silence_stdout()
            raise typer.Exit(code=0) from None
        except Exception as error:
            if debugging["on"]:
                raise
            raise fail(_one_line(error)) from None

    return wrapper


def _one_line(error: Exception) -> str:
    if isinstance(error, CharRNNError):
        return str(error)
    from charrnn.distributed import lost_contact  # a multi-process run lost a process

    if isinstance(error, RuntimeError) and (lost := lost_contact(error)) is not None:
        return str(lost)
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else " (writing the output?)"
        return f"{error.strerror}{where}"
    text = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    return (
        f"unexpected {type(error).__name__}{': ' + text if text else ''} "
        "(run `charrnn --debug ...` for the traceback and report it)"
    )


def silence_stdout() -> None:
    """The reader of stdout went away: point stdout at /dev/null so the interpreter's final
    flush does not fail a second time (Python's documented idiom for SIGPIPE)."""
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def visible(char: str) -> str:
    return VISIBLE.get(char, char if char.isprintable() else f"\\u{ord(char):04x}")


def print_json(payload: Any) -> None:
    out.out(json.dumps(payload, ensure_ascii=False), highlight=False)


def loss_text(nats: float | None) -> str:
    from charrnn.scoring import bits_per_char

    if nats is None:
        return "not evaluated yet"
    return f"{nats:.4f} nats/char ({bits_per_char(nats):.3f} bpc)"


def facts_table():
    """A two-column grid of facts: a cyan name, then its value."""
    from rich.table import Table

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="cyan")
    facts.add_column()
    return facts


def note_stops_never_written(stops: tuple[str, ...], vocab, command: str = "--stop") -> None:
    """A stop string with a character the model never writes can never end a sample: say so
    (a typo, or a text of another script), rather than write to the full length in silence."""
    from charrnn.vocab import describe_char

    for stop in stops:
        missing = [char for char in dict.fromkeys(stop) if char not in vocab]
        if missing:
            names = ", ".join(describe_char(char) for char in missing[:5])
            err.print(f"note: {command} {stop!r} can never match: the model never writes {names}",
                      style="yellow", markup=False)  # fmt: skip
