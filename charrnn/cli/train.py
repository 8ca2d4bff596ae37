"""`charrnn train`: resolve the settings, hand them to the Trainer, report how it went.

Its options are the declared settings of charrnn.config (one each, grouped in --help panels)
plus the run-level options below, which are about this invocation rather than the model.
"""

import math
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from charrnn import config as config_module
from charrnn import rundir
from charrnn.cli import settings
from charrnn.cli.common import EXIT_INTERRUPTED, EXIT_TERMINATED, debugging, err
from charrnn.errors import ConfigError

# The options of `train` that are not settings of the model or of training. --init-from is
# one of them, not a setting: like --resume it names where this invocation's weights come from
# (a path on this machine) and decides where the model's shape comes from; the run records it
# (inspect shows it), and a config file stays reusable for any start.
RUN_LEVEL_OPTIONS = (
    "config", "out_dir", "resume", "init_from", "verbose", "nproc", "init_timeout", "dry_run"
)  # fmt: skip


def _run_option(*names: str, **details: Any) -> Any:
    """An option about this invocation rather than the model: shown in --help's Run panel."""
    return typer.Option(*names, rich_help_panel=settings.RUN, **details)


@settings.declared_options(list(config_module.all_fields()))
def train(
    context: typer.Context,
    config: Annotated[
        str | None,
        _run_option(
            "--config", help="TOML config: a bundled name (default, tiny, gpu, finetune) or a path."
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        _run_option(
            "--out", help="Run directory.", show_default="checkpoints/<corpus>-<cell>-<time>/"
        ),
    ] = None,
    resume: Annotated[
        Path | None, _run_option(help="Continue a run: its directory or a .pt file.")
    ] = None,
    init_from: Annotated[
        Path | None,
        _run_option(
            "--init-from",
            help="Fine-tune: a new run from this run's best.pt (or a .pt file); the model's "
            "shape comes from it, the settings from --config (default: finetune) and flags.",
        ),
    ] = None,
    verbose: Annotated[
        bool, _run_option("--verbose", "-v", help="Progress bar even when piped.")
    ] = False,
    nproc: Annotated[
        int | None,
        _run_option(help="Train on N processes of this machine (starts torchrun).", min=1),
    ] = None,
    init_timeout: Annotated[
        float,
        _run_option(
            "--init-timeout",
            help="Seconds the processes of a multi-process run wait for each other to start.",
        ),
    ] = 300.0,
    dry_run: Annotated[
        bool,
        _run_option(
            "--dry-run",
            help="Read the corpus, size the model (auto_size) and show the settings, then stop "
            "without training or writing the run; reading the corpus fills its token cache "
            "(like any run; the real run then starts faster).",
        ),
    ] = False,
    **typed_settings: Any,
) -> None:
    """Train a model; Ctrl-C saves and tells you how to resume."""
    world = _join(init_timeout)  # torchrun's processes find each other; a lone process is alone
    from charrnn import distributed

    overrides = settings.typed(typed_settings)
    context.call_on_close(distributed.leave)
    if world.local_rank:
        err.quiet = True  # the ranks agree on errors: one process per machine reports them

    start, checkpoint, model_config, train_config, run_dir, given = _configs(
        config, out_dir, resume, init_from, overrides
    )
    if nproc is not None and nproc > 1:
        if world.size > 1:
            raise ConfigError("--nproc starts torchrun itself; leave it out under torchrun")
        distributed.check_batch_split(train_config.batch_size, nproc)
        # No --out: rank 0 makes the default directory itself, with a name no other run has.
        where = ["--resume", str(resume)] if resume else ["--out", str(run_dir)] if run_dir else []
        where += ["--init-from", str(init_from)] if init_from else []
        config_file = ["--config", config] if config else []
        arguments = ["train", *where, *config_file, *(["--verbose"] if verbose else []),
                     *(["--dry-run"] if dry_run else []),
                     "--init-timeout", str(init_timeout)]  # fmt: skip
        raise typer.Exit(code=distributed.launch(nproc, arguments + settings.as_flags(overrides)))
    _train(model_config, train_config, run_dir, checkpoint, verbose, world, start, given, dry_run)


def _join(init_timeout: float):
    """This process's World (charrnn.distributed.join), waiting at most `init_timeout` s."""
    if not (math.isfinite(init_timeout) and init_timeout > 0):
        raise ConfigError(f"--init-timeout must be a positive number of seconds: {init_timeout}")
    if "WORLD_SIZE" in os.environ and not debugging["on"]:
        # torch's C++ side would log a failed start-up in many lines; the error says it in one.
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
    from charrnn import distributed

    return distributed.join(init_timeout)


def _configs(config, out_dir: Path | None, resume: Path | None, init_from: Path | None,
             overrides: dict):  # fmt: skip
    """(fine-tune start or None, checkpoint or None, model config, train config, run directory,
    the settings the user gave) of a new, fine-tuned or resumed run; the directory is None for a
    new run under a default name (the Trainer makes it)."""
    from charrnn import checkpoint as ckpt
    from charrnn import finetune, rundir

    if resume is not None and init_from is not None:
        raise ConfigError("--init-from starts a new run; --resume continues one: give one of them")
    if resume is None:
        start = finetune.Start.load(init_from) if init_from is not None else None
        if start is not None:
            model_config, train_config = finetune.configs(start, config, overrides)
        else:
            model_config, train_config = config_module.resolve(config or "default", overrides)
        if out_dir is not None:
            rundir.check_new(out_dir)  # early; the Trainer checks again once it owns the folder
        # What auto_size keeps (a fine-tune takes its shape from its checkpoint and sizes nothing).
        given = (frozenset(overrides) if start is not None
                 else config_module.given_keys(config or "default", overrides))  # fmt: skip
        return start, None, model_config, train_config, out_dir, given
    if config is not None:
        raise ConfigError("--config cannot be combined with --resume: a run keeps its config")
    path = rundir.find_checkpoint(resume, rundir.FOR_RESUMING)
    checkpoint = ckpt.load(path)
    model_config, train_config = ckpt.resume_configs(checkpoint, overrides)
    if out_dir is not None and out_dir.resolve() != path.parent.resolve():
        raise ConfigError("--out cannot move a resumed run; it continues in its directory")
    return None, checkpoint, model_config, train_config, path.parent, frozenset(overrides)


def _train(model_config, train_config, run_dir: Path | None, checkpoint, verbose: bool, world,
           start, given: frozenset[str], dry_run: bool) -> None:  # fmt: skip
    from charrnn.model import count_parameters
    from charrnn.train import StopRequest, Trainer

    stop = StopRequest()
    trainer = Trainer(model_config, train_config, run_dir, resume=checkpoint,
                      log=_above_bar, stop=stop, progress_bar=True if verbose else None,
                      world=world, start=start, given=given, dry_run=dry_run)  # fmt: skip
    # After the Trainer accepted corpus and model: a refusal stays one line on stderr.
    if trainer.sizing is not None:
        err.print(_sizing_table(trainer.sizing))
        err.print(f"auto_size: {trainer.sizing.reason}")
    if trainer.precision_timing is not None:
        err.print(f"precision: {trainer.precision_timing.against()}, as timed here "
                  f"({_speeds_text(trainer.precision_timing)})")  # fmt: skip
    table = Table(title="charrnn train" + (" (resumed)" if checkpoint else ""), box=None)
    table.add_column("setting", style="cyan")
    table.add_column("value")
    for config in (trainer.model_config, trainer.config):
        for key, value in config_module.to_dict(config).items():
            if key == "auto_size" and trainer.sizing is not None:
                value = "chosen above (saved as false: a rerun of config.toml trains this)"
            table.add_row(key, str(value))
    err.print(table)
    err.print(
        f"{_corpus_text(trainer.data)}: {len(trainer.data.train):,} training and "
        f"{len(trainer.data.val):,} validation characters, vocabulary {len(trainer.vocab)}; "
        f"model {model_config.cell} with {count_parameters(trainer.model):,} parameters on "
        f"{trainer.device}; run directory {trainer.run_dir}"
    )
    for line in _data_notes(trainer):
        err.print(line)
    if dry_run:
        # Reading the corpus encoded it into the token cache (unless it was there): a cache, not
        # the run, and the real run reuses it; the message says so rather than "nothing written".
        from charrnn import tokens

        err.print(
            f"dry run: nothing trained, nothing written to {trainer.run_dir}; only the "
            f"corpus's token cache ({tokens.folder()}) may have been filled, which the real "
            "run reuses",
            markup=False,
        )
        return

    def on_signal(signum, frame) -> None:
        if stop.requested:  # a second one, while it saves: out now (the old file stays whole)
            _exit_now(trainer.run_dir, signum)
        stop.request(signum)  # the first: finish the step, save, and say how to resume

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = trainer.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    _summary(result, trainer.data)
    if result.stopped_by == "signal":
        err.print(f"stopped by signal; resume with: charrnn train --resume {result.run_dir}")
        interrupted = result.signal == signal.SIGINT
        raise typer.Exit(code=EXIT_INTERRUPTED if interrupted else EXIT_TERMINATED)


def _exit_now(run_dir: Path, signum: int) -> None:
    """End the process at once, from a signal handler, leaving the last whole checkpoint.

    Raising KeyboardInterrupt here is not enough: the handler runs wherever Python happens to
    be. Raised inside torch.save's writer, it left the zip writer inconsistent, and the save
    failed with "enforce fail at inline_container.cc" (exit 1, not 130; 3 of 80 looped runs);
    raised inside a finaliser, it would be printed with its traceback and ignored, and the save
    would go on. So the unfinished write is removed (os.replace never ran for it) and the
    process ends itself; the run's lock goes with it, as it does on a kill.
    """
    from charrnn import files

    files.remove_own_temporaries(run_dir)
    err.print("interrupted" if signum == signal.SIGINT else "terminated")
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_TERMINATED)


def _sizing_table(sizing) -> Table:
    """auto_size's candidates as this machine runs them, the chosen one marked."""
    table = Table(title=f"auto_size (timed in {sizing.probe_seconds:.1f} s)", box=None)
    timed_precisions = any(len(m.precision.speeds) > 1 for m in sizing.measured)
    columns = ("shape", "weights", "chars/s", *(("precision",) if timed_precisions else ()),
               "would read", "per weight", "epochs", "")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("shape", "precision") else "right")
    for measured in sizing.measured:
        speed = measured.chars_per_second
        precision = (measured.precision.name,) if timed_precisions else ()
        table.add_row(
            measured.candidate.name,
            f"{measured.weights / 1e6:.2f} M",
            "-" if speed is None else f"{speed:,.0f}",
            *precision,
            f"{measured.chars / 1e6:.1f} M",
            f"{measured.chars_per_weight:.1f}",
            f"{measured.epochs:.1f}",
            "chosen" if measured is sizing.chosen else "",
        )
    return table


def _speeds_text(timed) -> str:
    """'6,397 chars/s in bf16, 8,842 in fp32'."""
    (name, speed), *others = timed.speeds.items()
    return ", ".join([f"{speed:,.0f} chars/s in {name}", *(f"{s:,.0f} in {n}" for n, s in others)])


def _above_bar(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def _corpus_text(data) -> str:
    files = data.sources.files
    first = files[0].path.name
    return first if len(files) == 1 else f"{len(files)} files ({first}, ...)"


def _data_notes(trainer) -> list[str]:
    """Lines on what reading the corpus skipped, mapped, added or sampled."""
    data, notes = trainer.data, []
    if data.sources.skipped:
        notes.append(f"skipped {data.sources.skipped_text()}")
    if data.choice.unknown_chars:
        notes.append(
            f"--max-vocab: {data.choice.unknown_chars:,} rarer distinct characters "
            f"({data.choice.unknown_count:,} occurrences) are read as U+FFFD"
        )
    if trainer.started_from:
        added = trainer.started_from.get("added") or []
        notes.append(f"fine-tuning from {trainer.started_from.get('path')}; "
                     f"{len(added)} new character(s) added to its vocabulary")  # fmt: skip
    if trainer._scope(whole=True) == "sample":
        notes.append(f"validation: every evaluation scores {_sample_text(len(data.val))}")
    return notes


def _sample_text(characters: int) -> str:
    from charrnn.scoring import SAMPLE_CHARS, SAMPLE_WINDOWS

    return (f"a fixed sample of {SAMPLE_CHARS:,} of its {characters:,} characters "
            f"({SAMPLE_WINDOWS} evenly spaced windows)")  # fmt: skip


def _summary(result, data) -> None:
    from charrnn.cli.common import loss_text

    table = Table(title="run summary", box=None, show_header=False)
    table.add_column(style="cyan")
    table.add_column()
    table.add_row("steps", f"{result.step:,} ({result.epoch:.2f} epochs)")
    table.add_row("time", f"{result.seconds:,.1f} s")
    if result.best_val_loss is not None:
        table.add_row("best val loss", loss_text(result.best_val_loss))
    if result.final_val_loss is not None:
        scope = ("the whole validation text" if result.final_val_scope == "all"
                 else f"on {_sample_text(len(data.val))} of the validation text")  # fmt: skip
        table.add_row("final val loss", f"{result.final_val_loss:.4f} nats/char ({scope})")
    if data.sources.skipped:
        table.add_row("corpus", f"{len(data.sources.files)} file(s) read; skipped "
                      f"{data.sources.skipped_text()}")  # fmt: skip
    # best.pt exists only once an evaluation of the whole validation text was made.
    saved = [result.run_dir / name for name in (rundir.BEST, rundir.LAST)
             if (result.run_dir / name).is_file()]  # fmt: skip
    table.add_row("checkpoints", ", ".join(map(str, saved)))
    table.add_row("sample with", f"charrnn sample {result.run_dir}")
    for warning in result.checkpoint_warnings:
        table.add_row("warning", warning)
    err.print(table)
