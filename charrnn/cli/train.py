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
from charrnn.cli import settings
from charrnn.cli.common import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, debugging, err
from charrnn.errors import ConfigError

# The options of `train` that are not settings of the model or of training.
RUN_LEVEL_OPTIONS = ("config", "out_dir", "resume", "verbose", "nproc", "init_timeout")


def _run_option(*names: str, **details: Any) -> Any:
    """An option about this invocation rather than the model: shown in --help's Run panel."""
    return typer.Option(*names, rich_help_panel=settings.RUN, **details)


@settings.declared_options(list(config_module.all_fields()))
def train(
    context: typer.Context,
    config: Annotated[
        str | None,
        _run_option("--config", help="TOML config: a bundled name (default, tiny, gpu) or a path."),
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
    **typed_settings: Any,
) -> None:
    """Train a model; Ctrl-C saves and tells you how to resume."""
    world = _join(init_timeout)  # torchrun's processes find each other; a lone process is alone
    from charrnn import distributed

    overrides = settings.typed(typed_settings)
    context.call_on_close(distributed.leave)
    if world.local_rank:
        err.quiet = True  # the ranks agree on errors: one process per machine reports them

    checkpoint, model_config, train_config, run_dir = _configs(config, out_dir, resume, overrides)
    if nproc is not None and nproc > 1:
        if world.size > 1:
            raise ConfigError("--nproc starts torchrun itself; leave it out under torchrun")
        distributed.check_batch_split(train_config.batch_size, nproc)
        # No --out: rank 0 makes the default directory itself, with a name no other run has.
        where = ["--resume", str(resume)] if resume else ["--out", str(run_dir)] if run_dir else []
        config_file = ["--config", config] if config else []
        arguments = ["train", *where, *config_file, *(["--verbose"] if verbose else []),
                     "--init-timeout", str(init_timeout)]  # fmt: skip
        raise typer.Exit(code=distributed.launch(nproc, arguments + settings.as_flags(overrides)))
    _train(model_config, train_config, run_dir, checkpoint, verbose, world)


def _join(init_timeout: float):
    """This process's World (charrnn.distributed.join), waiting at most `init_timeout` s."""
    if not (math.isfinite(init_timeout) and init_timeout > 0):
        raise ConfigError(f"--init-timeout must be a positive number of seconds: {init_timeout}")
    if "WORLD_SIZE" in os.environ and not debugging["on"]:
        # torch's C++ side would log a failed start-up in many lines; the error says it in one.
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
    from charrnn import distributed

    return distributed.join(init_timeout)


def _configs(config: str | None, out_dir: Path | None, resume: Path | None, overrides: dict):
    """(checkpoint or None, model config, train config, run directory) of a new or resumed run;
    the directory is None for a new run under a default name (the Trainer makes it)."""
    from charrnn import checkpoint as ckpt
    from charrnn import rundir

    if resume is None:
        model_config, train_config = config_module.resolve(config or "default", overrides)
        if out_dir is not None:
            rundir.check_new(out_dir)  # early; the Trainer checks again once it owns the folder
        return None, model_config, train_config, out_dir
    if config is not None:
        raise ConfigError("--config cannot be combined with --resume: a run keeps its config")
    path = rundir.find_checkpoint(resume, rundir.FOR_RESUMING)
    checkpoint = ckpt.load(path)
    model_config, train_config = ckpt.resume_configs(checkpoint, overrides)
    if out_dir is not None and out_dir.resolve() != path.parent.resolve():
        raise ConfigError("--out cannot move a resumed run; it continues in its directory")
    return checkpoint, model_config, train_config, path.parent


def _train(model_config, train_config, run_dir: Path | None, checkpoint, verbose, world) -> None:
    from charrnn.model import count_parameters
    from charrnn.train import StopRequest, Trainer

    stop = StopRequest()
    trainer = Trainer(model_config, train_config, run_dir, resume=checkpoint,
                      log=_above_bar, stop=stop, progress_bar=True if verbose else None,
                      world=world)  # fmt: skip
    # After the Trainer accepted corpus and model: a refusal stays one line on stderr.
    table = Table(title="charrnn train" + (" (resumed)" if checkpoint else ""), box=None)
    table.add_column("setting", style="cyan")
    table.add_column("value")
    for config in (model_config, train_config):
        for key, value in config_module.to_dict(config).items():
            table.add_row(key, str(value))
    err.print(table)
    err.print(
        f"{trainer.data.corpus_path.name}: {len(trainer.data.train):,} training and "
        f"{len(trainer.data.val):,} validation characters, vocabulary {len(trainer.vocab)}; "
        f"model {model_config.cell} with {count_parameters(trainer.model):,} parameters on "
        f"{trainer.device}; run directory {trainer.run_dir}"
    )

    def on_signal(signum, frame) -> None:
        if stop.requested:  # a second one, while it saves: out now (the old file stays whole)
            raise KeyboardInterrupt if signum == signal.SIGINT else Terminated
        stop.request(signum)  # the first: finish the step, save, and say how to resume

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = trainer.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    _summary(result)
    if result.stopped_by == "signal":
        err.print(f"stopped by signal; resume with: charrnn train --resume {result.run_dir}")
        interrupted = result.signal == signal.SIGINT
        raise typer.Exit(code=EXIT_INTERRUPTED if interrupted else EXIT_TERMINATED)


def _above_bar(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def _summary(result) -> None:
    from charrnn.cli.common import loss_text

    table = Table(title="run summary", box=None, show_header=False)
    table.add_column(style="cyan")
    table.add_column()
    table.add_row("steps", f"{result.step:,} ({result.epoch:.2f} epochs)")
    table.add_row("time", f"{result.seconds:,.1f} s")
    if result.best_val_loss is not None:
        table.add_row("best val loss", loss_text(result.best_val_loss))
    if result.final_val_loss is not None:
        table.add_row("final val loss", f"{result.final_val_loss:.4f} nats/char")
    table.add_row("checkpoints", f"{result.run_dir}/best.pt, {result.run_dir}/last.pt")
    table.add_row("sample with", f"charrnn sample {result.run_dir}")
    for warning in result.checkpoint_warnings:
        table.add_row("warning", warning)
    err.print(table)
