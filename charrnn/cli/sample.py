"""`charrnn sample`: write text with a trained model; the text alone goes to stdout."""

import itertools
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from charrnn import config
from charrnn.cli import settings
from charrnn.cli.common import err


@settings.declared_options(list(config.fields_of(config.SampleConfig)), config.SampleConfig)
def sample(
    checkpoint: Annotated[
        str | None,
        typer.Argument(help="A .pt file or a run directory.", show_default="the newest run"),
    ] = None,
    prime: Annotated[str | None, typer.Option("--prime", "-p", help="Text to start from.")] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out-dir", help="Write sample-N.txt files here instead of stdout."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace sample-N.txt files that exist in --out-dir.")
    ] = False,
    skip_unknown: Annotated[
        bool, typer.Option("--skip-unknown", help="Drop prime characters the model never saw.")
    ] = False,
    device: settings.option("device") = "auto",
    int8: Annotated[
        bool | None,
        typer.Option(
            "--int8/--exact",
            help="int8 weights (~2x faster at batch 1) or exact fp32 "
            "[default: int8 on a CPU for models of 256+ units]",
            show_default=False,
        ),
    ] = None,
    threads: settings.option("threads", shown_default="by batch and model size") = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Say what was loaded, on stderr.")
    ] = False,
    **sampling: Any,
) -> None:
    """Write text with a trained model; the text alone goes to stdout."""
    from charrnn import files, rundir
    from charrnn.machine import available_cores
    from charrnn.sample import load_model

    settings.check(device=device, threads=threads)
    chosen = config.build(config.SampleConfig, settings.typed(sampling))
    length, num_samples = chosen.length, chosen.num_samples
    targets = [out_dir / f"sample-{n}.txt" for n in range(1, num_samples + 1)] if out_dir else []
    files.check_outputs(targets, force, create_folder=True)  # before the work, not after it
    checkpoint = checkpoint if checkpoint is not None else str(rundir.latest())
    threads = available_cores() if threads == 0 else threads  # the declared "0 = all cores"
    generator = load_model(checkpoint, device, int8=int8, threads=threads)
    options = dict(temperature=chosen.temperature, top_k=chosen.top_k, top_p=chosen.top_p,
                   greedy=chosen.greedy, seed=chosen.seed, skip_unknown=skip_unknown)  # fmt: skip
    started = time.perf_counter()
    if num_samples == 1 and out_dir is None:
        # Stream: the prime, then each character as soon as it exists.
        first = generator.clean_prime(prime, skip_unknown)
        _write(itertools.chain([first], generator.stream(first, length, **options), ["\n"]))
    else:
        texts = generator.generate(prime, length, num_samples=num_samples, **options)
        texts = [texts] if isinstance(texts, str) else texts
        if out_dir is not None:
            files.make_folder(out_dir)
            files.write_texts(dict(zip(targets, texts, strict=True)))  # all of them, or none
        else:
            _write(f"{'' if n == 1 else chr(10)}==> sample {n} <==\n{text}\n"
                   for n, text in enumerate(texts, 1))  # fmt: skip
    if verbose or sys.stderr.isatty():
        seconds = time.perf_counter() - started
        err.print(
            f"[dim]{num_samples} x {length} characters in {seconds:.2f} s "
            f"({num_samples * length / max(seconds, 1e-9):,.0f} chars/s) from {checkpoint}[/dim]"
        )


def _write(parts: Iterable[str]) -> None:
    """Each part to stdout as soon as it exists (a generator's characters stream out)."""
    for part in parts:
        sys.stdout.write(part)
        sys.stdout.flush()
