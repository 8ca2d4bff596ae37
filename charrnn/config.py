"""Configuration: frozen dataclasses for the model and for training, loaded from TOML.

Precedence, lowest first: the defaults below < a ``--config FILE.toml`` < flags the user typed.
A config file has two tables, ``[model]`` and ``[train]``; every key is a field below. Unknown
keys, wrong types and out-of-range values are refused with a message naming the key and what
it accepts.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charrnn.bundled import bundled_files
from charrnn.cell_kinds import CELLS
from charrnn.errors import ConfigError


def _opt(default: Any, help: str, **rules: Any) -> Any:
    """A config field with its help text and validation rules (choices, min, max, ...)."""
    return field(default=default, metadata={"help": help, **rules})


@dataclass(frozen=True)
class ModelConfig:
    cell: str = _opt("lstm", "recurrent core", choices=CELLS)
    hidden_size: int = _opt(512, "units per recurrent layer", min=1)
    num_layers: int = _opt(1, "stacked recurrent layers", min=1)
    embedding_dim: int = _opt(64, "character embedding size; 0 = the lesson's one-hot input", min=0)
    dropout: float = _opt(
        0.0, "dropout between layers and before the head", min=0.0, max=1.0, max_open=True
    )
    weight_drop: float = _opt(
        0.0,
        "DropConnect on the recurrent weights (AWD-LSTM's weight drop): the strongest "
        "regulariser for a small corpus",
        min=0.0,
        max=1.0,
        max_open=True,
    )
    bias: bool = _opt(True, "learn bias terms in the recurrent core")
    nonlinearity: str = _opt("tanh", "activation of the plain rnn cell", choices=("tanh", "relu"))
    bidirectional: bool = _opt(False, "refused: a generator reads left to right")


@dataclass(frozen=True)
class TrainConfig:
    corpus: str = _opt("shakespeare", "bundled corpus name or path to a UTF-8 text file")
    val_fraction: float = _opt(
        0.1, "last fraction of the text held out for validation", min=0.0, max=1.0, max_open=True
    )
    batch_size: int = _opt(32, "parallel rows of text per step", min=1)
    seq_length: int = _opt(100, "characters per row per step (BPTT length)", min=1)
    shift_epochs: bool = _opt(True, "start each epoch at a different point of the cycle")
    optimizer: str = _opt("adamw", "optimiser", choices=("adam", "adamw"))
    learning_rate: float = _opt(2e-3, "peak learning rate", min=0.0, min_open=True)
    lr_schedule: str = _opt(
        "cosine", "decay after warm-up", choices=("cosine", "linear", "constant")
    )
    min_lr_fraction: float = _opt(0.05, "final learning rate / peak", min=0.0, max=1.0)
    warmup_steps: int = _opt(100, "linear warm-up steps", min=0)
    weight_decay: float = _opt(0.0, "decoupled weight decay (adamw) or L2 (adam)", min=0.0)
    grad_clip: float = _opt(5.0, "clip the gradient norm to this; 0 = off", min=0.0)
    max_steps: int = _opt(0, "stop after this many steps; 0 = no limit", min=0, run_control=True)
    max_epochs: float = _opt(
        0.0, "stop after this many epochs; 0 = no limit", min=0.0, run_control=True
    )
    max_time: float = _opt(
        0.0,
        "stop after this many seconds of this invocation; 0 = no limit",
        min=0.0,
        run_control=True,
    )
    eval_every: int = _opt(
        200, "evaluate every N steps; 0 = only at the end", min=0, run_control=True
    )
    eval_chars: int = _opt(
        0,
        "characters of the validation split scored by periodic evaluations; 0 = all "
        "(the final evaluation always scores all)",
        min=0,
        run_control=True,
    )
    checkpoint_every: int = _opt(
        500, "write last.pt every N steps; 0 = only at the end", min=0, run_control=True
    )
    # At most 2**32 - 1: epoch shifts seed a generator with seed * 1_000_003 + epoch, which
    # must fit torch's 64 bits.
    seed: int = _opt(1337, "random seed (weights, dropout, epoch shifts)", min=0, max=2**32 - 1)
    device: str = _opt(
        "auto", "where to train", choices=("auto", "cpu", "cuda", "mps"), run_control=True
    )
    threads: int = _opt(0, "CPU threads; 0 = all cores", min=0, run_control=True)
    precision: str = _opt(
        "auto",
        "autocast: auto = bf16 where the hardware is fast at it (AMX CPUs, GPUs)",
        choices=("auto", "fp32", "bf16", "fp16"),
        run_control=True,
    )


SECTIONS: dict[str, type] = {"model": ModelConfig, "train": TrainConfig}


def fields_of(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def all_field_names() -> dict[str, str]:
    """Every config key -> the section it belongs to."""
    return {name: section for section, cls in SECTIONS.items() for name in fields_of(cls)}


def bundled_configs() -> dict[str, Path]:
    return bundled_files("charrnn.configs", ".toml")


def resolve_config(name_or_path: str) -> Path:
    """A bundled config name (``tiny``) or a path to a TOML file."""
    bundled = bundled_configs()
    if name_or_path in bundled:
        return bundled[name_or_path]
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        known = ", ".join(sorted(bundled))
        raise ConfigError(
            f"config {name_or_path!r} is neither a file nor a bundled config (bundled: {known})"
        )
    return path


def load_toml(name_or_path: str) -> dict[str, dict[str, Any]]:
    """Read a config file into {section: {key: value}}, refusing unknown tables and keys."""
    path = resolve_config(name_or_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config {str(path)!r}: {error}") from None
    except ValueError as error:  # TOMLDecodeError, or an integer of over 4300 digits
        raise ConfigError(f"config {str(path)!r} is not valid TOML: {error}") from None
    result: dict[str, dict[str, Any]] = {}
    for section, values in raw.items():
        if section not in SECTIONS or not isinstance(values, dict):
            raise ConfigError(
                f"config {str(path)!r}: unknown table [{section}]; use [model] and [train]"
            )
        known = fields_of(SECTIONS[section])
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"config {str(path)!r}: unknown key {key!r} in [{section}]; "
                    f"valid keys: {', '.join(known)}"
                )
        result[section] = dict(values)
    return result


def check_value(cls: type, name: str, value: Any) -> Any:
    """Type-check and range-check one value; returns it converted (int -> float where due)."""
    f = fields_of(cls)[name]
    rules = f.metadata
    expected = type(f.default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise ConfigError(f"{name} must be a finite number, got a huge integer") from None
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(
            f"{name} must be {expected.__name__}, got {type(value).__name__} {value!r}"
        )
    if expected is float and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if "choices" in rules and value not in rules["choices"]:
        raise ConfigError(f"{name} must be one of {', '.join(rules['choices'])}; got {value!r}")
    low, high = rules.get("min"), rules.get("max")
    if low is not None and (value < low or (rules.get("min_open") and value == low)):
        bound = f"greater than {low}" if rules.get("min_open") else f"at least {low}"
        raise ConfigError(f"{name} must be {bound}, got {value!r}")
    if high is not None and (value > high or (rules.get("max_open") and value == high)):
        bound = f"less than {high}" if rules.get("max_open") else f"at most {high}"
        raise ConfigError(f"{name} must be {bound}, got {value!r}")
    return value


def build(cls: type, values: dict[str, Any]) -> Any:
    known = fields_of(cls)
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown key {key!r}; valid keys: {', '.join(known)}")
    checked = {key: check_value(cls, key, value) for key, value in values.items()}
    config = cls(**checked)
    if isinstance(config, ModelConfig) and config.bidirectional:
        raise ConfigError(
            "bidirectional must be false: a bidirectional model reads text right to left as "
            "well, so it cannot generate text one character after another"
        )
    return config


def resolve(config_file: str | None, overrides: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """Defaults < config file < overrides (flat {key: value}, only what the user typed)."""
    sections: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    if config_file is not None:
        for section, values in load_toml(config_file).items():
            sections[section].update(values)
    owner = all_field_names()
    for key, value in overrides.items():
        if key not in owner:
            raise ConfigError(f"unknown option {key!r}; valid: {', '.join(owner)}")
        sections[owner[key]][key] = value
    return build(ModelConfig, sections["model"]), build(TrainConfig, sections["train"])


def run_control_fields() -> set[str]:
    """Training fields a resumed run may change (they do not change what is learned)."""
    return {name for name, f in fields_of(TrainConfig).items() if f.metadata.get("run_control")}


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def to_toml(model: ModelConfig, train: TrainConfig) -> str:
    """The resolved config as TOML, written next to a run so it can be rerun with --config."""
    lines = []
    for section, config in (("model", model), ("train", train)):
        lines.append(f"[{section}]")
        for key, value in to_dict(config).items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
