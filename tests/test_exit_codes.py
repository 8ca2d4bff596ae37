"""One place maps every error to one line and an exit code: 1 errors, 2 usage, 130 Ctrl-C,
143 SIGTERM; --debug (or CHARRNN_DEBUG=1) shows the traceback instead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from charrnn import insight
from tests.conftest import run_cli


def charrnn(*args, **popen):
    return subprocess.Popen([sys.executable, "-m", "charrnn", *map(str, args)], **popen)


def test_an_unexpected_error_is_one_line_naming_it_and_debug_shows_the_traceback(
    monkeypatch, tmp_path
):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(insight, "list_runs", broken)
    result = run_cli("runs", tmp_path)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: unexpected ZeroDivisionError: division by zero (run `charrnn --debug ...` for "
        "the traceback and report it)"
    ]
    with pytest.raises(ZeroDivisionError):
        run_cli("--debug", "runs", tmp_path)


@pytest.mark.slow  # a child process: a few seconds of start-up
def test_charrnn_debug_in_the_environment_shows_the_traceback(tmp_path):
    env = {**os.environ, "CHARRNN_DEBUG": "1"}
    done = subprocess.run([sys.executable, "-m", "charrnn", "sample", tmp_path / "nothing"],
                          capture_output=True, text=True, env=env)  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "CheckpointError" in done.stderr
    quiet = subprocess.run([sys.executable, "-m", "charrnn", "sample", tmp_path / "nothing"],
                           capture_output=True, text=True)  # fmt: skip
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert len(quiet.stderr.strip().splitlines()) == 1


def test_usage_errors_exit_2():
    assert run_cli("sample", "--no-such-flag").exit_code == 2


@pytest.mark.slow  # a child process: a few seconds of start-up
def test_a_closed_pipe_ends_sampling_quietly(tiny_run):
    process = charrnn("sample", tiny_run, "-n", 1_000_000, "--exact",
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert len(process.stdout.read(100)) == 100
    process.stdout.close()  # like `| head -c 100`
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0
    assert stderr == b""


@pytest.mark.slow  # child processes: a few seconds of start-up each
@pytest.mark.parametrize(
    "args",
    [("inspect", "RUN"), ("sample", "RUN", "-n", "2000", "-m", "3", "--json"), ("train", "--help")],
    ids=["inspect", "sample --json", "train --help"],
)
def test_a_closed_pipe_ends_output_drawn_by_rich_quietly(tiny_run, args):
    """rich (tables, JSON, typer's help) exits 1 on a closed pipe unless charrnn's Consoles hand
    it to `guarded`: the reader here is gone before the command writes its first byte."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head -2` that has already exited
    try:
        args = [tiny_run if arg == "RUN" else arg for arg in args]
        process = charrnn(*args, stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    _, stderr = process.communicate(timeout=120)
    assert (process.returncode, stderr) == (0, b"")


@pytest.mark.slow  # a child process: a few seconds of start-up
def test_a_full_output_is_one_line_and_exit_1(tiny_run):
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "charrnn", "sample", tiny_run, "-n", "50"],
                              stdout=full, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: No space left on device (writing the output?)"
    ]


@pytest.mark.slow  # a child process: a few seconds of start-up
def test_sigterm_exits_143_with_one_line(tiny_run):
    process = charrnn("sample", tiny_run, "-n", 10_000_000, "--exact",
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert process.stdout.read(10)  # it is generating: the handler is in place
    process.send_signal(signal.SIGTERM)
    process.stdout.close()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143
    assert stderr.decode().strip() == "terminated"
