"""Command-line options derived from the settings declared in charrnn.config.

A setting's option (its flags, type, help and --help panel) is never written by hand: ``option``
builds it from the declaration, ``declared_options`` gives a command one option per declared
setting, and ``check`` validates what other commands take with the same rules as training.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import typer

from charrnn import config

RUN = "Run"  # the --help panel of options about the run itself (--config, --out, --resume, ...)


def flags(name: str, cls: type | None = None) -> list[str]:
    """The option names of a setting: `--hidden-size`, `--shift-epochs/--no-shift-epochs`."""
    kind, _, declared = config.declaration(name, cls)
    dashed = name.replace("_", "-")
    if kind is bool:
        return [f"--{dashed}/--no-{dashed}"]
    return [f"--{dashed}", *declared.flags]


def option(
    name: str, shown_default: str | bool = True, panel: str | None = None, cls: type | None = None
) -> Any:
    """``Annotated[type | None, typer.Option(...)]`` for the declared setting `name`.

    A command gives the default (`= value` in its signature); None lets it tell "not typed"
    from a value, so a config file or a saved run can fill it in. `shown_default` is what
    --help says the default is (True: the command's default value). `cls` is where the setting
    is declared when it is not a model or training setting (charrnn.use_config.SampleConfig).
    """
    kind, _, declared = config.declaration(name, cls)
    bounds = declared.bounds_text()
    help_text = declared.help + (f" ({bounds})" if bounds else "")
    metavar = None  # typer's own (`<int>`)
    if declared.item is not None:  # repeatable: `--stop A --stop B` gives a list
        kind, help_text = list[declared.item], help_text + "; repeat the option for more"
        metavar = f"<{declared.item.__name__}>"
    return Annotated[
        kind | None,
        typer.Option(
            *flags(name, cls),
            help=help_text,
            rich_help_panel=panel or declared.panel,
            show_default=shown_default,
            metavar=metavar,
        ),
    ]


def _shown(value: Any) -> str | bool:
    if value is None or value == ():
        return False
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ", ".join(value) or "none"
    return str(value)


def declared_options(names: list[str], cls: type | None = None):
    """Give a command one keyword option per setting in `names` (declared in `cls`, or a model
    or training setting), collected in its ``**settings``.

    Typer reads a command's options from its signature; the settings' part of the signature is
    built here from the declarations, so adding a setting to charrnn.config adds its option.
    """

    def decorate(command):
        signature = inspect.signature(command)
        fixed = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        generated = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=option(name, _shown(config.declaration(name, cls)[1]), cls=cls),
            )
            for name in names
        ]
        command.__signature__ = signature.replace(parameters=fixed + generated)
        return command

    return decorate


def typed(values: dict[str, Any]) -> dict[str, Any]:
    """Only the settings the user typed (Typer passes None, or no items, for the others);
    a repeated option's values become a tuple, as the setting holds them."""
    return {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in values.items()
        if value is not None and value != [] and value != ()
    }


def check(**values: Any) -> dict[str, Any]:
    """The given (non-None) model or training settings, checked against their declarations."""
    return {name: config.check_value(name, v, typed=True) for name, v in typed(values).items()}


def as_flags(values: dict[str, Any]) -> list[str]:
    """Settings as the flags that set them (`hidden_size=64` is `--hidden-size 64`)."""
    arguments = []
    for name, value in values.items():
        dashed = name.replace("_", "-")
        if isinstance(value, bool):
            arguments.append(f"--{dashed}" if value else f"--no-{dashed}")
        elif isinstance(value, (list, tuple)):  # a repeatable setting: the option once a value
            arguments += [part for one in value for part in (f"--{dashed}", str(one))]
        else:
            arguments += [f"--{dashed}", str(value)]
    return arguments
