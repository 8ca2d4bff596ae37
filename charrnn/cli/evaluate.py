"""`charrnn eval`: a model's loss on a whole text, in nats and bits per character."""

from typing import Annotated

import typer
from rich.text import Text

from charrnn import config, use_config
from charrnn.cli import settings
from charrnn.cli.common import facts_table, loss_text, out, print_json

CHECKPOINT = Annotated[str, typer.Argument(help="A .pt file or a run directory (its best.pt).")]
SKIP_UNKNOWN = Annotated[
    bool, typer.Option("--skip-unknown", help="Leave out characters the model never saw.")
]
DYNAMIC = Annotated[
    bool,
    typer.Option(
        "--dynamic",
        help="Also score with dynamic evaluation: the model keeps adapting, with a small "
        "gradient step on each chunk right after scoring it (Krause et al.); reported beside "
        "the static loss.",
        rich_help_panel="Dynamic evaluation",
    ),
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
    dynamic: DYNAMIC = False,
    dynamic_lr: settings.option(
        "dynamic_lr", str(use_config.DynamicConfig.dynamic_lr), cls=use_config.DynamicConfig
    ) = None,
    dynamic_decay: settings.option(
        "dynamic_decay", str(use_config.DynamicConfig.dynamic_decay), cls=use_config.DynamicConfig
    ) = None,
) -> None:
    """A model's loss on a whole text, in nats and bits per character (stateful)."""
    # Long only by its signature, which is the option list Typer reads.
    from charrnn import checkpoint as ckpt
    from charrnn import rundir
    from charrnn.corpus import read_text, resolve_corpus
    from charrnn.devices import autocast_dtype, pick_device
    from charrnn.scoring import score

    adaptation = _adaptation(dynamic, dynamic_lr, dynamic_decay)
    given = settings.check(val_fraction=val_fraction, batch_size=batch_size,
                           seq_length=seq_length, device=device, precision=precision)  # fmt: skip
    path = rundir.find_checkpoint(checkpoint, rundir.FOR_USING)
    saved = ckpt.load(path)
    model, vocab = ckpt.restore_model(saved)
    _, train_config = ckpt.resume_configs(saved, {})
    run = {**config.to_dict(train_config), **given}  # the run's settings, unless given
    where = pick_device(device)
    # auto: what the run trained in (a timed run saved its choice by name; an older run's auto
    # resolves as it did then, by the CPU's instructions).
    trained_in = train_config.precision if precision == "auto" else precision
    text, amp = read_text(corpus), autocast_dtype(where, trained_in)
    result = score(
        model,
        vocab,
        text,
        batch_size=run["batch_size"],
        seq_length=run["seq_length"],
        split=split,
        val_fraction=run["val_fraction"],
        skip_unknown=skip_unknown,
        device=where,
        amp=amp,
    )
    adapted = None
    if adaptation is not None:  # the same characters, read again while adapting
        from charrnn.dynamic import dynamic_evaluate
        from charrnn.scoring import split_of

        ids, _ = split_of(vocab, text, split, run["val_fraction"], skip_unknown)
        rates = {"lr": adaptation.dynamic_lr, "decay": adaptation.dynamic_decay}
        adapted = dynamic_evaluate(model, ids, **rates, device=where, amp=amp)
    _show(result, adapted, {"checkpoint": str(path), "corpus": str(resolve_corpus(corpus)),
                            "precision": precision}, as_json)  # fmt: skip


def _show(result, adapted, about: dict, as_json: bool) -> None:
    """The static score, and the dynamic one beside it when there is one."""
    if as_json:
        dynamic_json = {"dynamic": adapted.to_json()} if adapted else {}
        print_json({**about, **result.to_json(), **dynamic_json})
        return
    facts = facts_table()
    facts.add_row("text", Text(f"{about['corpus']} ({result.split})"))
    skipped = f"; {result.skipped:,} unknown left out" if result.skipped else ""
    facts.add_row("characters", f"{result.characters:,} scored{skipped}")
    facts.add_row("loss", loss_text(result.loss))
    per_row = result.characters // result.rows
    layout = (f"{result.rows:,} row(s) of ~{per_row:,} characters, each read from a zero "
              f"state, in chunks of {result.seq_length}")  # fmt: skip
    if result.rows > 1 and per_row < 10 * result.seq_length:  # much of it read with little context
        layout += "; --batch-size 1 reads it as one row, with more context"
    facts.add_row("layout", layout)
    if adapted is not None:
        facts.add_row("dynamic loss", loss_text(adapted.loss))
        facts.add_row(
            "",
            f"{abs(adapted.gain):.4f} nats/char {'better' if adapted.gain >= 0 else 'worse'} "
            f"than {adapted.static_loss:.4f} static in the "
            f"same layout ({adapted.rows} row, chunks of {adapted.seq_length}; lr "
            f"{adapted.lr:g}, decay {adapted.decay:g})",
        )
    out.print(facts)


def _adaptation(dynamic: bool, lr: float | None, decay: float | None):
    """The dynamic evaluation's settings (a checked use_config.DynamicConfig); None without
    --dynamic."""
    from charrnn.errors import ConfigError

    given = settings.typed({"dynamic_lr": lr, "dynamic_decay": decay})
    if not dynamic:
        if given:
            raise ConfigError("--dynamic-lr and --dynamic-decay need --dynamic")
        return None
    return config.build(use_config.DynamicConfig, given)
