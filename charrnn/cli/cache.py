"""`charrnn cache list` and `charrnn cache clear`: the token cache of encoded corpora.

The facts come from charrnn.token_files; this module only draws them (the entries, not the
lock files beside them).
"""

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from charrnn.cli.common import err, guarded, out, print_json

app = typer.Typer(
    help="The token cache: corpora encoded once, read through a memory map.",
    no_args_is_help=True,
)


def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="The same facts as JSON.")] = False,
) -> None:
    """List the cache's entries: size, state (ok, stale, damaged, building, abandoned; foreign:
    not charrnn's, never removed) and sources."""
    from charrnn import token_files, tokens

    # A lock file (<name>.lock, taken while that entry is built) is no entry: 0 bytes, nothing
    # to read or keep. `cache clear` still removes those no build holds.
    items = [item for item in token_files.list_cache() if item.kind != "lock"]
    if as_json:
        print_json({"folder": str(tokens.folder()), "files": [
            {"path": str(i.path), "kind": i.kind, "bytes": i.bytes, "state": i.state,
             "sources": i.sources, "tokens": i.count, "vocab_size": i.vocab_size,
             "problem": i.problem or None}
            for i in items]})  # fmt: skip
        return
    if not items:
        out.print(Text(f"the token cache is empty ({tokens.folder()})"))
        return
    table = Table(title=str(tokens.folder()), box=None, title_justify="left")
    for column in ("entry", "kind", "size", "state", "tokens", "vocab", "sources"):
        table.add_column(
            column, justify="right" if column in ("size", "tokens", "vocab") else "left"
        )
    for i in items:
        sources = (
            i.sources[0] + (f" (+{len(i.sources) - 1} more)" if len(i.sources) > 1 else "")
            if i.sources
            else ""
        )
        table.add_row(Text(i.path.name), i.kind, _size(i.bytes), i.state,
                      "" if i.count is None else f"{i.count:,}",
                      "" if i.vocab_size is None else str(i.vocab_size), Text(sources))  # fmt: skip
    out.print(table)
    # What is wrong with a damaged or abandoned file, below the table: in it, a long reason
    # would push the sources off a terminal's width.
    for i in items:
        if i.problem:
            err.print(Text(f"{i.path.name}: {i.state}: {i.problem}"))
    ours = [i for i in items if i.state != "foreign"]
    foreign = len(items) - len(ours)
    left = f"; {foreign} other file(s) it leaves alone" if foreign else ""
    total = sum(i.bytes for i in ours)
    err.print(f"{len(ours)} file(s), {_size(total)}; `charrnn cache clear` removes them{left}")


def clear_command(
    stale: Annotated[
        bool,
        typer.Option(
            "--stale",
            help="Only entries whose sources changed, damaged files and abandoned temporaries.",
        ),
    ] = False,
) -> None:
    """Delete the cache's entries (they are rebuilt when next needed) and abandoned temporaries;
    entries being built, and files charrnn did not make, are left alone."""
    from charrnn import token_files

    removed, freed = token_files.clear_cache(stale_only=stale)
    err.print(f"removed {removed} file(s), {_size(freed)}")


def _size(count: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


app.command("list")(guarded(list_command))
app.command("clear")(guarded(clear_command))
