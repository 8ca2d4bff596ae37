"""benchmarks.gpu: the one prepared script for a lent GPU, checked here on a CPU (no timings are
asserted), and how its figures reach RESULTS.md."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest

from benchmarks import baselines, gpu, quality
from benchmarks.report import report

SHIPPED = Path(gpu.__file__).parent / "results.json"


def shipped_gpu_section() -> dict:
    return json.loads(SHIPPED.read_text())["sections"]["gpu"]


@pytest.mark.slow
def test_every_stage_runs_and_is_written_as_it_ends(tmp_path, corpus_file, capsys):
    gpu.main(["--device", "cpu", "--config", "tiny", "--seconds", "2", "--deadline", "0",
              "--corpus", str(corpus_file), "--out", str(tmp_path)])  # fmt: skip
    results = json.loads((tmp_path / "gpu-results.json").read_text())
    ours = results["ours"]
    assert ours["best_val_loss"] <= ours["final_val_loss"] + 1e-9
    assert set(ours["trainer_seconds_to"]) == {"1.88", "1.47", "1.42"}
    assert ours["best_at"]["seconds"] > 0 and "dynamic" not in ours  # not asked for
    assert results["sampling"]["batch1"] > 0 and results["sampling"]["batch64"] > 0
    plain = results["plain"]
    assert plain["device"] == "cpu" and plain["precision"] == "bf16"
    assert len(plain["curve"]) >= 9  # scored many times, not only at the end
    assert "skipped" in results["as_first_prepared"]  # no room before the deadline
    assert json.loads(capsys.readouterr().out) == results


def test_a_failed_stage_is_recorded_and_the_others_still_run(tmp_path, corpus_file, monkeypatch):
    ours = {"run_dir": str(tmp_path), "val_fraction": 0.1, "best_val_loss": 2.0}
    monkeypatch.setattr(gpu, "train", lambda *args: ours)
    monkeypatch.setattr(gpu, "sampling_speed", lambda *args: 1 / 0)
    monkeypatch.setattr(quality, "baseline", lambda *args, **kwargs: {"best_val_loss": 2.5})
    gpu.main(["--device", "cpu", "--corpus", str(corpus_file), "--out", str(tmp_path),
              "--deadline", "0"])  # fmt: skip
    results = json.loads((tmp_path / "gpu-results.json").read_text())
    assert results["sampling"] == {"error": "ZeroDivisionError: division by zero"}
    assert results["plain"] == {"best_val_loss": 2.5}


def test_a_failed_run_of_ours_stops_the_script_at_once(tmp_path, corpus_file, monkeypatch):
    def fail(*args):
        raise RuntimeError("cuDNN said no")

    monkeypatch.setattr(gpu, "train", fail)
    monkeypatch.setattr(quality, "baseline", lambda *a, **k: pytest.fail("baseline ran"))
    with pytest.raises(SystemExit, match="our run failed: RuntimeError: cuDNN said no"):
        gpu.main(["--device", "cpu", "--corpus", str(corpus_file), "--out", str(tmp_path)])


def test_without_cuda_it_refuses_unless_told_to_use_the_cpu(monkeypatch):
    monkeypatch.setattr(gpu.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        gpu.main([])


def test_a_recorded_run_becomes_the_gpu_section_beside_the_others(tmp_path):
    shutil.copy(SHIPPED, tmp_path / "results.json")
    before = json.loads(SHIPPED.read_text())["sections"]
    measured = {k: v for k, v in shipped_gpu_section().items() if k not in ("mode", "command")}
    (tmp_path / "gpu-results.json").write_text(json.dumps(measured))
    gpu.record(tmp_path / "gpu-results.json", tmp_path)
    after = json.loads((tmp_path / "results.json").read_text())["sections"]
    assert {k: v for k, v in after.items() if k != "gpu"} == {
        k: v for k, v in before.items() if k != "gpu"
    }
    assert after["gpu"]["command"] == "python -m benchmarks.gpu"
    text = (tmp_path / "RESULTS.md").read_text()
    assert "`python -m benchmarks.gpu`" in text and "One GPU (configs/gpu.toml)" in text
    assert "GPU: NVIDIA H200" in text  # the section names its own machine


def gpu_report(section: dict) -> str:
    results = json.loads(SHIPPED.read_text())
    results["sections"] = {"gpu": section}
    return report(results, notes=None)


def test_the_report_says_whether_the_aim_was_met_from_the_figures():
    section = shipped_gpu_section()
    assert "1.42 in under 3 minutes on an H100/H200: **met**" in gpu_report(section)
    worse = copy.deepcopy(section)
    worse["ours"]["best_val_loss"] = 1.43
    assert "**not met**" in gpu_report(worse)
    late = copy.deepcopy(section)
    late["ours"]["best_at"]["seconds"] = 200.0
    assert "**not met**" in gpu_report(late)


def test_a_baseline_best_at_its_first_score_makes_the_margin_an_upper_bound():
    section = copy.deepcopy(shipped_gpu_section())
    plain = section["plain"]
    plain["curve"] = [[3.0, 1.6], [6.0, 1.5], [9.0, 1.55]]
    plain["best_val_loss"], plain["best_seconds"] = 1.5, 6.0
    assert "an upper bound" not in gpu_report(section)
    plain["best_val_loss"], plain["best_seconds"] = 1.6, 3.0
    assert "its best lies somewhere in its first 6 s" in gpu_report(section)


def test_the_baseline_reports_the_seconds_it_trained_not_its_budget(corpus_file):
    result = baselines.train("plain", str(corpus_file), 0.5, 0.0, val_fraction=0.1)
    assert result["seconds"] >= 0.5 and result["device"] == "cpu"
    assert result["chars_per_sec"] == pytest.approx(result["steps"] * 32 * 100 / result["seconds"])


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda r: r["machine"].update(gpu=None), "measured without a GPU"),
        (lambda r: r.update(plain={"error": "RuntimeError: x"}), "stage(s) plain failed"),
        (lambda r: r.pop("ours"), "stage(s) ours failed or are missing"),
    ],
)
def test_a_check_run_or_a_failed_one_is_not_recorded(tmp_path, change, why):
    shutil.copy(SHIPPED, tmp_path / "results.json")
    measured = copy.deepcopy(shipped_gpu_section())
    change(measured)
    (tmp_path / "gpu-results.json").write_text(json.dumps(measured))
    with pytest.raises(ValueError, match=re.escape(why)):
        gpu.record(tmp_path / "gpu-results.json", tmp_path)
    assert (tmp_path / "results.json").read_bytes() == SHIPPED.read_bytes()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--record", "/nonexistent/gpu-results.json"], "not recorded"),
        (["--device", "cpu", "--seconds", "0"], "--seconds must be positive"),
        (["--device", "cpu", "--config", "nosuch"], "nosuch"),
    ],
)
def test_bad_arguments_are_one_line_before_any_run(argv, message, monkeypatch):
    monkeypatch.setattr(gpu, "train", lambda *a: pytest.fail("a run started"))
    with pytest.raises(SystemExit, match=message) as stopped:
        gpu.main(argv)
    assert "\n" not in str(stopped.value.code)
