"""`charrnn sample --interactive`: a prompt on the terminal. Each line typed is a prime and its
continuation streams out; lines that start with / change the settings (/help lists them).

Ctrl-C during a continuation stops it (back to the prompt), Ctrl-C at the prompt clears the
line, Ctrl-D (or /quit) leaves with exit status 0. The settings are SampleConfig's, each
checked by its declaration; a bad value is one red line and the session goes on.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.text import Text

from charrnn import config, use_config
from charrnn.cli.common import err, note_stops_never_written
from charrnn.errors import CharRNNError, ConfigError
from charrnn.generation import check_fits
from charrnn.stops import StopStrings

if TYPE_CHECKING:
    from charrnn.priming import Context
    from charrnn.sample import TextGenerator

PROMPT = "> "
# Every sampling setting but num_samples (one continuation at a time) is a command.
SETTINGS = [name for name in config.fields_of(use_config.SampleConfig) if name != "num_samples"]
OFF, ON = ("off", "no", "false", "none"), ("on", "yes", "true")
ESCAPES = {"\\n": "\n", "\\t": "\t", "\\\\": "\\"}


def help_text(settings: dict[str, Any], keep: bool) -> str:
    lines = ["Type a prime and press Enter: its continuation streams out. Commands:"]
    for name in SETTINGS:
        _, _, declared = config.declaration(name, use_config.SampleConfig)
        bounds = declared.bounds_text()
        lines.append(
            f"  /{name.replace('_', '-'):<12} {_shown(settings[name]):<10} "
            f"{declared.help}{f' ({bounds})' if bounds else ''}"
        )
    lines += [
        f"  /{'keep':<12} {_shown(keep):<10} on: each prime carries on from the end of the last "
        "continuation (an empty line: go on writing)",
        "  /help, /quit; a prime that starts with / is typed //...",
        "  /seed off: a new seed each time; /stop TEXT (\\n is a newline) or /stop off",
        "  Ctrl-C stops a continuation, Ctrl-D leaves.",
    ]
    return "\n".join(lines)


def _shown(value: Any) -> str:
    if value is None:
        return "off"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return " ".join(repr(one) for one in value) or "off"
    return str(value)


def parse(name: str, text: str, model: Any = None) -> Any:
    """The value of setting `name` from what was typed after its command, checked (a length
    against the memory that `model`'s samples would take, as each prime checks it)."""
    kind, default, declared = config.declaration(name, use_config.SampleConfig)
    word = text.strip().lower()
    if declared.item is not None:  # /stop TEXT: one stop string, escapes read; /stop off
        if word in OFF:
            return ()
        for escaped, char in ESCAPES.items():
            text = text.replace(escaped, char)
        value: Any = [text]
    elif default is None and word in OFF:
        value = None
    elif kind is bool:
        if word not in OFF + ON:
            raise ConfigError(f"{name} must be on or off, got {text.strip()!r}")
        value = word in ON
    else:
        try:
            value = kind(text.strip())
        except ValueError:
            raise ConfigError(f"{name} must be {kind.__name__}, got {text.strip()!r}") from None
    value = config.check_value(name, value, use_config.SampleConfig)
    # What `charrnn sample` checks beyond the declared bounds, checked here as it is typed: a
    # value taken now would only be refused again at every prime.
    if name == "stop":
        try:
            StopStrings(value)
        except ConfigError as error:
            raise ConfigError(f"{error}; type /stop TEXT (\\n is a newline) or /stop off") from None
    elif name == "length":
        check_fits(1, value, model)
    return value


@dataclass
class Session:
    """The settings of an interactive session and, with /keep on, where the text stands."""

    generator: TextGenerator
    settings: dict[str, Any]
    skip_unknown: bool = False
    keep: bool = False
    context: Context | None = field(default=None, repr=False)

    def command(self, line: str) -> bool:
        """Carry out a /command; False when it asks to leave."""
        name, _, value = line[1:].partition(" ")
        name = name.strip().lower().replace("-", "_")
        if name in ("quit", "exit", "q"):
            return False
        if name in ("help", "h", "?", ""):
            err.print(escape(help_text(self.settings, self.keep)))
        elif name == "keep":
            word = value.strip().lower()
            if word not in OFF + ON:
                raise ConfigError(f"keep must be on or off, got {value.strip()!r}")
            self.keep = word in ON
            self.context = None  # on: the next prime starts afresh, then carries on
            err.print(f"[dim]keep = {word}[/dim]")
        elif name in SETTINGS:
            if not value.strip() and name != "stop":
                raise ConfigError(f"/{name.replace('_', '-')} needs a value (/help)")
            try:
                self.settings[name] = parse(name, value, self.generator.model)
            except ConfigError as error:  # the refusal says that nothing changed
                shown = _shown(self.settings[name])
                raise ConfigError(f"{error}; {name.replace('_', '-')} stays {shown}") from None
            err.print(escape(f"{name.replace('_', '-')} = {_shown(self.settings[name])}"),
                      style="dim")  # fmt: skip
            if name == "stop":
                note_stops_never_written(self.settings[name], self.generator.vocab, "/stop")
            if self.settings["greedy"] and name in use_config.IGNORED_BY_GREEDY:
                err.print(f"note: /greedy is on, so /{name.replace('_', '-')} does nothing until "
                          "/greedy off", style="yellow", markup=False)  # fmt: skip
        else:
            raise ConfigError(f"unknown command /{name.replace('_', '-')}; /help lists them")
        return True

    def write(self, prime: str) -> str:
        """The continuation of `prime`, streamed to stdout (and returned); Ctrl-C stops it."""
        generator, chosen = self.generator, dict(self.settings)
        carried = self.context if self.keep else None
        priming = generator.read_prime(prime, skip_unknown=self.skip_unknown, context=carried)
        generation = generator.generation(priming.read(), chosen.pop("length"), **chosen,
                                          score=False)  # fmt: skip
        last, ended = "\n", None
        try:
            for pieces in generation:
                sys.stdout.write(pieces[0])
                sys.stdout.flush()
                last = pieces[0] or last
            ended = "stop string" if generation.stopped[0] else None
        except KeyboardInterrupt:
            ended = "stopped"
        if self.keep:
            self.context = generation.carry()
        if last != "\n":
            sys.stdout.write("\n")
            sys.stdout.flush()
        err.print(f"[dim](seed {generation.seed}{', ' + ended if ended else ''})[/dim]")
        return generation.samples()[0].text


def enable_line_editing() -> None:
    """Arrow keys and history at the prompt, where Python has readline."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401 (importing it is what makes input() use it)


def session(generator: TextGenerator, chosen: use_config.SampleConfig, skip_unknown: bool) -> None:
    """The prompt loop, until Ctrl-D or /quit."""
    enable_line_editing()
    settings = {name: value for name, value in config.to_dict(chosen).items() if name in SETTINGS}
    state = Session(generator, settings, skip_unknown)
    err.print("[dim]Type a prime and press Enter; /help for commands, Ctrl-D to leave.[/dim]")
    while True:
        try:
            line = input(PROMPT)
        except EOFError:  # Ctrl-D
            sys.stdout.write("\n")
            return
        except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh line
            sys.stdout.write("\n")
            continue
        try:
            if line.startswith("/") and not line.startswith("//"):
                if not state.command(line):
                    return
            else:
                state.write(line[1:] if line.startswith("//") else line)
        except CharRNNError as error:
            err.print(Text(f"error: {error}", style="bold red"))
        except KeyboardInterrupt:  # while a prime was being read
            sys.stdout.write("\n")
