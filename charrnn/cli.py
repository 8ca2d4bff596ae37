"""The command line: parse, call the library, show the result. No model or training logic here.

stdout carries only results (sampled text, JSON, the batches a learner asked to see); tables,
progress and diagnostics go to stderr. Exit codes: 0 ok, 1 a domain error (one red line on
stderr), 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from charrnn import __version__
from charrnn.errors import CharRNNError

app = typer.Typer(
    name="charrnn",
    help="Character-level recurrent networks: train on any UTF-8 text, then sample from it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_ERROR, EXIT_INTERRUPTED = 1, 130


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


def version_callback(value: bool) -> None:
    if value:
        out.print(f"charrnn {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=version_callback, is_eager=True, help="Show version."),
    ] = None,
) -> None:
    """charrnn: learn to write like any text, one character at a time."""


# --------------------------------------------------------------------------- inspect-batches

VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def visible(char: str) -> str:
    return VISIBLE.get(char, char if char.isprintable() else f"\\u{ord(char):04x}")


@app.command("inspect-batches")
@guarded
def inspect_batches(
    corpus: Annotated[
        str, typer.Option("--corpus", "-c", help="Bundled corpus name or path to a text file.")
    ] = "shakespeare",
    demo: Annotated[
        int | None,
        typer.Option(help="Use the integers 1..N as the data, as in the lesson.", min=1),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Rows per step.")] = 2,
    seq_length: Annotated[
        int, typer.Option("--seq-length", "-s", help="Characters per row per step.")
    ] = 3,
    steps: Annotated[int, typer.Option(help="How many steps to show.", min=1)] = 2,
    split: Annotated[str, typer.Option(help="train or val.")] = "train",
    val_fraction: Annotated[float, typer.Option(help="Held-out fraction of the text.")] = 0.1,
    offset: Annotated[int, typer.Option(help="Rotate the layout along the cycle.", min=0)] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the batches as JSON.")] = False,
) -> None:
    """Show what the cyclic loader feeds the model: inputs beside targets, step by step."""
    import torch

    from charrnn.batching import CyclicBatches
    from charrnn.corpus import Vocabulary, read_text, split_train_val
    from charrnn.errors import ConfigError

    if split not in ("train", "val"):
        raise ConfigError(f"split must be train or val, got {split!r}")
    if demo is not None:
        data = torch.arange(1, demo + 1)
        show = list  # rows of integers
    else:
        text = read_text(corpus)
        vocab = Vocabulary.from_text(text)
        train, val = split_train_val(vocab.encode(text), val_fraction)
        data = train if split == "train" else val
        show = vocab.decode
    batches = CyclicBatches(data, batch_size, seq_length, offset)
    shown = [(k + 1, *batches[k]) for k in range(min(steps, len(batches)))]

    if as_json:
        payload = {
            "batch_size": batch_size,
            "seq_length": seq_length,
            "n_batches": len(batches),
            "steps": [
                {
                    "step": step,
                    "inputs": [show(row.tolist()) for row in inputs],
                    "targets": [show(row.tolist()) for row in targets],
                }
                for step, inputs, targets in shown
            ],
        }
        out.out(json.dumps(payload, ensure_ascii=False), highlight=False)
        return

    source = f"the integers 1..{demo}" if demo is not None else f"{corpus} ({split} split)"
    summary = Table.grid(padding=(0, 2))
    summary.add_row("data", f"{source}: {len(data):,} characters")
    summary.add_row("batch_size", f"{batch_size} contiguous rows")
    summary.add_row("seq_length", f"{seq_length} characters per row per step")
    summary.add_row(
        "n_batches",
        f"{len(batches):,} steps per epoch (row length {len(data) // batch_size:,} "
        f"// seq_length {seq_length})",
    )
    summary.add_row(
        "used", f"{batches.used:,} characters are inputs once per epoch; {batches.dropped:,} "
        f"dropped at the end (they do not fill a whole step)",
    )  # fmt: skip
    summary.add_row("targets", "the next character of the text; after the last comes the first")
    out.print(summary)

    # One width for every number, so inputs and targets line up column by column.
    width = len(str(len(data))) if demo is not None else 1

    def cells(values: list, other: list | None = None) -> Text:
        text = Text()
        for i, value in enumerate(values):
            token = str(value) if demo is not None else visible(value)
            # The target that is new in this row (not among the inputs) is highlighted.
            style = "bold green" if other is not None and i == len(values) - 1 else ""
            text.append(token.rjust(width), style=style)
            text.append(" ")
        return text

    for step, inputs, targets in shown:
        table = Table(title=f"step {step} of {len(batches)}", title_justify="left")
        table.add_column("row", justify="right")
        table.add_column("inputs")
        table.add_column("targets (inputs shifted by one)")
        for r, (x, y) in enumerate(zip(inputs.tolist(), targets.tolist(), strict=True)):
            xs, ys = (x, y) if demo is not None else (list(show(x)), list(show(y)))
            table.add_row(str(r), cells(xs), cells(ys, xs))
        out.print(table)
    if demo is None:
        out.print("whitespace shown as ␣ (space), ↵ (newline), ⇥ (tab)", style="dim")


# --------------------------------------------------------------------------- train

Opt = typer.Option


def _typed(**values: Any) -> dict[str, Any]:
    """Only the flags the user typed (Typer passes None for the others)."""
    return {key: value for key, value in values.items() if value is not None}


@app.command()
@guarded
def train(
    context: typer.Context,
    config: Annotated[
        str | None,
        Opt("--config", help="TOML config: a bundled name (default, tiny, gpu) or a path."),
    ] = None,
    out_dir: Annotated[
        Path | None,
        Opt("--out", help="Run directory [default: checkpoints/<corpus>-<cell>-<time>/]."),
    ] = None,
    resume: Annotated[
        Path | None, Opt("--resume", help="Continue a run: its directory or a .pt file.")
    ] = None,
    verbose: Annotated[bool, Opt("--verbose", "-v", help="Progress bar even when piped.")] = False,
    # Run control.
    max_steps: Annotated[int | None, Opt(help="Stop after this many steps.")] = None,
    max_epochs: Annotated[float | None, Opt(help="Stop after this many epochs.")] = None,
    max_time: Annotated[float | None, Opt(help="Stop after this many seconds (this run).")] = None,
    eval_every: Annotated[int | None, Opt(help="Evaluate every N steps.")] = None,
    eval_chars: Annotated[
        int | None, Opt(help="Validation characters per periodic evaluation (0 = all).")
    ] = None,
    checkpoint_every: Annotated[int | None, Opt(help="Write last.pt every N steps.")] = None,
    device: Annotated[str | None, Opt(help="auto, cpu, cuda or mps.")] = None,
    threads: Annotated[int | None, Opt(help="CPU threads (0 = all cores).")] = None,
    precision: Annotated[str | None, Opt(help="GPU autocast: auto, fp32, bf16, fp16.")] = None,
    seed: Annotated[int | None, Opt(help="Random seed.")] = None,
    nproc: Annotated[
        int | None, Opt(help="Train on N processes of this machine (starts torchrun).", min=1)
    ] = None,
    # Data.
    corpus: Annotated[str | None, Opt("--corpus", "-c", help="Corpus name or path.")] = None,
    val_fraction: Annotated[float | None, Opt(help="Held-out fraction of the text.")] = None,
    batch_size: Annotated[int | None, Opt("--batch-size", "-b", help="Rows per step.")] = None,
    seq_length: Annotated[
        int | None, Opt("--seq-length", "-s", help="Characters per row per step.")
    ] = None,
    shift_epochs: Annotated[
        bool | None, Opt("--shift-epochs/--no-shift-epochs", help="Shift each epoch's start.")
    ] = None,
    # Model.
    cell: Annotated[
        str | None,
        Opt(help="lstm, gru, rnn, gate-lstm, peephole-lstm or gate-gru."),
    ] = None,
    hidden_size: Annotated[int | None, Opt(help="Units per layer.")] = None,
    num_layers: Annotated[int | None, Opt(help="Stacked layers.")] = None,
    embedding_dim: Annotated[int | None, Opt(help="Embedding size (0 = one-hot).")] = None,
    dropout: Annotated[
        float | None, Opt(help="Dropout between layers and before the head.")
    ] = None,
    weight_drop: Annotated[
        float | None, Opt(help="DropConnect on the recurrent weights (AWD-LSTM).")
    ] = None,
    bias: Annotated[bool | None, Opt("--bias/--no-bias", help="Bias terms in the core.")] = None,
    nonlinearity: Annotated[str | None, Opt(help="tanh or relu (rnn cell).")] = None,
    bidirectional: Annotated[
        bool | None, Opt("--bidirectional", help="Refused: generation reads left to right.")
    ] = None,
    # Optimisation.
    optimizer: Annotated[str | None, Opt(help="adam or adamw.")] = None,
    learning_rate: Annotated[
        float | None, Opt("--learning-rate", "--lr", help="Peak rate.")
    ] = None,
    lr_schedule: Annotated[str | None, Opt(help="cosine, linear or constant.")] = None,
    min_lr_fraction: Annotated[float | None, Opt(help="Final rate / peak rate.")] = None,
    warmup_steps: Annotated[int | None, Opt(help="Linear warm-up steps.")] = None,
    weight_decay: Annotated[float | None, Opt(help="Weight decay.")] = None,
    grad_clip: Annotated[float | None, Opt(help="Clip gradient norm (0 = off).")] = None,
) -> None:
    """Train a model; Ctrl-C saves and tells you how to resume."""
    from charrnn import checkpoint as ckpt
    from charrnn import config as config_module
    from charrnn import distributed
    from charrnn.errors import ConfigError
    from charrnn.train import StopRequest, Trainer, default_run_dir, describe, resume_configs

    overrides = _typed(
        max_steps=max_steps, max_epochs=max_epochs, max_time=max_time, eval_every=eval_every,
        eval_chars=eval_chars, checkpoint_every=checkpoint_every, device=device,
        threads=threads, precision=precision, seed=seed, corpus=corpus,
        val_fraction=val_fraction, batch_size=batch_size, seq_length=seq_length,
        shift_epochs=shift_epochs, cell=cell, hidden_size=hidden_size, num_layers=num_layers,
        embedding_dim=embedding_dim, dropout=dropout, weight_drop=weight_drop, bias=bias,
        nonlinearity=nonlinearity, bidirectional=bidirectional, optimizer=optimizer,
        learning_rate=learning_rate,
        lr_schedule=lr_schedule, min_lr_fraction=min_lr_fraction, warmup_steps=warmup_steps,
        weight_decay=weight_decay, grad_clip=grad_clip,
    )  # fmt: skip

    world = distributed.join()  # torchrun's processes find each other; a lone process is alone
    context.call_on_close(distributed.leave)
    if world.local_rank:
        err.quiet = True  # the ranks agree on errors: one process per machine reports them

    checkpoint = None
    if resume is not None:
        if config is not None:
            raise ConfigError("--config cannot be combined with --resume: a run keeps its config")
        checkpoint = ckpt.load(resume, prefer=("last.pt",))
        model_config, train_config = resume_configs(checkpoint, overrides)
        run_dir = ckpt.resolve(resume, prefer=("last.pt",)).parent
        if out_dir is not None and out_dir.resolve() != run_dir.resolve():
            raise ConfigError("--out cannot move a resumed run; it continues in its directory")
    else:
        model_config, train_config = config_module.resolve(config or "default", overrides)
        run_dir = out_dir or default_run_dir(train_config.corpus, model_config.cell)
        if (run_dir / "last.pt").exists():
            raise ConfigError(
                f"{str(run_dir)!r} already holds a run; continue it with --resume {run_dir} "
                "or choose another --out"
            )

    if nproc is not None and nproc > 1:
        if world.size > 1:
            raise ConfigError("--nproc starts torchrun itself; leave it out under torchrun")
        distributed.check_batch_split(train_config.batch_size, nproc)
        where = ["--resume", str(resume)] if resume else ["--out", str(run_dir)]
        config_file = ["--config", config] if config else []
        arguments = ["train", *where, *config_file, *(["--verbose"] if verbose else [])]
        raise typer.Exit(code=distributed.launch(nproc, arguments + _as_flags(overrides)))

    stop = StopRequest()
    trainer = Trainer(
        model_config,
        train_config,
        run_dir,
        resume=checkpoint,
        log=lambda line: _above_bar(line),
        stop=stop,
        progress_bar=True if verbose else None,
        world=world,
    )
    # After the Trainer accepted corpus and model: a refusal stays one line on stderr.
    table = Table(title="charrnn train" + (" (resumed)" if checkpoint else ""), box=None)
    table.add_column("setting", style="cyan")
    table.add_column("value")
    for key, value in describe(model_config, train_config):
        table.add_row(key, value)
    err.print(table)
    err.print(
        f"{trainer.data.corpus_path.name}: {len(trainer.data.train):,} training and "
        f"{len(trainer.data.val):,} validation characters, vocabulary {len(trainer.vocab)}; "
        f"model {trainer.model_config.cell} with {_parameters(trainer.model):,} parameters on "
        f"{trainer.device}; run directory {run_dir}"
    )
    previous = {s: signal.signal(s, lambda signum, frame: stop.request(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}  # fmt: skip
    try:
        result = trainer.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    _summary(result)
    if result.stopped_by == "signal":
        err.print(f"stopped by signal; resume with: charrnn train --resume {result.run_dir}")
        raise typer.Exit(code=EXIT_INTERRUPTED if result.signal == signal.SIGINT else 143)


def _as_flags(values: dict[str, Any]) -> list[str]:
    """Settings as the flags that set them (`hidden_size=64` is `--hidden-size 64`)."""
    flags = []
    for key, value in values.items():
        name = key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        else:
            flags += [f"--{name}", str(value)]
    return flags


def _parameters(model) -> int:
    from charrnn.model import count_parameters

    return count_parameters(model)


def _above_bar(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def _summary(result) -> None:
    from charrnn.scoring import bits_per_char

    table = Table(title="run summary", box=None, show_header=False)
    table.add_column(style="cyan")
    table.add_column()
    table.add_row("steps", f"{result.step:,} ({result.epoch:.2f} epochs)")
    table.add_row("time", f"{result.seconds:,.1f} s")
    if result.best_val_loss is not None:
        table.add_row(
            "best val loss",
            f"{result.best_val_loss:.4f} nats/char ({bits_per_char(result.best_val_loss):.3f} bpc)",
        )
    if result.final_val_loss is not None:
        table.add_row("final val loss", f"{result.final_val_loss:.4f} nats/char")
    table.add_row("checkpoints", f"{result.run_dir}/best.pt, {result.run_dir}/last.pt")
    table.add_row("sample with", f"charrnn sample {result.run_dir}")
    for warning in result.checkpoint_warnings:
        table.add_row("warning", warning)
    err.print(table)


# --------------------------------------------------------------------------- sample


@app.command()
@guarded
def sample(
    checkpoint: Annotated[
        str | None,
        typer.Argument(
            help="A .pt file or a run directory [default: the newest run].", show_default=False
        ),
    ] = None,
    length: Annotated[int, Opt("--length", "-n", help="New characters to generate.")] = 500,
    prime: Annotated[str | None, Opt("--prime", "-p", help="Text to start from.")] = None,
    temperature: Annotated[
        float, Opt("--temperature", "-t", help="<1 sharper, >1 more random.")
    ] = 0.8,
    top_k: Annotated[int, Opt(help="Keep the K most likely characters (0 = off).")] = 0,
    top_p: Annotated[float, Opt(help="Keep the smallest set with this much probability.")] = 1.0,
    greedy: Annotated[bool, Opt("--greedy", help="Always the most likely character.")] = False,
    seed: Annotated[int | None, Opt(help="Same seed, same text.")] = None,
    num_samples: Annotated[
        int, Opt("--num-samples", "-m", help="Independent samples, generated as one batch.")
    ] = 1,
    out_dir: Annotated[
        Path | None, Opt("--out-dir", help="Write sample-N.txt files here instead of stdout.")
    ] = None,
    skip_unknown: Annotated[
        bool, Opt("--skip-unknown", help="Drop prime characters the model never saw.")
    ] = False,
    device: Annotated[str, Opt(help="auto, cpu, cuda or mps.")] = "auto",
    int8: Annotated[
        bool | None,
        Opt(
            "--int8/--exact",
            help="int8 weights (~2x faster at batch 1) or exact fp32 "
            "[default: int8 on a CPU for models of 256+ units]",
            show_default=False,
        ),
    ] = None,
    threads: Annotated[
        int | None, Opt(help="CPU threads [default: by batch and model size].", min=1)
    ] = None,
    verbose: Annotated[
        bool, Opt("--verbose", "-v", help="Say what was loaded, on stderr.")
    ] = False,
) -> None:
    """Write text with a trained model; the text alone goes to stdout."""
    import time

    from charrnn.errors import ConfigError
    from charrnn.sample import load_model

    if device not in ("auto", "cpu", "cuda", "mps"):
        raise ConfigError(f"device must be one of auto, cpu, cuda, mps; got {device!r}")
    if length < 0:
        raise ConfigError(f"--length must be 0 or more, got {length}")
    if num_samples < 1:
        raise ConfigError(f"--num-samples must be at least 1, got {num_samples}")
    if checkpoint is None:
        from charrnn.checkpoint import latest_run

        checkpoint = str(latest_run())
    generator = load_model(checkpoint, device, int8=int8, threads=threads)
    options = dict(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy, seed=seed,
                   skip_unknown=skip_unknown)  # fmt: skip
    chatty = verbose or sys.stderr.isatty()
    started = time.perf_counter()
    if num_samples == 1 and out_dir is None:
        # Stream: the prime, then each character as soon as it exists.
        first = generator.clean_prime(prime, skip_unknown)
        chars = generator.stream(first, length, **options)
        sys.stdout.write(first)
        sys.stdout.flush()
        for char in chars:
            sys.stdout.write(char)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
    else:
        texts = generator.generate(prime, length, num_samples=num_samples, **options)
        texts = [texts] if isinstance(texts, str) else texts
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            for n, text in enumerate(texts, 1):
                (out_dir / f"sample-{n}.txt").write_text(text, encoding="utf-8")
        else:
            for n, text in enumerate(texts, 1):
                sys.stdout.write(f"{'' if n == 1 else chr(10)}==> sample {n} <==\n{text}\n")
            sys.stdout.flush()
    if chatty:
        seconds = time.perf_counter() - started
        err.print(
            f"[dim]{num_samples} x {length} characters in {seconds:.2f} s "
            f"({num_samples * length / max(seconds, 1e-9):,.0f} chars/s) from {checkpoint}[/dim]"
        )


# --------------------------------------------------------------------------- see inside
# inspect, runs, eval and explain: the computations live in charrnn.insight (runs and
# checkpoints) and charrnn.explain (what a model makes of a text); this section only draws.

CURVE_MARKERS = {"train": "•", "val": "◆"}
CURVE_STYLES = {"•": "cyan", "◆": "magenta"}
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _print_json(payload: Any) -> None:
    out.out(json.dumps(payload, ensure_ascii=False), highlight=False)


def _loss_text(nats: float | None) -> str:
    from charrnn.scoring import bits_per_char

    if nats is None:
        return "not evaluated yet"
    return f"{nats:.4f} nats/char ({bits_per_char(nats):.3f} bpc)"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def _model_text(model_config: dict[str, Any]) -> str:
    embedding = model_config.get("embedding_dim")
    return (
        f"{model_config.get('cell')}, {model_config.get('num_layers')} layer(s) of "
        f"{model_config.get('hidden_size')} units, "
        f"{f'embedding {embedding}' if embedding else 'one-hot input'}, "
        f"dropout {model_config.get('dropout')}"
    )


@app.command("inspect")
@guarded
def inspect_checkpoint(
    path: Annotated[
        str, typer.Argument(help="A .pt file, a run directory (its last.pt) or a folder of runs.")
    ],
    as_json: Annotated[bool, Opt("--json", help="The same facts as JSON.")] = False,
) -> None:
    """Describe a checkpoint: corpus, vocabulary, model, training and its loss curves."""
    from charrnn import insight

    if insight.holds_runs(Path(path)):
        _show_runs(insight.list_runs(path), as_json)
        return
    summary = insight.summarize(path)
    if as_json:
        _print_json(summary.to_json())
        return
    train_config = summary.train_config
    parts = ", ".join(f"{name} {count:,}" for name, count in summary.parameters_by_part.items())
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="cyan")
    facts.add_column()
    facts.add_row("checkpoint", Text(f"{summary.path} (written {summary.written:%Y-%m-%d %H:%M})"))
    facts.add_row("corpus", Text(summary.corpus))
    facts.add_row("vocabulary", f"{len(summary.vocab)} characters")
    facts.add_row("", Text("".join(visible(c) for c in summary.vocab)))
    facts.add_row("model", Text(_model_text(summary.model_config)))
    facts.add_row("parameters", f"{summary.parameters:,} ({parts})")
    facts.add_row(
        "training",
        f"{summary.step:,} steps, {summary.epoch:.2f} epochs, {_duration(summary.seconds)}; "
        f"batches of {train_config.get('batch_size')} x {train_config.get('seq_length')} "
        f"characters, learning rate {train_config.get('learning_rate')}",
    )
    facts.add_row("best val loss", _loss_text(summary.best_val_loss))
    facts.add_row("last val loss", _loss_text(summary.last_val_loss))
    out.print(facts)
    out.print("whitespace shown as ␣ (space), ↵ (newline), ⇥ (tab)", style="dim")

    from charrnn.textplot import line_chart

    lines = line_chart(insight.loss_curves(summary.metrics), CURVE_MARKERS)
    if not lines:
        out.print("no loss curves: the run has no metrics.jsonl next to the checkpoint")
        return
    legend = Text("\nloss (nats/char) against step:  ")
    for name, marker in CURVE_MARKERS.items():
        legend.append(f"{marker} {name}  ", style=CURVE_STYLES[marker])
    out.print(legend)
    for line in lines:
        out.print(Text.assemble(*((char, CURVE_STYLES.get(char, "")) for char in line)))


@app.command()
@guarded
def runs(
    folder: Annotated[
        Path, typer.Argument(help="A folder of run directories.", show_default=True)
    ] = Path("checkpoints"),
    as_json: Annotated[bool, Opt("--json", help="The runs as JSON.")] = False,
) -> None:
    """List the runs in a folder side by side, newest first."""
    from charrnn import insight

    _show_runs(insight.list_runs(folder), as_json)


def _show_runs(listing, as_json: bool) -> None:
    from charrnn.scoring import bits_per_char

    for name, reason in listing.unreadable.items():
        err.print(Text(f"skipped {name}: {reason}", style="yellow"))
    if as_json:
        _print_json({"runs": [run.to_json() for run in listing.runs],
                     "unreadable": listing.unreadable})  # fmt: skip
        return
    table = Table(box=None)
    # The run's name folds onto more lines when the terminal is narrow; the numbers never do.
    table.add_column("run", overflow="fold")
    table.add_column("cell", no_wrap=True)
    for column in ("size", "params", "steps", "epochs", "best val", "bpc", "written"):
        table.add_column(column, justify="right", no_wrap=True)
    for run in listing.runs:
        model = run.model_config
        best = run.best_val_loss
        table.add_row(
            Text(run.run_name),
            Text(str(model.get("cell"))),
            f"{model.get('num_layers')}x{model.get('hidden_size')}",
            _compact(run.parameters),
            f"{run.step:,}",
            f"{run.epoch:.2f}",
            "-" if best is None else f"{best:.4f}",
            "-" if best is None else f"{bits_per_char(best):.3f}",
            f"{run.written:%Y-%m-%d %H:%M}",
        )
    out.print(table)


def _compact(count: int) -> str:
    """9291 -> 9.3k, 3400000 -> 3.4M: parameter counts at a glance."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return str(count)


def _load_for_reading(checkpoint: str):
    """The checkpoint's file, its saved dict, and its model and vocabulary (a run: best.pt)."""
    from charrnn import checkpoint as ckpt

    path = ckpt.resolve(checkpoint)
    saved = ckpt.load(path)
    model, vocab = ckpt.restore_model(saved)
    return path, saved, model, vocab


@app.command("eval")
@guarded
def eval_command(
    checkpoint: Annotated[str, typer.Argument(help="A .pt file or a run directory (its best.pt).")],
    corpus: Annotated[str, Opt("--corpus", "-c", help="Bundled corpus name or path to a text.")],
    split: Annotated[
        str, Opt(help="all (the whole text), or the train / val part training would use.")
    ] = "all",
    val_fraction: Annotated[
        float | None, Opt(help="Held-out fraction for --split [default: the run's].")
    ] = None,
    batch_size: Annotated[
        int | None, Opt("--batch-size", "-b", help="Rows scored at once [default: the run's].")
    ] = None,
    seq_length: Annotated[
        int | None, Opt("--seq-length", "-s", help="Characters per chunk [default: the run's].")
    ] = None,
    skip_unknown: Annotated[
        bool, Opt("--skip-unknown", help="Leave out characters the model never saw.")
    ] = False,
    device: Annotated[str, Opt(help="auto, cpu, cuda or mps.")] = "auto",
    precision: Annotated[
        str, Opt(help="fp32, or auto / bf16 / fp16 autocast (auto is what training used).")
    ] = "fp32",
    as_json: Annotated[bool, Opt("--json", help="The result as JSON.")] = False,
) -> None:
    """A model's loss on a whole text, in nats and bits per character (stateful)."""
    from charrnn.corpus import read_text, resolve_corpus
    from charrnn.devices import autocast_dtype, pick_device
    from charrnn.errors import ConfigError
    from charrnn.scoring import score

    if device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}; got {device!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    path, saved, model, vocab = _load_for_reading(checkpoint)
    run = saved["train_config"]
    where = pick_device(device)
    result = score(
        model,
        vocab,
        read_text(corpus),
        batch_size=batch_size if batch_size is not None else run.get("batch_size", 32),
        seq_length=seq_length if seq_length is not None else run.get("seq_length", 100),
        split=split,
        val_fraction=val_fraction if val_fraction is not None else run.get("val_fraction", 0.1),
        skip_unknown=skip_unknown,
        device=where,
        amp=autocast_dtype(where, precision),
    )
    if as_json:
        _print_json({"checkpoint": str(path), "corpus": str(resolve_corpus(corpus)),
                     "precision": precision, **result.to_json()})  # fmt: skip
        return
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="cyan")
    facts.add_column()
    facts.add_row("text", Text(f"{resolve_corpus(corpus)} ({result.split})"))
    skipped = f"; {result.skipped:,} unknown left out" if result.skipped else ""
    facts.add_row("characters", f"{result.characters:,} scored{skipped}")
    facts.add_row("loss", _loss_text(result.loss))
    out.print(facts)


@app.command()
@guarded
def explain(
    checkpoint: Annotated[str, typer.Argument(help="A .pt file or a run directory (its best.pt).")],
    text: Annotated[str | None, Opt("--text", help="The text to read.")] = None,
    file: Annotated[Path | None, Opt("--file", help="Read the text from this file.")] = None,
    show: Annotated[
        str, Opt(help="surprise (the loss on each character) or gate (one unit's gate).")
    ] = "surprise",
    layer: Annotated[int, Opt(help="Layer of the unit for --show gate (0 = the first).")] = 0,
    unit: Annotated[int, Opt(help="Unit within the layer for --show gate (0 = the first).")] = 0,
    gate: Annotated[
        str,
        Opt(help="learn (its ignore factor i), forget, use, cell (state) or hidden (state)."),
    ] = "cell",
    find: Annotated[
        str | None,
        Opt(help="List the units that follow quotes, newline or line-position; show the best."),
    ] = None,
    top_units: Annotated[
        int | None, Opt(help="Units to list per pattern (every pattern unless --find) [5].")
    ] = None,
    skip_unknown: Annotated[
        bool, Opt("--skip-unknown", help="Show characters the model never saw, unscored.")
    ] = False,
    html_file: Annotated[
        Path | None, Opt("--html", help="Also write the view as a self-contained HTML page.")
    ] = None,
    as_json: Annotated[bool, Opt("--json", help="The values as JSON.")] = False,
) -> None:
    """Colour a text by what the model saw: its surprise at each character, or one unit's gate."""
    from charrnn import explain as explaining
    from charrnn.corpus import read_text
    from charrnn.errors import ConfigError
    from charrnn.scoring import read

    if (text is None) == (file is None):
        raise ConfigError("give the text to read with exactly one of --text or --file")
    if show not in ("surprise", "gate"):
        raise ConfigError(f"--show must be surprise or gate; got {show!r}")
    path, _, model, vocab = _load_for_reading(checkpoint)
    reading = read(vocab, text if text is not None else read_text(str(file)), skip_unknown)

    matches = None
    if find is not None or top_units is not None:
        patterns = (find,) if find is not None else explaining.PATTERNS
        matches = explaining.top_units(model, reading, patterns, gate, top_units or 5)
        best = max((m[0] for m in matches.values()), key=lambda m: abs(m.correlation))
        view = explaining.unit_trace(model, reading, gate, best.layer, best.unit)
    elif show == "surprise":
        view = explaining.surprise(model, vocab, reading)
    else:
        view = explaining.unit_trace(model, reading, gate, layer, unit)

    if html_file is not None:
        html_file.write_text(explaining.to_html(view, f"read by {path}"), encoding="utf-8")
        err.print(Text(f"wrote {html_file}"))
    if as_json:
        payload = view.to_json()
        if matches is not None:
            payload["units"] = [m.to_json() for found in matches.values() for m in found]
        _print_json(payload)
        return
    if matches is not None:
        table = Table(title=f"units whose {gate} follows a pattern of the text", box=None)
        for column in ("pattern", "layer", "unit", "correlation"):
            table.add_column(column, justify="left" if column == "pattern" else "right")
        for found in matches.values():
            for m in found:
                table.add_row(m.pattern, str(m.layer), str(m.unit), f"{m.correlation:+.3f}")
        out.print(table)
    out.print(_coloured(view))
    _legend(view)


def _coloured(view) -> Text:
    """The text with each character's value as its background colour; whitespace made visible."""
    coloured = Text()
    for char, value in zip(view.text, view.values, strict=True):
        shown = visible(char) + ("\n" if char == "\n" else "") if not char.isprintable() else char
        style = "" if value is None else "black on rgb({},{},{})".format(*view.scale.rgb(value))
        coloured.append(shown, style=style)
    return coloured


def _legend(view) -> None:
    scale = view.scale
    low = Text(f" {scale.low:.3g} ", style="black on rgb({},{},{})".format(*scale.rgb(scale.low)))
    high = Text(
        f" {scale.high:.3g} ", style="black on rgb({},{},{})".format(*scale.rgb(scale.high))
    )
    scored = [v for v in view.values if v is not None]
    mean = (
        f"; mean {sum(scored) / len(scored):.3f} over {len(scored):,} characters" if scored else ""
    )
    err.print(Text.assemble(f"{view.title}: ", low, " to ", high,
                            f" (uncoloured: not scored){mean}"))  # fmt: skip


def run() -> None:
    """The `charrnn` command (and ``python -m charrnn``): the app, with a clean multi-process exit.

    A process of a multi-process run (a torchrun worker) leaves without the interpreter's
    teardown. After an early exit (the ranks refused to train together, within a second of
    connecting), gloo's threads sometimes abort that teardown ("terminate called without an
    active exception", SIGABRT), which would replace the exit status the rank has reported.
    """
    try:
        app(prog_name="charrnn")
    except SystemExit as done:
        if int(os.environ.get("WORLD_SIZE", "1")) == 1:  # torchrun sets it in its workers
            raise
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
