"""Data-parallel training: row sharding, torchrun runs that match one process, resume, refusals."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from charrnn import checkpoint as ckpt
from charrnn import config
from charrnn.checkpoint import resume_configs
from charrnn.distributed import World, threads_per_process
from charrnn.errors import ConfigError
from charrnn.train import Trainer
from tests.conftest import TINY_FLAGS, run_cli
from tests.no_pickles import OBJECT_COLLECTIVES, PickleExchanged, forbid_pickles

# Same global batch on one or two processes; fp32 and no dropout, so the curves can match.
EXACT_FLAGS = (*TINY_FLAGS, "--precision", "fp32", "--dropout", "0", "--eval-every", "10")
STEPS = 40


def child_env() -> dict[str, str]:
    """Taken when a child starts: after conftest has pointed $CHARRNN_CACHE at the session's."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


TIMEOUT = 300  # seconds; a run takes a few, but a loaded CI machine can be slow to start torch
# The ranks these tests start run charrnn with torch's object collectives made to fail.
NO_PICKLES = str(Path(__file__).with_name("no_pickles.py"))


def tiny_configs(corpus, **overrides):
    values = dict(corpus=str(corpus), threads=1, hidden_size=32, batch_size=4, seq_length=16,
                  precision="fp32", dropout=0.0, eval_every=10, max_steps=STEPS)  # fmt: skip
    values.update(overrides)
    return config.resolve("tiny", values)


def torchrun(*args, nproc: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", NO_PICKLES, *map(str, args)]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=child_env(), timeout=TIMEOUT)


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_curve(ours: list[dict], theirs: list[dict]) -> None:
    assert [m["step"] for m in ours] == [m["step"] for m in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-9)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5), a["step"]
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5), a["step"]


def assert_same_weights(path_a, path_b) -> None:
    a = torch.load(path_a, weights_only=True)
    b = torch.load(path_b, weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-5)
    for h_a, h_b in zip(a["hidden_state"], b["hidden_state"], strict=True):
        torch.testing.assert_close(h_a, h_b, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, shakespeare_text):
    """A tiny run trained by torchrun on 2 gloo processes, and its corpus."""
    folder = tmp_path_factory.mktemp("two-processes")
    corpus = folder / "corpus.txt"
    corpus.write_text(shakespeare_text, encoding="utf-8")
    run = folder / "run"
    result = torchrun("train", *EXACT_FLAGS, "--corpus", corpus, "--out", run,
                      "--max-steps", STEPS)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return run, corpus


def test_rows_are_split_into_contiguous_disjoint_blocks():
    blocks = [World(rank=r, size=4).rows(12) for r in range(4)]
    assert [list(range(12))[b] for b in blocks] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    with pytest.raises(ConfigError, match="batch_size 10 cannot be split evenly over 4.*12"):
        World(rank=0, size=4).rows(10)


def test_processes_on_one_machine_share_its_cores():
    cores = len(os.sched_getaffinity(0))
    for processes in (1, 2, 3, cores, 2 * cores):
        threads = threads_per_process(processes)
        assert threads >= 1
        assert threads * processes <= max(cores, processes)
    assert threads_per_process(1) == cores


def test_nproc_refuses_a_batch_that_does_not_split(tmp_path, corpus_file):
    result = run_cli("train", *TINY_FLAGS, "--corpus", corpus_file, "--out", tmp_path / "run",
                     "--nproc", 3)  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: batch_size 4 cannot be split")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_processes_follow_the_single_process_curve(tmp_path, two_process_run):
    run, corpus = two_process_run
    Trainer(*tiny_configs(corpus), tmp_path / "one").run()
    assert_same_curve(metrics(run), metrics(tmp_path / "one"))
    # Same weights, and the hidden state of all 4 rows, gathered from both ranks in row order.
    assert_same_weights(run / "last.pt", tmp_path / "one" / "last.pt")
    saved = ckpt.load(run, prefer=("last.pt",))
    assert saved["progress"]["step"] == STEPS
    assert [h.shape for h in saved["hidden_state"]] == [(1, 4, 32), (1, 4, 32)]
    sampled = run_cli("sample", run, "--length", 30, "--seed", 1)
    assert sampled.exit_code == 0, sampled.output
    assert len(sampled.stdout) > 30


@pytest.mark.slow
def test_a_two_process_run_resumes_on_one(tmp_path, two_process_run):
    run, corpus = two_process_run
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    saved = ckpt.load(resumed, prefer=("last.pt",))
    Trainer(*resume_configs(saved, {"max_steps": 60}), resumed, resume=saved).run()

    reference = tmp_path / "one"
    Trainer(*tiny_configs(corpus), reference).run()
    saved = ckpt.load(reference, prefer=("last.pt",))
    Trainer(*resume_configs(saved, {"max_steps": 60}), reference, resume=saved).run()

    assert [m["step"] for m in metrics(resumed)][-2:] == [50, 60]
    assert_same_curve(metrics(resumed), metrics(reference))
    assert_same_weights(resumed / "last.pt", reference / "last.pt")


@pytest.mark.slow
def test_nproc_resumes_on_two_processes_and_they_stop_together(tmp_path, corpus_file):
    run = tmp_path / "run"
    Trainer(*tiny_configs(corpus_file), run).run()
    before = ckpt.load(run, prefer=("last.pt",))["progress"]["seconds"]
    # --max-time: each process has its own clock, yet all must stop after the same step. Nothing
    # here depends on how many steps fit in the time (a loaded machine may fit only one): the
    # loop always takes a step before it looks at the clock, and it stops on the clock alone.
    command = [sys.executable, "-m", "charrnn", "train", "--resume", str(run), "--nproc", "2",
               "--max-steps", "0", "--max-time", "1", "--eval-every", "0"]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, env=child_env(), timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stderr
    progress = ckpt.load(run, prefer=("last.pt",))["progress"]
    assert progress["step"] > STEPS
    assert progress["budget_steps"] is None  # --max-steps 0: the time is the only budget
    assert progress["budget_seconds"] == pytest.approx(before + 1)
    assert progress["seconds"] >= progress["budget_seconds"]  # it stopped because time was up
    assert metrics(run)[-1]["step"] == progress["step"]  # rank 0's last line: the common step
    saved = ckpt.load(run, prefer=("last.pt",))
    assert [h.shape for h in saved["hidden_state"]] == [(1, 4, 32), (1, 4, 32)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_ranks_that_read_different_texts_stop_with_one_error_line(tmp_path, corpus_file):
    other = tmp_path / "other.txt"
    other.write_text(corpus_file.read_text().replace("the", "thy"))
    # As torchrun starts its workers, but each with its own corpus, as on two machines.
    world = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2",
             "LOCAL_WORLD_SIZE": "2"}  # fmt: skip
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                NO_PICKLES,
                "train",
                *TINY_FLAGS,
                "--corpus",
                str(corpus),
                "--out",
                str(tmp_path / "run"),
            ],
            env={**child_env(), **world, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank, corpus in enumerate((corpus_file, other))
    ]
    (_, rank0_err), (rank1_out, rank1_err) = (p.communicate(timeout=TIMEOUT) for p in processes)
    assert [p.returncode for p in processes] == [1, 1]
    errors = [line for line in rank0_err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, rank0_err
    assert "rank 1" in errors[0] and "corpus" in errors[0]
    assert "Traceback" not in rank0_err + rank1_err
    assert rank1_out == rank1_err == ""  # rank 0 speaks for the machine
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_ranks_exchange_only_tensors(two_process_run):
    """The two-process run trained (its ranks agreeing on text and settings, then on every
    step) in processes where every object collective raises (tests/no_pickles.py); so did the
    run refused above, its message intact."""
    run, _ = two_process_run
    assert ckpt.load(run, prefer=("last.pt",))["progress"]["step"] == STEPS


def test_the_harness_refuses_every_object_exchange(monkeypatch):
    forbid_pickles(monkeypatch.setattr)
    for name in OBJECT_COLLECTIVES:
        with pytest.raises(PickleExchanged):
            getattr(dist, name)([1], [1])
    with pytest.raises(PickleExchanged):
        dist.distributed_c10d._tensor_to_object(torch.zeros(1), 1)


def start_alone(rank: int, tmp_path, corpus_file, port: int) -> subprocess.CompletedProcess:
    """One rank of a run of two, started without the other."""
    world = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
             "LOCAL_WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank)}  # fmt: skip
    # `-m charrnn`: no collective runs, and torch must not be imported before charrnn quiets
    # its C++ logging (the harness imports it first).
    command = [sys.executable, "-m", "charrnn", "train", *TINY_FLAGS, "--corpus",
               str(corpus_file), "--out", str(tmp_path / "run"), "--init-timeout", "3"]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env={**child_env(), **world},
                          timeout=TIMEOUT)  # fmt: skip


@pytest.mark.slow
def test_a_start_up_that_never_completes_times_out_naming_who_did_not_come(tmp_path, corpus_file):
    port = free_port()
    alone = start_alone(0, tmp_path, corpus_file, port)
    assert alone.returncode == 1, alone.stderr
    assert alone.stderr.strip().splitlines() == [
        "error: only 1 of the 2 processes of this run came within --init-timeout 3 s: rank 0 "
        f"waited at 127.0.0.1:{port} and rank 1 did not come; start every rank, or raise "
        "--init-timeout"
    ]
    lost = start_alone(1, tmp_path, corpus_file, free_port())
    assert lost.returncode == 1, lost.stderr
    lines = lost.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: rank 1 could not reach rank 0"), lines
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("WORLD_SIZE", "two", "WORLD_SIZE='two' is not a number"),
        ("RANK", "", "RANK='' is not a number"),
        ("RANK", "5", "RANK=5 must be in 0..1 (WORLD_SIZE=2)"),
    ],
)
def test_a_torchrun_environment_that_is_not_numbers_is_one_line(
    tmp_path, corpus_file, monkeypatch, variable, value, message
):
    world = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}
    for name, number in {**world, variable: value}.items():
        monkeypatch.setenv(name, number)
    result = run_cli("train", *TINY_FLAGS, "--corpus", corpus_file, "--out", tmp_path / "run")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a child process
def test_a_world_size_that_is_not_a_number_ends_the_process_in_one_line(tmp_path):
    env = {**child_env(), "WORLD_SIZE": "many"}
    done = subprocess.run([sys.executable, "-m", "charrnn", "train", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=TIMEOUT)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: WORLD_SIZE='many' is not a number; torchrun sets it (or set it to a whole number)"
    ]
