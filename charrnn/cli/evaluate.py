"""`charrnn eval`: a model's loss on a whole text, in nats and bits per character."""

from typing import Annotated

import typer
from rich.text import Text

from charrnn.cli import settings
from charrnn.cli.common import facts_table, loss_text, out, print_json

CHECKPOINT = Annotated[str, typer.Argument(help="A .pt file or a run directory (its best.pt).")]
SKIP_UNKNOWN = Annotated[
    bool, typer.Option("--skip-unknown", help="Leave out characters the model never saw.")
]


def eval_command(
    checkpoint: CHECKPOINT,
    corpus: Annotated[
        str, typer.Option("--corpus", "-c", help="Bundled corpus name or path to a text.")
    ],
    split: Annotated[
        str, typer.Option(help="all (the whole text), or the train / val part training would use.")
    ] = "all",
    val_fraction: settings.option("val_fraction", shown_default="the run's") = None,
    batch_size: settings.option("batch_size", shown_default="the run's") = None,
    seq_length: settings.option("seq_length", shown_default="the run's") = None,
    skip_unknown: SKIP_UNKNOWN = False,
    device: settings.option("device") = "auto",
    precision: settings.option(
        "precision", shown_default="fp32; auto is what training used"
    ) = "fp32",
    as_json: Annotated[bool, typer.Option("--json", help="The result as JSON.")] = False,
) -> None:
    """A model's loss on a whole text, in nats and bits per character (stateful)."""
    from charrnn import checkpoint as ckpt
    from charrnn import config, rundir
    from charrnn.corpus import read_text, resolve_corpus
    from charrnn.devices import autocast_dtype, pick_device
    from charrnn.scoring import score

    given = settings.check(val_fraction=val_fraction, batch_size=batch_size,
                           seq_length=seq_length, device=device, precision=precision)  # fmt: skip
    path = rundir.find_checkpoint(checkpoint, rundir.FOR_USING)
    saved = ckpt.load(path)
    model, vocab = ckpt.restore_model(saved)
    _, train_config = ckpt.resume_configs(saved, {})
    run = {**config.to_dict(train_config), **given}  # the run's settings, unless given
    where = pick_device(device)
    result = score(
        model,
        vocab,
        read_text(corpus),
        batch_size=run["batch_size"],
        seq_length=run["seq_length"],
        split=split,
        val_fraction=run["val_fraction"],
        skip_unknown=skip_unknown,
        device=where,
        amp=autocast_dtype(where, precision),
    )
    if as_json:
        print_json({"checkpoint": str(path), "corpus": str(resolve_corpus(corpus)),
                    "precision": precision, **result.to_json()})  # fmt: skip
        return
    facts = facts_table()
    facts.add_row("text", Text(f"{resolve_corpus(corpus)} ({result.split})"))
    skipped = f"; {result.skipped:,} unknown left out" if result.skipped else ""
    facts.add_row("characters", f"{result.characters:,} scored{skipped}")
    facts.add_row("loss", loss_text(result.loss))
    out.print(facts)
