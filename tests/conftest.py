"""Shared fixtures: small real text, a seed, and a helper to drive the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from charrnn.cli import app

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"
TINY_SHAKESPEARE = SHARED / "tinyshakespeare.txt"


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
    """The first 60,000 characters of Tiny Shakespeare (read from ../shared, never copied)."""
    return TINY_SHAKESPEARE.read_text(encoding="utf-8")[:60_000]


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
