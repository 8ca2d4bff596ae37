"""`charrnn inspect` and `charrnn runs`: the facts agree with the checkpoint and metrics file."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import torch

from charrnn.textplot import line_chart
from tests.conftest import run_cli


def test_inspect_json_agrees_with_the_checkpoint_and_metrics(tiny_run):
    result = run_cli("inspect", tiny_run, "--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)

    saved = torch.load(tiny_run / "last.pt", weights_only=True)
    metrics = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert facts["checkpoint"] == str(tiny_run / "last.pt")
    assert facts["vocab"] == saved["vocab"]
    assert facts["vocab_size"] == len(saved["vocab"])
    assert facts["parameters"] == sum(tensor.numel() for tensor in saved["model"].values())
    assert sum(facts["parameters_by_part"].values()) == facts["parameters"]
    assert facts["step"] == saved["progress"]["step"] == metrics[-1]["step"]
    assert facts["best_val_loss"] == saved["progress"]["best_val_loss"]
    assert facts["best_val_loss"] == min(line["val_loss"] for line in metrics)
    assert math.isclose(facts["best_val_bpc"], facts["best_val_loss"] / math.log(2))
    assert facts["last_val_loss"] == metrics[-1]["val_loss"]
    assert facts["metrics"] == metrics
    assert facts["cell"] == saved["model_config"]["cell"] == "lstm"
    assert facts["hidden_size"] == 32
    assert facts["corpus"] == saved["corpus_path"]


def test_inspect_without_a_recorded_corpus_file_names_the_corpus_setting(tmp_path, tiny_run):
    # A checkpoint whose corpus_path is empty (found by the fuzz test): the corpus setting, a
    # tuple of names, is shown joined instead of failing as an unexpected error.
    saved = torch.load(tiny_run / "last.pt", weights_only=True)
    saved["corpus_path"] = ""
    run = tmp_path / "run"
    run.mkdir()
    torch.save(saved, run / "last.pt")
    for args in (("--json",), ()):
        result = run_cli("inspect", run / "last.pt", *args)
        assert result.exit_code == 0, result.output
    facts = json.loads(run_cli("inspect", run / "last.pt", "--json").stdout)
    assert facts["corpus"] == ", ".join(saved["train_config"]["corpus"])
    assert facts["corpus"] in run_cli("inspect", run / "last.pt").stdout


def test_inspect_draws_the_facts_and_the_curves(tiny_run):
    result = run_cli("inspect", tiny_run / "best.pt")
    assert result.exit_code == 0, result.output
    saved = torch.load(tiny_run / "best.pt", weights_only=True)
    text = result.stdout
    assert f"{len(saved['vocab'])} characters" in text
    assert "↵␣" in text  # newline and space, made visible, first in the sorted vocabulary
    assert f"{saved['progress']['best_val_loss']:.4f} nats/char" in text
    assert "• train" in text and "◆ val" in text
    chart = text[text.index("against step") :]
    assert chart.count("◆") > 10 and chart.count("•") > 10  # curves, not single points


def test_runs_lists_runs_side_by_side_and_names_broken_ones(tmp_path, tiny_run):
    folder = tmp_path / "checkpoints"
    shutil.copytree(tiny_run, folder / "first")
    shutil.copytree(tiny_run, folder / "second")
    (folder / "broken").mkdir()
    (folder / "broken" / "last.pt").write_bytes(b"not a checkpoint")
    (folder / "not-a-run").mkdir()

    result = run_cli("runs", folder, "--json")
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    assert sorted(run["run"] for run in listing["runs"]) == ["first", "second"]
    assert list(listing["unreadable"]) == ["broken"]
    assert "skipped broken" in result.stderr

    table = run_cli("runs", folder)
    assert table.exit_code == 0, table.output
    saved = torch.load(tiny_run / "last.pt", weights_only=True)
    thousands = sum(tensor.numel() for tensor in saved["model"].values()) / 1000
    for word in (
        "first",
        "second",
        "lstm",
        "1x32",
        f"{thousands:.1f}k",
        str(saved["progress"]["step"]),
    ):
        assert word in table.stdout
    # `inspect` on a folder of runs lists them too.
    assert "second" in run_cli("inspect", folder).stdout


def test_runs_in_an_empty_folder_is_one_clean_error(tmp_path):
    result = run_cli("runs", tmp_path)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no runs in") and len(result.stderr.splitlines()) == 1


def killed_before_its_first_save(run: Path, tiny_run: Path) -> Path:
    """What `charrnn train` leaves when stopped before its first checkpoint."""
    run.mkdir(parents=True)
    shutil.copy(tiny_run / "config.toml", run / "config.toml")
    (run / ".lock").write_text("12345\n")
    (run / "metrics.jsonl").write_text("")
    return run


def test_runs_says_what_a_path_is_when_it_is_not_a_folder_of_runs(tmp_path, tiny_run,
                                                                   monkeypatch):  # fmt: skip
    # Each of these said "no runs in ...; train one with `charrnn train` or name a folder of runs".
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_run, Path("runs/r1"))
    killed_before_its_first_save(Path("runs/killed"), tiny_run)
    Path("a.txt").write_text("text")
    Path("model.pt").write_bytes(b"")
    os.mkfifo("fifo")
    Path("empty").mkdir()
    expected = {
        "runs/r1": "'runs/r1' is a run, not a folder of runs: `charrnn inspect runs/r1` describes "
        "it, `charrnn runs runs` lists the runs beside it",
        "a.txt": "'a.txt' is a file, not a folder of runs",
        "model.pt": "'model.pt' is a file, not a folder of runs; `charrnn inspect model.pt` "
        "describes it",
        "fifo": "'fifo' is not a folder; name a folder of runs",
        "nonexist": "'nonexist' does not exist; train a run with `charrnn train` (it writes runs "
        "under checkpoints/) or name a folder of runs",
        "runs/killed": "'runs/killed' is a run with no checkpoint yet (still training, or stopped "
        "before its first save), not a folder of runs",
        "empty": "no runs in 'empty'; train one with `charrnn train` or name a folder of runs",
    }
    for path, message in expected.items():
        result = run_cli("runs", path)
        assert result.exit_code == 1, (path, result.output)
        assert result.stderr.strip().splitlines() == [f"error: {message}"], path
        assert result.stdout == ""


def test_runs_names_a_run_killed_before_its_first_checkpoint(tmp_path, tiny_run):
    folder = tmp_path / "checkpoints"
    shutil.copytree(tiny_run, folder / "first")
    killed_before_its_first_save(folder / "killed", tiny_run)
    skipped = "skipped killed: no checkpoint yet (still training, or stopped before its first save)"

    table = run_cli("runs", folder)
    assert table.exit_code == 0, table.output
    assert "first" in table.stdout and "killed" not in table.stdout
    assert table.stderr.strip().splitlines() == [skipped]
    listing = run_cli("runs", folder, "--json")
    assert listing.exit_code == 0, listing.output
    facts = json.loads(listing.stdout)
    assert [run["run"] for run in facts["runs"]] == ["first"]
    assert (facts["unreadable"], facts["not_saved_yet"]) == ({}, ["killed"])
    shutil.rmtree(folder / "first")  # the killed run alone: listed as skipped, not "no runs"
    alone = run_cli("runs", folder)
    assert alone.exit_code == 0, alone.output
    assert alone.stderr.strip().splitlines() == [skipped]
    assert alone.stdout.strip() == "no run has a checkpoint yet"


def test_runs_where_no_run_can_be_read_fails_after_saying_why(tmp_path, tiny_run):
    folder = tmp_path / "checkpoints"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        (folder / name / "last.pt").write_bytes(b"not a checkpoint")
    for flags in ((), ("--json",)):
        result = run_cli("runs", folder, *flags)
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert [line.split(":")[0] for line in lines[:2]] == ["skipped a", "skipped b"]
        assert lines[2].startswith("error: none of the 2 run(s) in") and len(lines) == 3
        assert "`charrnn inspect RUN` says more of one" in lines[2]
    assert json.loads(result.stdout)["unreadable"].keys() == {"a", "b"}  # --json still says it
    killed_before_its_first_save(folder / "training", tiny_run)  # one still training: no error
    assert run_cli("runs", folder).exit_code == 0


def test_line_chart_places_points_on_their_rows_and_columns():
    lines = line_chart({"loss": [(0.0, 4.0), (10.0, 2.0)]}, {"loss": "*"}, width=11, height=5)
    plot = [line.split("│", 1)[1] for line in lines[:5]]
    assert plot[0][0] == "*" and plot[4][10] == "*"  # top left to bottom right
    assert plot[2][5] == "*"  # halfway along, halfway down
    assert lines[0].startswith("4.00") and lines[4].startswith("2.00")
    assert lines[-1].split() == ["0", "10"]
    assert line_chart({"loss": []}, {"loss": "*"}) == []


def test_a_flat_curve_is_drawn_on_the_row_labelled_with_its_value():
    # Even and odd heights: the middle row is (height - 1) // 2, not height // 2.
    for height in (12, 11, 5, 2, 1):
        lines = line_chart({"loss": [(0.0, 2.5), (10.0, 2.5)]}, {"loss": "*"}, width=11,
                           height=height)  # fmt: skip
        rows = [line.split("│", 1) for line in lines[:height]]
        drawn = [r for r, (_, cells) in enumerate(rows) if "*" in cells]
        assert len(drawn) == 1, lines
        assert rows[drawn[0]][0].strip() == "2.50", lines
        assert rows[drawn[0]][1] == "*" * 11
        # No other row claims the value: the label says where the line is.
        assert [label.strip() for label, _ in rows].count("2.50") == 1, lines


def test_counts_and_durations_never_show_a_unit_they_rounded_past():
    from charrnn.cli.runs import _compact, _duration

    shown = {count: _compact(count) for count in (999, 1000, 9291, 999_949, 999_950, 3_400_000)}
    assert shown == {999: "999", 1000: "1.0k", 9291: "9.3k", 999_949: "999.9k",
                     999_950: "1.0M", 3_400_000: "3.4M"}  # fmt: skip
    shown = {seconds: _duration(seconds) for seconds in (59.94, 59.97, 61, 3599.6)}
    assert shown == {59.94: "59.9 s", 59.97: "1 min 00 s", 61: "1 min 01 s",
                     3599.6: "1 h 00 min"}  # fmt: skip


def test_inspect_shows_the_architecture_in_the_lessons_shapes(tiny_run):
    from charrnn import checkpoint as ckpt

    model, vocab = ckpt.restore_model(ckpt.load(tiny_run / "best.pt"))
    config, size = model.config, len(vocab)
    shown = " ".join(run_cli("inspect", tiny_run).stdout.split())
    assert (f"ids (B, T) -> embedding (B, T, {config.embedding_dim}) -> nn.LSTM("
            f"{config.embedding_dim}, {config.hidden_size}, num_layers={config.num_layers}) -> "
            f"outputs (B, T, {config.hidden_size}) -> nn.Linear({config.hidden_size}, {size}) "
            f"at every step -> logits (B, T, {size})") in shown  # fmt: skip
    # The shapes named are the model's own, for a batch of B = 3 rows of T = 5 characters.
    logits, (h, c) = model(torch.zeros(3, 5, dtype=torch.long))
    assert tuple(logits.shape) == (3, 5, size)
    assert tuple(h.shape) == tuple(c.shape) == (config.num_layers, 3, config.hidden_size)
    assert f"state (h, c), each ({config.num_layers}, B, {config.hidden_size})" in shown


def test_the_architecture_names_what_each_kind_of_model_adds():
    from charrnn.insight import architecture

    base = {"hidden_size": 8, "num_layers": 2, "embedding_dim": 0, "dropout": 0.3,
            "weight_drop": 0.0, "nonlinearity": "relu"}  # fmt: skip
    rnn = "\n".join(architecture({**base, "cell": "rnn"}, 5))
    assert "one-hot (B, T, 5) -> nn.RNN(5, 8, num_layers=2, nonlinearity='relu')" in rnn
    assert "state h (2, B, 8)" in rnn and "dropout 0.3 between layers and on the outputs" in rnn
    peephole = "\n".join(architecture({**base, "cell": "peephole-lstm", "weight_drop": 0.2}, 5))
    assert "GateLSTM(5, 8, num_layers=2, peephole=True)" in peephole
    assert "peepholes: 3 x 8 diagonal weights a layer" in peephole
    assert "weight drop 0.2 on the hidden-to-hidden weights" in peephole
    quiet = "\n".join(architecture({**base, "cell": "gru", "dropout": 0.0}, 5))
    assert "dropout" not in quiet and "nn.GRU(5, 8, num_layers=2)" in quiet
