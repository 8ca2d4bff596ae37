"""The command line: parse, call the library, show the result. No model or training logic here.

stdout carries only results (sampled text, JSON, the batches a learner asked to see); tables,
progress and diagnostics go to stderr. Exit codes: 0 ok, 1 a domain error (one red line on
stderr), 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import functools
import json
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
    from charrnn.errors import ConfigError
    from charrnn.train import StopRequest, Trainer, default_run_dir, describe, resume_configs

    overrides = _typed(
        max_steps=max_steps, max_epochs=max_epochs, max_time=max_time, eval_every=eval_every,
        eval_chars=eval_chars, checkpoint_every=checkpoint_every, device=device,
        threads=threads, precision=precision, seed=seed, corpus=corpus,
        val_fraction=val_fraction, batch_size=batch_size, seq_length=seq_length,
        shift_epochs=shift_epochs, cell=cell, hidden_size=hidden_size, num_layers=num_layers,
        embedding_dim=embedding_dim, dropout=dropout, bias=bias, nonlinearity=nonlinearity,
        bidirectional=bidirectional, optimizer=optimizer, learning_rate=learning_rate,
        lr_schedule=lr_schedule, min_lr_fraction=min_lr_fraction, warmup_steps=warmup_steps,
        weight_decay=weight_decay, grad_clip=grad_clip,
    )  # fmt: skip

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

    stop = StopRequest()
    trainer = Trainer(
        model_config,
        train_config,
        run_dir,
        resume=checkpoint,
        log=lambda line: _above_bar(line),
        stop=stop,
        progress_bar=True if verbose else None,
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


def _parameters(model) -> int:
    from charrnn.model import count_parameters

    return count_parameters(model)


def _above_bar(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def _summary(result) -> None:
    from charrnn.train import bits_per_char

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
    generator = load_model(checkpoint, device)
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
