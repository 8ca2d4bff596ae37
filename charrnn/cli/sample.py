"""`charrnn sample`: write text with a trained model; the text alone goes to stdout.

Four ways out: one sample streams to stdout as it is written; several are printed one after
another (or written to --out-dir); --json prints one JSON object a line per sample; and
--interactive (charrnn/cli/interactive.py) takes primes from the terminal.
"""

import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from charrnn import config, files, use_config
from charrnn.cli import settings
from charrnn.cli.common import INT8, RUN_TO_USE, err, note_stops_never_written, print_json
from charrnn.errors import ConfigError


@settings.declared_options(list(config.fields_of(use_config.SampleConfig)), use_config.SampleConfig)
def sample(
    checkpoint: RUN_TO_USE = None,
    prime: Annotated[str | None, typer.Option("--prime", "-p", help="Text to start from.")] = None,
    prime_file: Annotated[
        Path | None,
        typer.Option(
            "--prime-file",
            help="Start from this UTF-8 file's text, of any length (read through the model in "
            "chunks: memory does not grow with it).",
        ),
    ] = None,
    echo: Annotated[
        bool,
        typer.Option(
            "--echo/--no-echo",
            help="Write the prime before the new text (a --prime-file is copied through as it "
            "is read; in --json, the prime field); --no-echo: only the new text, prime null.",
        ),
    ] = True,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out-dir", help="Write sample-N.txt files here instead of stdout."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace sample-N.txt files that exist in --out-dir.")
    ] = False,
    json_lines: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object a line per sample on stdout: text (the new text), prime, "
            "seed, settings, mean_log_prob (of the new characters, under the model at "
            "temperature 1), stopped (length or stop).",
        ),
    ] = False,
    interactive: Annotated[
        bool,
        typer.Option(
            "--interactive",
            "-i",
            help="A prompt on the terminal: each line is a prime, its continuation streams out; "
            "/help lists the commands that change settings; Ctrl-C stops a continuation, "
            "Ctrl-D leaves.",
        ),
    ] = False,
    skip_unknown: Annotated[
        bool, typer.Option("--skip-unknown", help="Drop prime characters the model never saw.")
    ] = False,
    device: settings.option("device") = "auto",
    int8: INT8 = None,
    threads: settings.option("threads", shown_default="by batch and model size") = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Say what was loaded, on stderr.")
    ] = False,
    **sampling: Any,
) -> None:
    """Write text with a trained model; the text alone goes to stdout.

    Stop strings (--stop, repeatable) end a sample at the first one it writes, which is kept at
    the end of its text; they are looked for in the new text only, not in the prime.
    """
    from charrnn import rundir
    from charrnn.generation import check_fits
    from charrnn.machine import available_cores
    from charrnn.sample import load_model
    from charrnn.stops import StopStrings

    settings.check(device=device, threads=threads)
    given = settings.typed(sampling)
    chosen = config.build(use_config.SampleConfig, given)
    StopStrings(chosen.stop)  # an empty one is refused before anything is loaded or written
    _refuse_combinations(given, prime, prime_file, out_dir, json_lines, interactive)
    if force and out_dir is None:
        raise ConfigError("--force replaces sample files in --out-dir, so without --out-dir it "
                          "would do nothing; add --out-dir or leave out --force")  # fmt: skip
    check_fits(chosen.num_samples, chosen.length)  # before a million output paths are checked
    if out_dir is not None:  # before the work, not after it
        outputs = sample_files(out_dir, chosen.num_samples)
        if prime_file is not None:  # --force must not write over the prime being read
            for path in outputs:
                files.refuse_replacing_inputs(path, "--out-dir's", {"the --prime-file": prime_file},
                                              ConfigError, "another --out-dir")  # fmt: skip
        files.check_outputs(outputs, force, create_folder=True)
    checkpoint = checkpoint if checkpoint is not None else str(rundir.latest())
    threads = available_cores() if threads == 0 else threads  # the declared "0 = all cores"
    generator = load_model(checkpoint, device, int8=int8, threads=threads)
    note_stops_never_written(chosen.stop, generator.vocab)
    if interactive:
        from charrnn.cli.interactive import session

        session(generator, chosen, skip_unknown)
        return
    priming = generator.read_prime(prime, path=prime_file, skip_unknown=skip_unknown)
    started = time.perf_counter()
    options = config.to_dict(chosen)
    length = options.pop("length")
    if chosen.num_samples == 1 and out_dir is None and not json_lines:
        # Stream: the prime as it is read, then each character as soon as it exists.
        if echo:
            _write(priming)
        else:
            priming.read()
        generation = generator.generation(priming.context, length, **options, score=False)
        _write(pieces[0] for pieces in generation)
        _write("\n")
    else:
        generation = generator.generation(priming.read(), length, **options, score=json_lines)
        for _ in generation:
            pass
        _show(generation, priming, chosen, echo, out_dir, json_lines, generator)
    if verbose and generator.compiled_why_not:
        err.print(f"[dim]the compiled int8 step is not used: {generator.compiled_why_not}[/dim]")
    if verbose or sys.stderr.isatty():
        seconds = time.perf_counter() - started
        written = sum(len(text) for text in generation.texts)
        err.print(
            f"[dim]{written} new characters in {seconds:.2f} s "
            f"({written / max(seconds, 1e-9):,.0f} chars/s, {generator.sampler} step) from "
            f"{checkpoint}, seed {generation.seed}[/dim]"
        )


def _refuse_combinations(given, prime, prime_file, out_dir, json_lines, interactive) -> None:
    """Options that would be ignored beside others: one of them is a mistake, so say which.
    `given`: the sampling settings typed (the others are None, so they cannot be mistaken)."""
    use_config.check_greedy(given, spell=lambda name: f"--{name.replace('_', '-')}")
    if prime is not None and prime_file is not None:
        raise ConfigError("give --prime or --prime-file, not both")
    if json_lines and out_dir is not None:
        raise ConfigError("--json writes to stdout; leave out --out-dir")
    if interactive:
        typed = {"--prime": prime is not None, "--prime-file": prime_file is not None,
                 "--out-dir": out_dir is not None, "--json": json_lines,
                 "--num-samples": given.get("num_samples", 1) != 1}  # fmt: skip
        left_out = [flag for flag, was_typed in typed.items() if was_typed]
        if left_out:
            raise ConfigError(
                f"--interactive takes its primes from the terminal, one sample at a time; "
                f"leave out {', '.join(left_out)}"
            )


def _show(generation, priming, chosen, echo, out_dir, json_lines, generator) -> None:
    """The finished samples: JSON lines, files in out_dir (all of them or none, each whole), or
    one after another on stdout."""
    samples = generation.samples()
    if json_lines:
        prime = "".join(priming.pieces()) if echo else None
        used = config.to_dict(chosen) | {"seed": generation.seed, "int8": generator.int8,
                                         "sampler": generator.sampler}  # fmt: skip
        for one in samples:
            print_json({"text": one.text, "prime": prime, "seed": generation.seed,
                        "settings": used, "mean_log_prob": one.mean_log_prob,
                        "stopped": one.stopped})  # fmt: skip
        return

    def prime_pieces() -> Iterable[str]:  # read afresh for each sample: a file is never whole
        return priming.pieces() if echo else ()

    if out_dir is not None:

        def writer(text: str):
            def write(file) -> None:
                for piece in prime_pieces():
                    file.write(piece.encode("utf-8"))
                file.write(text.encode("utf-8"))

            return write

        files.make_folder(out_dir)
        paths = sample_files(out_dir, len(samples))
        files.write_all({path: writer(one.text) for path, one in zip(paths, samples, strict=True)})
        # Nothing went to stdout: say where the text went, and the seed that writes it again.
        named = str(paths[0]) if len(paths) == 1 else f"{paths[0]} .. {paths[-1].name}"
        err.print(Text(f"wrote {named} (seed {generation.seed})"))
        return
    for n, one in enumerate(samples, 1):
        _write(f"{'' if n == 1 else chr(10)}==> sample {n} <==\n")
        _write(prime_pieces())
        _write(one.text + "\n")


def sample_files(out_dir: Path, count: int) -> list[Path]:
    return [out_dir / f"sample-{n}.txt" for n in range(1, count + 1)]


# Streamed text is flushed at most this often: it still looks live, and a fast sampler is not
# held to one system call a character.
FLUSH_SECONDS = 0.02


def _write(parts: Iterable[str] | str) -> None:
    """Each part to stdout as it exists (a generator's characters stream out), flushed at most
    every FLUSH_SECONDS and once at the end, also when interrupted."""
    flushed = time.monotonic()
    try:
        for part in [parts] if isinstance(parts, str) else parts:
            sys.stdout.write(part)
            now = time.monotonic()
            if now - flushed >= FLUSH_SECONDS:
                sys.stdout.flush()
                flushed = now
    finally:
        sys.stdout.flush()
