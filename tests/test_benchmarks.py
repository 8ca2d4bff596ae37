"""The benchmark harness: end to end on a tiny setting (no timings are asserted), section by
section, in tuning mode; and the pieces that keep its figures honest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import data_scale, machine, quality, run, tuning
from benchmarks.driver import SnapshotTrainer, parse_sets, read_snapshots, snapshot_steps
from benchmarks.process import run_child
from benchmarks.report import report
from charrnn import config, kernel
from charrnn.corpus import Vocabulary, split_train_val
from tests.test_train import tiny_configs

ROOT = Path(__file__).resolve().parents[1]


def harness(*args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--tiny", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400,
                            env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_harness_writes_a_report_and_reruns_one_section(tmp_path, corpus_file):
    harness("--corpus", corpus_file, "--out", tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    sections = results["sections"]
    assert list(sections) == ["throughput", "ingest", "quality", "sampling"]
    q = sections["quality"]
    ours = q["ours"]
    assert ours["final_val_loss"] > 0 and q["plain"]["final_val_loss"] > 0
    assert q["plain"]["best_val_loss"] <= q["plain"]["final_val_loss"]  # as early stopping keeps
    assert q["plain"]["precision"] == ("bf16" if ours["precision"] == "bf16" else "fp32")
    assert ours["val_characters"] == int(len(corpus_file.read_text()) * 0.1) - 1
    assert [s[0] for s in ours["snapshots"]["curve"]] == [4, 6, 8, 11, 16, 23, 32, 45]
    assert ours["dynamic"]["characters"] == ours["val_characters"]
    assert ours["speed"]["between_evaluations_median"] > 0
    assert sections["throughput"]["chars_per_sec"] > 0
    assert sections["sampling"]["by_threads"]["1"]["charrnn_batch1"][0] > 0
    assert sections["sampling"]["by_threads"]["1"]["charrnn_int8_torch_batch1"][0] > 0
    quality = sections["sampling"]["int8_quality"]
    if kernel.compiler() is not None:  # the compiled step builds (CI installs a compiler)
        assert quality["compiled_int8_loss"] == pytest.approx(quality["exact_loss"], abs=0.05)
    assert sections["sampling"]["trained_weights"]
    scripts = sections["ingest"]["scripts"]
    assert scripts["ascii"]["encoded_dtype"] == "torch.uint8"
    assert scripts["cjk"]["encoded_dtype"] == "torch.int32"
    assert {round(x["file_mb"]) for x in scripts.values()} == {1}
    report = (tmp_path / "RESULTS.md").read_text()
    for heading in ("Quality per CPU-minute", "Training throughput", "Sampling", "Scale of data"):
        assert heading in report
    assert "fp32, over the whole" in report and "Dynamic evaluation of best.pt" in report

    harness("--corpus", corpus_file, "--out", tmp_path, "--only", "sampling")
    again = json.loads((tmp_path / "results.json").read_text())["sections"]
    assert again["quality"] == sections["quality"]  # the other sections are kept as they were
    assert again["sampling"]["measured"] >= sections["sampling"]["measured"]

    # Once a quality run exists, the synthetic step times the shape that run trained.
    harness("--corpus", corpus_file, "--out", tmp_path, "--only", "throughput")
    timed = json.loads((tmp_path / "results.json").read_text())["sections"]["throughput"]
    saved = Path(ours["run_dir"]) / "config.toml"
    assert timed["config"] == str(saved)
    assert timed["model"] == config.to_dict(config.resolve(str(saved), {})[0])


@pytest.mark.slow
def test_speeds_pairs_ours_and_the_baseline_at_equal_threads_and_precision(tmp_path, corpus_file):
    harness("--corpus", corpus_file, "--out", tmp_path, "--only", "speeds", "--fixed",
            "--set", "auto_size=true")  # fmt: skip
    speeds = json.loads((tmp_path / "results.json").read_text())["sections"]["speeds"]
    pairs = speeds["pairs"]
    assert list(pairs) == ["full speed", "half speed", "fp32 only"]
    half, fp32 = pairs["half speed"], pairs["fp32 only"]
    assert half["ours"]["settings"]["threads"] == 1 and half["plain"]["threads"] == 1
    assert fp32["ours"]["precision"] == fp32["plain"]["precision"] == "fp32"
    full = pairs["full speed"]
    assert full["plain"]["precision"] == full["ours"]["precision"]
    # auto_size chose, recorded its reason, and the fixed run trained the old default's shape.
    assert full["ours"]["sizing"]["reason"].startswith("1x")
    assert full["ours"]["settings"]["auto_size"] is False
    assert speeds["fixed_1x768"]["settings"]["hidden_size"] == 768
    assert speeds["fixed_1x768"]["sizing"] is None
    for pair in (full, half, fp32):
        assert pair["plain"]["best_val_loss"] <= pair["plain"]["final_val_loss"]
    report = (tmp_path / "RESULTS.md").read_text()
    assert "A default for any machine: three speeds" in report
    assert report.count("| half speed | 1 |") == 1 and "The fixed 1x768 default" in report


@pytest.mark.slow
def test_tuning_scores_the_tail_of_the_training_text_only(tmp_path, corpus_file):
    harness("--corpus", corpus_file, "--out", tmp_path, "--only", "quality", "--tune")
    results = json.loads((tmp_path / "results.json").read_text())
    ours = results["sections"]["quality"]["ours"]
    training = len(corpus_file.read_text()) - int(len(corpus_file.read_text()) * 0.1)
    assert results["tune"] and ours["val_fraction"] == tuning.TUNE_FRACTION
    assert ours["val_characters"] == int(training * tuning.TUNE_FRACTION) - 1
    assert results["sections"]["quality"]["plain"]["final_val_loss"] > 0
    assert "TUNING" in (tmp_path / "RESULTS.md").read_text()
    # A variant to compare, alone: its own run directory, and no baseline.
    harness("--corpus", corpus_file, "--out", tmp_path / "ema", "--only", "quality", "--tune",
            "--ours-only", "--set", "ema=0.9")  # fmt: skip
    variant = json.loads((tmp_path / "ema" / "results.json").read_text())["sections"]["quality"]
    assert list(variant) == ["measured", "mode", "machine", "ours"]
    assert Path(variant["ours"]["run_dir"]).name == "ours-tiny-ema=0.9"
    assert variant["ours"]["final_val_loss"] != ours["final_val_loss"]


def test_a_tuning_run_is_known_by_its_corpus_as_a_checkpoint_records_it():
    assert tuning.is_tuning_corpus(("benchmarks/_work/tune-tinyshakespeare.txt",))
    assert tuning.is_tuning_corpus("tune-corpus.txt")
    assert not tuning.is_tuning_corpus(("tune-a.txt", "plays.txt"))
    assert not tuning.is_tuning_corpus(())


def test_the_tuning_corpus_is_exactly_what_training_reads(tmp_path):
    text = "".join(chr(65 + i % 26) for i in range(1003))
    source = tmp_path / "text.txt"
    source.write_text(text)
    train_ids, val_ids = split_train_val(Vocabulary.from_text(text).encode(text), 0.1)
    tune = tuning.tuning_corpus(source, tmp_path / "work").read_text()
    assert tune == text[: len(train_ids)] and len(val_ids) == 100
    assert tuning.is_tuning_corpus(tmp_path / "work" / "tune-text.txt")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--full", "--tune"], "--tune is for the quality and speeds sections"),
        (["--full", "--only", "quality,speed"], "unknown section 'speed'"),
    ],
)
def test_bad_section_choices_are_usage_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exited:
        run.parse_args(args)
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_sections_in_order_and_the_long_ones_only_in_full():
    assert run.parse_args(["--quick"]).sections == ["throughput", "ingest", "quality", "sampling"]
    assert run.parse_args(["--full"]).sections[-3:] == ["gate_cells", "corpora", "finetune"]
    assert run.parse_args(["--full", "--only", "sampling", "--only", "ingest"]).sections == [
        "ingest", "sampling"]  # fmt: skip


def test_a_cpu_is_told_apart_by_its_numbers_where_its_name_is_shared():
    fields = {"model name": "Intel(R) Xeon(R) Processor", "cpu family": "6", "model": "167"}
    assert machine.cpu_model(fields) == "Intel(R) Xeon(R) Processor"
    assert machine.cpu_numbers(fields) == "family 6 model 167"
    assert machine.cpu_numbers({"model name": "Apple M2"}) is None  # no such fields there
    assert machine.cpu_model({}) != ""  # platform's name, or "unknown"


def test_a_section_measured_on_another_machine_names_it(tmp_path):
    epyc = {"cpu": "AMD EPYC", "cores": 2, "threads": 2, "fast_bf16": True,
            "torch": "2.13.0+cpu", "python": "3.11.7", "gpu": None}  # fmt: skip
    xeon = {**epyc, "cpu": "Intel(R) Xeon(R) Processor", "cpu_id": "family 6 model 167",
            "amx": True}  # fmt: skip
    # An older results.json named one machine for the whole file; a later run adds a section.
    gate_cells = {"measured": "1", "mode": "full", "table": "cells"}
    (tmp_path / "results.json").write_text(json.dumps({
        "format": run.FORMAT, "tune": False, "machine": epyc, "corpus": "plays.txt",
        "sections": {"gate_cells": gate_cells}}))  # fmt: skip
    args = run.parse_args(["--full", "--only", "ingest", "--out", str(tmp_path)])
    results = run.previous_results(tmp_path, args)
    assert results["sections"]["gate_cells"]["machine"] == epyc  # kept, not relabelled
    script = {"file_mb": 1, "characters": 1e6, "vocab_size": 65, "encoded_dtype": "uint8",
              "encoded_mb": 1, "seconds": 0.5, "growth_mb": 2, "growth_over_file": 2.0,
              "rss_before_mb": 300}  # fmt: skip
    results["sections"]["ingest"] = {"measured": "2", "mode": "full", "machine": xeon,
                                     "scripts": {"ascii": script}}  # fmt: skip
    lines = report(results, notes=None).splitlines()
    assert lines[2].startswith("Machine: AMD EPYC, 2 cores") and "names its own" in lines[2]
    own = [line for line in lines if line.startswith("Machine for this section")]
    assert own == ["Machine for this section: Intel(R) Xeon(R) Processor (family 6 model 167), "
                   "2 cores (2 torch threads), torch 2.13.0+cpu, Python 3.11.7, bf16 "
                   "instructions (AMX/AVX512-BF16): True, AMX: True, GPU: none."]  # fmt: skip
    assert lines.index("## 1. Scale of data") < lines.index(own[0])
    assert lines.index(own[0]) < lines.index("## 2. Gate-level cells against torch")
    del results["sections"]["ingest"]  # one machine: named once, no section repeats it
    assert "names its own" not in report(results, notes=None)


def test_the_real_run_speed_beside_the_synthetic_step_names_its_machine_when_another():
    shipped = json.loads((Path(run.__file__).parent / "results.json").read_text())
    epyc = {"cpu": "AMD EPYC", "cores": 2, "threads": 2, "fast_bf16": True,
            "torch": "2.13.0+cpu", "python": "3.11.7", "gpu": None}  # fmt: skip
    xeon = {**epyc, "cpu": "Intel(R) Xeon(R) Processor", "cpu_id": "family 6 model 167"}
    sections = {name: {**shipped["sections"][name], "machine": epyc}
                for name in ("throughput", "quality")}  # fmt: skip
    results = {**shipped, "machine": epyc, "sections": sections}

    def real_run_line() -> str:
        lines = report(results, notes=None).splitlines()
        return next(line for line in lines if "run of the quality section" in line)

    assert "metrics.jsonl):" in real_run_line()  # one machine: nothing to add
    sections["quality"]["machine"] = xeon
    assert "metrics.jsonl, on Intel(R) Xeon(R) Processor (family 6 model 167)" in real_run_line()


def test_each_variant_keeps_its_own_run_directory():
    assert quality.run_name("default", []) == "ours-default"
    assert quality.run_name("default", ["val_fraction=0.05", "ema=0.999"]) == (
        "ours-default-ema=0.999")  # fmt: skip
    assert quality.run_name("configs/my.toml", ['cell="gru"']) == "ours-my-cell=_gru_"


def test_snapshot_steps_are_log_spaced():
    steps = snapshot_steps(64)
    assert steps == [4, 6, 8, 11, 16, 23, 32, 45, 64]
    ratios = [b / a for a, b in zip(steps, steps[1:], strict=False)]
    assert all(1.3 < r < 1.6 for r in ratios)


def test_snapshots_are_the_weights_at_their_steps(tmp_path, corpus_file):
    configs = tiny_configs(corpus_file, max_steps=4, eval_every=2)
    trainer = SnapshotTrainer(*configs, tmp_path / "run", steps=[2, 4])
    trainer.run()
    trainer.write_index()
    snapshots = read_snapshots(tmp_path / "run")
    assert [s["step"] for s in snapshots] == [2, 4]  # once each, evaluations or not
    assert 0 < snapshots[0]["seconds"] <= snapshots[1]["seconds"]
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    for key, value in last.items():
        assert torch.equal(snapshots[1]["model"][key], value), key
    assert not torch.equal(snapshots[0]["model"]["head.bias"], last["head.bias"])


def test_time_to_target_is_bracketed_by_two_snapshots():
    curve = [(4, 1.0, 3.1), (8, 2.0, 2.2), (16, 4.0, 1.87), (32, 8.0, 1.6)]
    found = quality.time_to_target(curve)
    assert (found["step"], found["seconds"], found["previous"]["step"]) == (16, 4.0, 8)
    assert quality.time_to_target(curve[:2]) == {"reached": False, "last_snapshot_step": 8}


def test_driver_settings_are_read_as_toml_values():
    assert parse_sets(["learning_rate=3e-3", "shift_epochs=false", "cell=gru", "ema=0.999"]) == {
        "learning_rate": 3e-3, "shift_epochs": False, "cell": "gru", "ema": 0.999}  # fmt: skip


def test_non_latin_corpora_map_letters_deterministically(tmp_path):
    line = "ROMEO: What light?"
    assert data_scale.to_cyrillic(line) == "СОМДО: Цзау лижзу?"
    cjk = data_scale.to_cjk(line)
    assert cjk == data_scale.to_cjk(line) and cjk.endswith("?") and ": " in cjk
    assert all("\u4e00" <= c <= "\u9fff" for c in cjk.replace(": ", "").replace(" ", "")[:-1])
    path = data_scale.build_corpus(1, "cjk", folder=tmp_path)
    assert 1_000_000 - 3 < path.stat().st_size <= 1_000_000  # the ASCII file's size, to a char
    text = path.read_text(encoding="utf-8")
    assert len(set(text)) > 256 and len(text.encode("utf-8")) <= 1_000_000


@pytest.mark.slow  # ten child processes
def test_sampler_versions_compares_two_checkouts_on_the_same_text(tiny_run):
    """Both sides in turns, every case; a checkout against itself writes the same text."""
    from benchmarks import sampler_versions

    report = sampler_versions.measure(ROOT, str(tiny_run), length=60, rounds=1)
    threads = sorted({1, torch.get_num_threads()})
    cases = {f"{kind}, {n} thread(s)" for n in threads for kind in ("int8", "exact")}
    assert set(report) == {"as charrnn picks", *cases}
    for row in report.values():
        assert row["before"] > 0 and row["after"] > 0 and row["same_text"] is True
        assert row["speedup"] == pytest.approx(row["after"] / row["before"])


def test_the_mogrifier_without_rounds_is_the_lstm_it_prices():
    """`--rounds 0` must compute exactly nn.LSTM's step, or it would not price the loop alone."""
    from benchmarks.mogrifier import MogrifierLSTM

    torch.manual_seed(0)
    loop = MogrifierLSTM(8, 16, rounds=0)
    fused = torch.nn.LSTM(8, 16, batch_first=True)
    fused.load_state_dict(loop.state_dict())
    x, state = torch.randn(3, 5, 8), (torch.randn(1, 3, 16), torch.randn(1, 3, 16))
    (out, (h, c)), (ref, (ref_h, ref_c)) = loop(x, state), fused(x, state)
    for got, want in ((out, ref), (h, ref_h), (c, ref_c)):
        torch.testing.assert_close(got, want)


def test_the_mogrifier_gates_its_step_and_trains_as_charrnn_does():
    from benchmarks.mogrifier import MogrifierLSTM, measure, model_for
    from charrnn.config import ModelConfig

    torch.manual_seed(0)
    plain, mogrified = MogrifierLSTM(8, 16, rounds=0), MogrifierLSTM(8, 16, rounds=3)
    plain.load_state_dict(mogrified.state_dict(), strict=False)
    x, state = torch.randn(3, 5, 8), (torch.randn(1, 3, 16), torch.randn(1, 3, 16))
    out = mogrified(x, state)[0]
    assert not torch.allclose(out, plain(x, state)[0])
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mogrified.mogrify)
    # Swapped into charrnn's model, weight drop still finds the recurrent weight.
    config = ModelConfig(hidden_size=16, embedding_dim=8, weight_drop=0.5)
    assert set(model_for(config, rounds=2)._dropped_weights()) == {"weight_hh_l0"}
    speeds = measure(hidden_size=16, rounds=[0, 2], repeats=1)
    assert list(speeds) == ["nn.LSTM (fused)", "Mogrifier, 0 rounds", "Mogrifier, 2 rounds"]
    assert all(speed > 0 for speed in speeds.values())


def screen_through_charrnn(module: list[str], run_dir: Path, corpus: Path) -> tuple[dict, dict]:
    """`python -m benchmarks.MODULE ... --charrnn train` for 3 tiny steps, then `... eval` of
    the run: the weights it saved and the score."""

    def charrnn(*args) -> str:
        command = [sys.executable, "-m", *module, "--charrnn", *map(str, args)]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    charrnn("train", "--config", "tiny", "--corpus", corpus, "--max-steps", "3",
            "--max-time", "0", "--out", run_dir)  # fmt: skip
    weights = torch.load(run_dir / "last.pt", weights_only=True)["model"]
    score = json.loads(charrnn("eval", run_dir, "--corpus", corpus, "--json").splitlines()[-1])
    return weights, score


@pytest.mark.slow
def test_the_mogrifier_screen_trains_and_scores_through_charrnn(tmp_path, corpus_file):
    module = ["benchmarks.mogrifier", "--rounds", "3"]
    weights, score = screen_through_charrnn(module, tmp_path / "mog", corpus_file)
    assert {"core.mogrify.0", "core.mogrify.1", "core.mogrify.2"} <= set(weights)
    assert score["loss"] > 0


def cached_pair(memory: int = 6):
    """A tiny CachedCharModel whose attention is in use, and the plain model it extends."""
    from benchmarks.neural_cache import CachedCharModel
    from charrnn.config import ModelConfig
    from charrnn.model import CharModel

    torch.manual_seed(0)
    config = ModelConfig(hidden_size=16, embedding_dim=8)
    cached, plain = CachedCharModel(config, 10, memory, size=4).eval(), CharModel(config, 10)
    plain.load_state_dict(cached.state_dict(), strict=False)
    return cached, plain.eval()


def test_a_fresh_cache_is_the_plain_lstm_and_reads_only_the_past():
    cached, plain = cached_pair()
    ids = torch.randint(10, (2, 12))
    # Its output projection starts at zero: a new model computes what the LSTM computes.
    torch.testing.assert_close(cached(ids)[0], plain(ids)[0])
    torch.nn.init.normal_(cached.cache.out.weight)
    assert not torch.allclose(cached(ids)[0], plain(ids)[0])
    # The logits at t never depend on a later character, within a window...
    for t in range(11):
        changed = ids.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 3) % 10
        torch.testing.assert_close(cached(ids)[0][:, : t + 1], cached(changed)[0][:, : t + 1])

    # ...or across windows, where the memory carries the first window's keys and the
    # characters that followed them (the last one is the second window's first input).
    def two_windows(text: torch.Tensor) -> torch.Tensor:
        first, state = cached(text[:, :6])
        return torch.cat([first, cached(text[:, 6:], state)[0]], 1)

    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 5) % 10
    whole, altered = two_windows(ids), two_windows(changed)
    torch.testing.assert_close(whole[:, :7], altered[:, :7])
    assert not torch.allclose(whole[:, 7:], altered[:, 7:])


def test_the_cache_memory_is_kept_between_windows_and_emptied_for_a_new_text():
    cached, _ = cached_pair(memory=6)
    torch.nn.init.normal_(cached.cache.out.weight)
    ids = torch.randint(10, (2, 12))
    alone = cached(ids[:, 6:])[0]  # no state: a new text, nothing remembered
    _, state = cached(ids[:, :6])
    assert cached.cache.recent[0].shape == (2, 6, 4)  # (rows, memory, key size)
    assert not torch.allclose(cached(ids[:, 6:], state)[0], alone)
    # A switch between evaluation and training empties it too.
    cached(ids[:, :6], state)
    cached.train()
    torch.manual_seed(1)
    switched = cached(ids[:, 6:], state)[0]
    cached.cache.recent = None
    torch.manual_seed(1)
    torch.testing.assert_close(switched, cached(ids[:, 6:], state)[0])
    forgetful, _ = cached_pair(memory=0)
    forgetful(ids)
    assert forgetful.cache.recent[0].shape == (2, 0, 4)  # memory 0 keeps nothing


def test_the_cache_step_is_timed_beside_the_lstm():
    from benchmarks.neural_cache import measure

    speeds = measure(hidden_size=16, memory=20, size=4, repeats=1)
    assert list(speeds) == ["LSTM", "LSTM + cache (20 back, size 4)"]
    assert all(speed > 0 for speed in speeds.values())


@pytest.mark.slow
def test_the_cache_screen_trains_and_scores_through_charrnn(tmp_path, corpus_file):
    module = ["benchmarks.neural_cache", "--memory", "20", "--size", "8"]
    weights, score = screen_through_charrnn(module, tmp_path / "cache", corpus_file)
    assert {"cache.query.weight", "cache.next_value.weight", "cache.out.weight"} <= set(weights)
    assert weights["cache.out.weight"].abs().sum() > 0  # it trained
    assert score["loss"] > 0


@pytest.mark.slow
def test_the_averaging_windows_screen_keeps_each_window_of_one_run(tmp_path, corpus_file):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "benchmarks.averaging_windows", "--out", str(out),
               "--ramps", "10,2", "--", "--config", "tiny", "--corpus", str(corpus_file),
               "--max-steps", "6", "--hidden-size", "16", "--threads", "1"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    load = lambda name: torch.load(out / name, weights_only=True)  # noqa: E731
    last, windows = load("last.pt"), out / "windows"
    assert last["averaging"]["updates"] == 6
    # Ramp 10 is the run's own average, folded in step for step beside it.
    same, longer, raw = (load(f"windows/{n}.pt")["model"] for n in ("ramp10", "ramp2", "raw"))
    assert sorted(p.name for p in windows.iterdir()) == ["ramp10.pt", "ramp2.pt", "raw.pt"]
    for key, weights in last["model"].items():
        assert torch.equal(same[key], weights), key
        assert torch.equal(raw[key], last["averaging"]["raw"][key]), key
    assert not all(torch.equal(longer[k], last["model"][k]) for k in longer)


def test_a_childs_peak_memory_is_its_own():
    # Held for a second, so that the polls see it whatever the machine's speed.
    def allocate(megabytes: int) -> list[str]:
        return [sys.executable, "-c", f"import time; b = bytearray({megabytes} << 20); "
                "b[::4096] = b'x' * len(b[::4096]); time.sleep(1); print('done')"]  # fmt: skip

    stdout, _, big = run_child(allocate(300))
    assert stdout == "done\n" and 300 < big < 400
    # After the larger child, and with this process (torch imported) larger than either: the
    # figure is still this child's own.
    _, _, small = run_child(allocate(20))
    assert 20 < small < 100
    with pytest.raises(RuntimeError, match="(?s)failed:\n.*ZeroDivisionError"):
        run_child([sys.executable, "-c", "1 / 0"])
