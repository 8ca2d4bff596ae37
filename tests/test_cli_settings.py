"""Each setting is declared once (charrnn.config) and every command's option derives from it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import typer.main
from rich.console import Console

from charrnn import config
from charrnn.cli import app
from charrnn.cli import runs as runs_command
from charrnn.cli.train import RUN_LEVEL_OPTIONS
from tests.conftest import run_cli


def command(name: str):
    return typer.main.get_command(app).commands[name]


def options_of(name: str) -> dict[str, list[str]]:
    """{parameter name: every flag that sets it} of a command's options."""
    return {p.name: [*p.opts, *p.secondary_opts] for p in command(name).params
            if p.param_type_name == "option" and p.name != "help"}  # fmt: skip


def test_every_setting_has_exactly_one_train_option_and_every_option_is_a_setting():
    options = options_of("train")
    fields = set(config.all_fields())
    assert fields <= options.keys(), f"settings without an option: {fields - options.keys()}"
    extra = options.keys() - fields
    assert extra == set(RUN_LEVEL_OPTIONS), f"train options that are not settings: {extra}"
    # No two options set the same setting: every flag names exactly one parameter.
    flags = [flag for names in options.values() for flag in names]
    assert len(flags) == len(set(flags))
    assert options["learning_rate"] == ["--learning-rate", "--lr"]  # an alias, one option
    assert options["shift_epochs"] == ["--shift-epochs", "--no-shift-epochs"]


def test_help_panels_group_the_settings():
    panels = {p.name: p.rich_help_panel for p in command("train").params
              if p.param_type_name == "option"}  # fmt: skip
    for name, (_, _, declared) in ((n, config.declaration(n)) for n in config.all_fields()):
        assert panels[name] == declared.panel
    assert {panels[name] for name in RUN_LEVEL_OPTIONS} == {"Run"}
    assert {panels[name] for name in config.all_fields()} == {
        "Model", "Data", "Optimisation", "Run control"}  # fmt: skip


@pytest.mark.parametrize(
    ("command_name", "shared"),
    [
        ("eval", ["batch_size", "seq_length", "val_fraction", "device", "precision"]),
        ("sample", ["device", "threads"]),
        ("inspect-batches", ["corpus", "batch_size", "seq_length", "val_fraction"]),
    ],
)
def test_other_commands_reuse_the_declaration(command_name, shared):
    train, other = command("train"), command(command_name)
    by_name = {p.name: p for p in train.params}
    for p in other.params:
        if p.name in shared:
            twin = by_name[p.name]
            assert (p.opts, p.secondary_opts, p.help) == (twin.opts, twin.secondary_opts, twin.help)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inspect-batches", "--val-fraction", "1.5"], "val_fraction must be less than 1.0"),
        (["inspect-batches", "--batch-size", "0"], "batch_size must be at least 1"),
        (["sample", "--device", "tpu"], "device must be one of auto, cpu, cuda, mps"),
        (["sample", "--threads", "-1"], "threads must be at least 0"),
    ],
)
def test_other_commands_validate_with_the_same_rules(args, message):
    result = run_cli(*args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr


def test_the_same_bounds_refuse_a_config_file_a_flag_and_a_saved_run(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nval_fraction = 1.0\n")
    with pytest.raises(config.ConfigError, match="val_fraction must be less than 1.0"):
        config.resolve(str(bad), {})
    with pytest.raises(config.ConfigError, match="val_fraction must be less than 1.0"):
        config.resolve(None, {"val_fraction": 1.0})
    saved = config.to_dict(config.TrainConfig()) | {"val_fraction": 1.0}
    with pytest.raises(config.ConfigError, match="val_fraction must be less than 1.0"):
        config.from_saved(config.TrainConfig, saved)


def test_resume_rules_come_from_the_declarations():
    run_control = {f.name for f in dataclasses.fields(config.TrainConfig)
                   if f.metadata["setting"].run_control}  # fmt: skip
    assert config.run_control_fields() == run_control
    assert {"max_steps", "max_time", "device", "threads", "precision"} <= run_control
    model, train = config.ModelConfig(), config.TrainConfig()
    assert config.resume(model, train, {"max_steps": 9})[1].max_steps == 9
    with pytest.raises(config.ConfigError, match="cannot change hidden_size"):
        config.resume(model, train, {"hidden_size": 9})


def test_a_run_of_an_older_version_loads_samples_and_resumes(tiny_run, tmp_path):
    """Checkpoints and config.toml files written before `bidirectional` went still work."""
    old = tmp_path / "old-run"
    old.mkdir()
    saved = torch.load(tiny_run / "last.pt", weights_only=True)
    saved["model_config"]["bidirectional"] = False
    torch.save(saved, old / "last.pt")
    toml = (
        (tiny_run / "config.toml")
        .read_text()
        .replace("[train]", "bidirectional = false\n\n[train]")
    )
    (old / "config.toml").write_text(toml)
    assert run_cli("sample", old, "--length", 10, "--seed", 1).exit_code == 0
    resumed = run_cli("train", "--resume", old, "--max-steps", saved["progress"]["step"] + 2)
    assert resumed.exit_code == 0, resumed.output
    again = run_cli("train", "--config", old / "config.toml", "--out", tmp_path / "rerun",
                    "--max-steps", 2, "--threads", 1)  # fmt: skip
    assert again.exit_code == 0, again.output


def test_runs_fit_an_80_column_terminal(tiny_run, tmp_path, monkeypatch):
    """A default run name gets a line of its own rather than folding over five lines."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    name = "shakespeare-peephole-lstm-20261201-103000"
    (folder / name).symlink_to(tiny_run, target_is_directory=True)
    console = Console(width=80, record=True, force_terminal=False)
    monkeypatch.setattr(runs_command, "out", console)
    runs_command.runs(folder)
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any(line.strip() == name for line in lines)  # whole, on one line
    wide = Console(width=160, record=True, force_terminal=False)
    monkeypatch.setattr(runs_command, "out", wide)
    runs_command.runs(folder)
    rows = [line for line in wide.export_text().splitlines() if name in line]
    assert len(rows) == 1 and "32" in rows[0]  # a wide terminal keeps one line per run


@pytest.mark.parametrize(
    ("command_name", "option", "bounds"),
    [
        ("train", "--seed", "(>= 0 and <= 4,294,967,295)"),
        ("train", "--max-steps", "(>= 0 and <= 1,000,000,000,000,000)"),
        ("sample", "--seed", "(>= 0 and <= 9,223,372,036,854,775,807)"),
        ("train", "--dropout", "(>= 0 and < 1)"),  # a float's bounds stay short
    ],
)
def test_help_shows_integer_bounds_exactly(monkeypatch, command_name, option, bounds):
    # `:g` printed 4.29497e+09, 1e+15 and 9.22337e+18: rounded, not the bounds.
    monkeypatch.setenv("COLUMNS", "400")  # one line an option: the bounds are not folded
    shown = run_cli(command_name, "--help")
    assert shown.exit_code == 0, shown.output
    (line,) = [line for line in shown.stdout.splitlines() if f" {option} " in line]
    assert bounds in line and "e+" not in line
