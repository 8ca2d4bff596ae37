"""ONNX export: onnxruntime gives charrnn's exact logits at any batch, the file carries the
run's vocabulary and settings, refusals are one line, and the README's script runs the file.

The tests that run onnxruntime need the export extra. CI installs it (.ci/run), so there a
missing package fails them; elsewhere they are skipped with the command that installs it.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from charrnn import __version__, load_model
from charrnn import checkpoint as ckpt
from charrnn import export as exporting
from charrnn.config import ModelConfig, TrainConfig, to_dict
from charrnn.corpus import Vocabulary
from charrnn.errors import ExportError
from charrnn.model import CharModel
from charrnn.vocab import UNKNOWN
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "sample_onnx.py"
STEPS, TOLERANCE = 200, 1e-4


@pytest.fixture(scope="module")
def ort():
    """onnxruntime, once the export extra is importable (a failure in CI, a skip elsewhere)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as error:
        message = f"{error.name} is not installed: pip install -e '.[export]'"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the ONNX tests, but {message} (.ci/run installs it)")
        pytest.skip(message)
    return onnxruntime


def hand_built(path: Path, cell: str, num_layers: int = 1, embedding_dim: int = 8) -> Path:
    """A checkpoint of a random model (hidden 32) over a short text's vocabulary."""
    vocab = Vocabulary.from_text("Hello, world: the quick brown fox jumps over the lazy dog.\n")
    config = ModelConfig(cell=cell, hidden_size=32, num_layers=num_layers,
                         embedding_dim=embedding_dim)  # fmt: skip
    torch.manual_seed(7)
    model = CharModel(config, len(vocab))
    with torch.no_grad():  # three times torch's initial weights: a state that moves a lot
        for weight in model.parameters():
            weight.mul_(3)
    checkpoint = {**ckpt.header(), "model_config": to_dict(config),
                  "train_config": to_dict(TrainConfig(seed=5)), "vocab": vocab.to_list(),
                  "model": model.state_dict()}  # fmt: skip
    ckpt.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tiny_run, tmp_path_factory) -> dict[str, Path]:
    """lstm: the trained tiny run (1x32, embedding); gru: 2 layers; rnn: the one-hot input."""
    folder = tmp_path_factory.mktemp("export-checkpoints")
    return {
        "lstm": tiny_run / "best.pt",
        "gru": hand_built(folder / "gru.pt", "gru", num_layers=2),
        "rnn": hand_built(folder / "rnn.pt", "rnn", embedding_dim=0),
    }


@pytest.fixture(scope="module")
def lstm_file(ort, checkpoints, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export-lstm") / "model.onnx"
    exporting.export_run(checkpoints["lstm"], out)
    return out


def fixed_ids(vocab_size: int, batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(11)
    return torch.randint(0, vocab_size, (STEPS, batch), generator=generator)  # (T, B)


@torch.no_grad()
def charrnn_logits(model: CharModel, ids: torch.Tensor) -> torch.Tensor:
    """charrnn's exact fp32 path: the model in eval mode, one character a call, its state
    carried as it gives it back. (T, B) ids -> (T, B, V)."""
    state, steps = model.eval().init_state(ids.shape[1]), []
    for row in ids:
        logits, state = model(row.unsqueeze(1), state)
        steps.append(logits[:, 0])
    return torch.stack(steps)


def onnx_logits(session, ids: torch.Tensor, layers: int, hidden: int) -> torch.Tensor:
    """onnxruntime on the exported file, state outputs fed back as inputs. -> (T, B, V)."""
    names = [i.name for i in session.get_inputs()]
    states = [np.zeros((layers, ids.shape[1], hidden), np.float32) for _ in names[1:]]
    steps = []
    for row in ids:
        logits, *states = session.run(None, dict(zip(names, [row.numpy(), *states], strict=True)))
        steps.append(torch.from_numpy(logits))
    return torch.stack(steps)


@pytest.mark.slow  # ~7 s for the six; the fast loop still exports through the CLI (--force test)
@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_onnxruntime_matches_the_exact_path_for_200_steps_at_batch_1_and_3(
    ort, checkpoints, tmp_path, monkeypatch, cell, exporter
):
    if exporter == "torchscript":  # the fallback, as when dynamo fails on a graph

        def dynamo_fails(*args):
            raise RuntimeError("dynamo cannot export this")

        monkeypatch.setattr(exporting, "_dynamo_export", dynamo_fails)
    done = exporting.export_run(checkpoints[cell], tmp_path / "model.onnx")
    assert done.exporter == exporter and done.cell == cell
    model, vocab = ckpt.restore_model(ckpt.load(checkpoints[cell]))
    session = ort.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    states = ["h", "c"] if cell == "lstm" else ["h"]
    assert [i.name for i in session.get_inputs()] == ["ids", *states]
    assert [o.name for o in session.get_outputs()] == ["logits", *(s + "_out" for s in states)]
    layers, hidden = model.config.num_layers, model.config.hidden_size
    assert session.get_inputs()[0].type == "tensor(int64)"
    assert session.get_inputs()[0].shape == ["batch"]
    assert [i.shape for i in session.get_inputs()[1:]] == [[layers, "batch", hidden]] * len(states)
    assert session.get_outputs()[0].shape == ["batch", len(vocab)]

    ids = fixed_ids(len(vocab), batch=3)
    expected = charrnn_logits(model, ids)
    assert expected.std() > 0.5  # logits that move, so agreeing means something
    got = onnx_logits(session, ids, layers, hidden)
    torch.testing.assert_close(got, expected, atol=TOLERANCE, rtol=0)
    # Batch 1 from the same file: the first row alone gives that row's logits.
    alone = onnx_logits(session, ids[:, :1], layers, hidden)
    torch.testing.assert_close(alone, expected[:, :1], atol=TOLERANCE, rtol=0)


@pytest.mark.slow  # the first ONNX export of a session takes seconds
def test_metadata_holds_the_vocabulary_configs_version_and_usage(ort, lstm_file, checkpoints):
    import onnx

    saved = ckpt.load(checkpoints["lstm"])
    metadata = {p.key: p.value for p in onnx.load(str(lstm_file)).metadata_props}
    assert json.loads(metadata["vocab"]) == saved["vocab"]
    assert json.loads(metadata["model_config"]) == saved["model_config"]
    # JSON has lists where the checkpoint has tuples (repeatable settings such as corpus).
    assert json.loads(metadata["train_config"]) == json.loads(json.dumps(saved["train_config"]))
    assert metadata["charrnn_version"] == __version__
    assert "h [1, batch, 32], c [1, batch, 32]" in metadata["usage"]
    # onnxruntime shows the same map to a runner (what examples/sample_onnx.py reads).
    session = ort.InferenceSession(str(lstm_file), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map["vocab"] == metadata["vocab"]


@pytest.mark.slow  # the first ONNX export of a session takes seconds
def test_the_example_script_writes_the_prime_then_the_asked_length(ort, lstm_file):
    vocab = json.loads(
        ort.InferenceSession(str(lstm_file)).get_modelmeta().custom_metadata_map["vocab"]
    )
    command = [sys.executable, str(SCRIPT), str(lstm_file), "--prime", "ROMEO:",
               "--length", "150", "--seed", "3"]  # fmt: skip
    first = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    text = first.stdout.removesuffix("\n")
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 150
    assert set(text) <= set(vocab)
    again = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    assert again.stdout == first.stdout  # the seed makes it repeatable


@pytest.mark.slow  # the first ONNX export of a session takes seconds
def test_the_example_script_at_near_zero_temperature_is_charrnns_greedy_text(
    ort, lstm_file, tiny_run
):
    """Its loop (prime, state carried, next character) is charrnn's: at a temperature of 1e-3
    the softmax is all on the most likely character, which is what --greedy picks."""
    script = runpy.run_path(str(SCRIPT))  # its functions, without running its main
    session = ort.InferenceSession(str(lstm_file), providers=["CPUExecutionProvider"])
    onnx_text = script["generate"](session, "ROMEO:", 120, temperature=1e-3, seed=0)
    greedy = load_model(str(tiny_run), device="cpu", int8=False).generate(
        "ROMEO:", 120, greedy=True
    )
    assert onnx_text == greedy


@pytest.mark.slow  # the first ONNX export of a session takes seconds
def test_the_example_script_takes_an_empty_prime_and_refuses_unknown_characters(ort, lstm_file):
    script = runpy.run_path(str(SCRIPT))
    session = ort.InferenceSession(str(lstm_file), providers=["CPUExecutionProvider"])
    text = script["generate"](session, "", 20, seed=0)  # a newline, as `charrnn sample`
    assert text.startswith("\n") and len(text) == 21
    command = [sys.executable, str(SCRIPT), str(lstm_file), "--prime", "ROMEO\u263a"]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert (
        refused.stderr.strip()
        == "error: the model never saw ['\u263a']; leave them out of the prime"
    )


@pytest.mark.slow  # an ONNX export
def test_a_max_vocab_model_exports_how_it_reads_unknown_characters(ort, lstm_file, tmp_path):
    """A model trained with --max-vocab reads what it never saw as U+FFFD: the file says so
    and the example script reads a prime that way, where another model's file refuses it."""
    source = hand_built(tmp_path / "mapped.pt", "lstm")
    saved = torch.load(source, weights_only=True)
    vocab = saved["vocab"][:-1] + [UNKNOWN]  # one character left out for U+FFFD, as training does
    torch.save({**saved, "vocab": sorted(vocab),
                "train_config": {**saved["train_config"], "max_vocab": len(vocab) - 1}},
               source)  # fmt: skip
    assert run_cli("export", source, "--out", tmp_path / "mapped.onnx").exit_code == 0
    session = ort.InferenceSession(
        str(tmp_path / "mapped.onnx"), providers=["CPUExecutionProvider"]
    )
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["unknown"] == UNKNOWN and "as 'unknown' (U+FFFD)" in meta["usage"]
    script = runpy.run_path(str(SCRIPT))
    never = "\u263a"
    text = script["generate"](session, "He" + never, 10, seed=0)
    assert text.startswith("He" + never) and len(text) == 13  # the prime as typed
    same = script["generate"](session, "He" + UNKNOWN, 10, seed=0)
    assert text[3:] == same[3:]  # ... read as U+FFFD

    plain = ort.InferenceSession(str(lstm_file), providers=["CPUExecutionProvider"])
    assert "unknown" not in plain.get_modelmeta().custom_metadata_map
    with pytest.raises(ValueError, match="never saw"):
        script["generate"](plain, "He" + never, 10, seed=0)


def test_the_readme_shows_the_example_script():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Run a model without charrnn (ONNX)", 1)[1]
    shown = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    assert shown == SCRIPT.read_text(encoding="utf-8")
    assert "charrnn export checkpoints/my-run --out model.onnx" in readme


@pytest.mark.parametrize("cell", ["gate-lstm", "peephole-lstm", "gate-gru"])
def test_gate_level_cells_are_refused_in_one_line(tmp_path, cell):
    path = hand_built(tmp_path / "gate.pt", cell)
    result = run_cli("export", path, "--out", tmp_path / "model.onnx")
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert repr(cell) in lines[0] and "lstm, gru, rnn" in lines[0]
    assert "--cell lstm" in lines[0]
    assert not (tmp_path / "model.onnx").exists()


def test_an_existing_file_is_refused_without_force(tmp_path, checkpoints):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"someone's file")
    result = run_cli("export", checkpoints["gru"], "--out", out)
    assert result.exit_code == 1, result.output
    assert "already exists" in result.stderr and "--force" in result.stderr
    assert out.read_bytes() == b"someone's file"


def test_force_replaces_and_the_default_out_is_model_onnx_in_the_run(ort, tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "run")  # the shared run stays as it was
    (run / "model.onnx").write_bytes(b"old")
    refused = run_cli("export", run)
    assert refused.exit_code == 1 and "--force" in refused.stderr
    result = run_cli("export", run, "--force")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # the file is the result; the summary is on stderr
    assert str(run / "model.onnx") in result.stderr and "lstm 1x32" in result.stderr
    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].name == "logits"
    assert not [p for p in run.iterdir() if p.name.startswith(".model.onnx")]  # no temporary


@pytest.mark.parametrize("how", ["the same path", "a relative path", "a symlink"])
@pytest.mark.parametrize("force", [False, True])
def test_out_that_is_the_checkpoint_being_exported_is_refused(tiny_run, tmp_path, monkeypatch,
                                                              how, force):  # fmt: skip
    # Refused before the extra is needed: this runs without it too.
    run = shutil.copytree(tiny_run, tmp_path / "run")  # the shared run stays as it was
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    out = {"the same path": run / "best.pt", "a relative path": Path("run/../run/best.pt"),
           "a symlink": run / "link.onnx"}[how]  # fmt: skip
    (run / "link.onnx").symlink_to("best.pt")
    monkeypatch.chdir(tmp_path)
    result = run_cli("export", run, "--out", out, *(["--force"] if force else []))
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: --out {str(out)!r} is the checkpoint being read ({str(run / 'best.pt')!r}); "
        f"name another file, such as {str(run / 'model.onnx')!r}"
    ]
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != "link.onnx"} == before


@pytest.mark.parametrize("name", ["last.pt", "config.toml", "metrics.jsonl"])
def test_out_that_is_a_file_of_the_run_is_refused_even_with_force(tiny_run, tmp_path, name):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    result = run_cli("export", run, "--out", run / name, "--force")
    assert result.exit_code == 1, result.output
    assert f"is the run's {name} being read" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_an_onnx_file_given_to_export_says_what_it_is_not_that_it_collides(tiny_run, tmp_path):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x08\x12\x07pytorch")  # how an exported file starts
    result = run_cli("export", onnx)  # its default --out is itself
    assert result.exit_code == 1 and "is an ONNX file, not a checkpoint" in result.stderr
    assert "being read" not in result.stderr


def test_without_the_export_extra_one_line_says_what_to_install(monkeypatch, tmp_path, tiny_run):
    # Whichever of the extra's packages is imported first is missing (so is all of it in a
    # clone installed without the extra): `import onnx...` now fails.
    for package in ("onnx", "onnxruntime", "onnxscript"):
        monkeypatch.setitem(sys.modules, package, None)
    result = run_cli("export", tiny_run, "--out", tmp_path / "model.onnx")
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    assert "onnx" in lines[0]  # names the missing package
    assert 'pip install -e ".[export]"' in lines[0] and 'pip install "charrnn[export]"' in lines[0]
    assert not (tmp_path / "model.onnx").exists()


def test_when_both_exporters_fail_the_error_gives_both_reasons(ort, checkpoints, monkeypatch):
    def fails(name):
        def export(*args):
            raise RuntimeError(f"{name} broke\nwith a long trace")

        return export

    monkeypatch.setattr(exporting, "_dynamo_export", fails("dynamo"))
    monkeypatch.setattr(exporting, "_torchscript_export", fails("torchscript"))
    model, _ = ckpt.restore_model(ckpt.load(checkpoints["rnn"]))
    with pytest.raises(ExportError) as refused:
        exporting.to_onnx(model.eval(), exporting.describe(ckpt.load(checkpoints["rnn"])))
    assert "dynamo: dynamo broke" in str(refused.value)
    assert "torchscript: torchscript broke" in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.slow
def test_the_speed_benchmark_runs_on_a_tiny_run(ort, tiny_run):
    command = [sys.executable, "-m", "benchmarks.export_speed", "--run", str(tiny_run),
               "--length", "40", "--repeats", "1", "--json"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout)
    assert set(results["chars_per_second"]) == {
        "onnxruntime (examples/sample_onnx.py)",
        "charrnn sample --exact",
        "charrnn sample --int8",
    }
    assert all(rate > 0 for rate in results["chars_per_second"].values())
    assert results["threads"] == 1 and results["charrnn_default"] == "--exact"  # 32 units
