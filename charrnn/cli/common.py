"""What every command shares: the two consoles, small drawing helpers, and the one place that
turns an error into an exit code.

stdout carries only results (sampled text, JSON, the batches a learner asked to see); tables,
progress and diagnostics go to stderr. Exit codes: 0 ok, 1 a domain error (one red line on
stderr), 2 a usage error (typer's), 130 interrupted, 143 terminated.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from charrnn.errors import CharRNNError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 130, 143

# Whitespace and control characters drawn so a learner can see them.
VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}
VISIBLE_LEGEND = "whitespace shown as ␣ (space), ↵ (newline), ⇥ (tab)"


def fail(message: str) -> typer.Exit:
    err.print(Text(f"error: {message}", style="bold red"))
    return typer.Exit(code=EXIT_ERROR)


def guarded(command):
    """Domain errors become one red line and exit 1, in this one place (no tracebacks)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CharRNNError as error:
            raise fail(str(error)) from None
        except RuntimeError as error:
            from charrnn.distributed import lost_contact  # a multi-process run lost a process

            if (lost := lost_contact(error)) is None:
                raise
            raise fail(str(lost)) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(code=EXIT_INTERRUPTED) from None

    return wrapper


def visible(char: str) -> str:
    return VISIBLE.get(char, char if char.isprintable() else f"\\u{ord(char):04x}")


def print_json(payload: Any) -> None:
    out.out(json.dumps(payload, ensure_ascii=False), highlight=False)


def loss_text(nats: float | None) -> str:
    from charrnn.train import bits_per_char

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
