"""Shared fixtures: small real text, a seed, and a helper to drive the CLI.

Everything the tests read is in the repository (the bundled corpus, or text they write): the
suite passes in a fresh clone with nothing beside it. Nothing reaches the user's cache either.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings
from typer.testing import CliRunner

from charrnn import cache, machine
from charrnn.cli import app
from charrnn.corpus import read_text

SLICE_CHARS = 60_000

# No clock in the property tests: hypothesis's per-example deadline and its "data generation is
# too slow" check both fail a correct test on a loaded machine.
settings.register_profile("charrnn", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("charrnn")


def play_text(chars: int = SLICE_CHARS) -> str:
    """Act II of Romeo and Juliet from the bundled corpus, cut after the last whole speech.

    59,957 characters of play text: speaker lines, verse, stage directions; 65 distinct
    characters (ASCII, no double quotes). Found by its headings, not by an offset, so a rebuilt
    corpus still gives the same scenes.
    """
    text = read_text("shakespeare")
    play = text.index("ROMEO AND JULIET\n\nby William Shakespeare")
    start = text.index("\nACT II.\n", play) + 1
    window = text[start : start + chars]
    return window[: window.rindex("\n\n") + 1]


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """The fast loop (`-m "not slow"`) runs on two processes where pytest-xdist is installed (the
    `test` extra has it) and two cores are free to this process: on a slow 2-core machine ~45 s
    instead of ~90. Each test sets torch to one thread (below), so the two do not stall each
    other. `-n 0` runs it in one process; every other selection (the full suite, CI) runs in one
    process as it always did, beside the end-to-end tests' own child processes."""
    if (
        config.option.markexpr == "not slow"
        and config.pluginmanager.hasplugin("xdist")
        and getattr(config.option, "numprocesses", None) is None  # -n not given
        and not hasattr(config, "workerinput")  # not a worker itself
        and machine.available_cores() >= 2
    ):
        config.option.numprocesses = 2


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Point $CHARRNN_CACHE (for this process and every child) at a fresh temporary folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(cache.ENV_VAR, str(tmp_path_factory.mktemp("charrnn-cache", numbered=False)))
        yield


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    # Two cores: one thread keeps tests from stalling each other at torch's barriers.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shakespeare_text() -> str:
    """About 60,000 characters of a play from the bundled corpus (see play_text)."""
    return play_text()


@pytest.fixture
def corpus_file(tmp_path: Path, shakespeare_text: str) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(shakespeare_text, encoding="utf-8")
    return path


def run_cli(*args: str):
    """Invoke the CLI in-process; returns the click Result (stdout and stderr kept apart)."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


TINY_FLAGS = (
    "--config", "tiny", "--threads", "1", "--hidden-size", "32", "--batch-size", "4",
    "--seq-length", "16",
)  # fmt: skip


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, shakespeare_text) -> Path:
    """A trained tiny run directory, shared by the sampling and inspection tests."""
    folder = tmp_path_factory.mktemp("tiny-run")
    corpus = folder / "corpus.txt"
    corpus.write_text(shakespeare_text, encoding="utf-8")
    run = folder / "run"
    result = run_cli("train", *TINY_FLAGS, "--corpus", corpus, "--out", run, "--max-steps", 80)
    assert result.exit_code == 0, result.output
    return run
