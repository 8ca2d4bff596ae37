"""Every setting, declared once: name, type, default, bounds, help and where it belongs.

The dataclasses below are the only place a setting is written down. The ``train`` command's
options, their ``--help`` panels, TOML loading, validation and the rules for what a resumed
run may change are all derived from these declarations, and other commands that take the same
setting (``eval --batch-size``, ``sample --device``) reuse its declaration with their own
default.

Precedence, lowest first: the defaults below < a ``--config FILE.toml`` < flags the user typed.
A config file has two tables, ``[model]`` and ``[train]``; every key is a field below. Unknown
keys, wrong types and out-of-range values are refused with a message naming the key and what
it accepts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charrnn import files, tomlfile
from charrnn.bundled import bundled_files
from charrnn.cell_kinds import CELLS
from charrnn.errors import ConfigError, shown
from charrnn.machine import available_cores
from charrnn.rundir import MAX_STEP

# The --help panels of `charrnn train`, in the order they are shown.
MODEL, DATA, OPTIMISATION, RUN_CONTROL = "Model", "Data", "Optimisation", "Run control"
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Setting:
    """What a config field's metadata says about it (its name, type and default are the field's).

    ``flags`` are extra names for its option (``-b``, ``--lr``); ``run_control`` settings may
    change when a run is resumed, since they do not change what is learned; ``relocatable``
    ones may too, when what the new value names is verified to be the same (a moved corpus,
    by its fingerprint); ``kind`` is the type of a setting whose default is None; ``hint``
    follows a refusal of an out-of-range value. ``max_per_core`` bounds a value by this
    machine (that many per available core): it refuses what a person types, while a saved run
    from a bigger machine still loads (its value is clamped where it is used). ``item`` makes
    a repeatable setting: its value is a tuple of values of that type (default ``()``; the
    option is given once per value), each checked by the same rules; with ``single`` one value
    alone is a list of one (what older runs and config files wrote); with ``required`` it needs
    at least one value and no empty one (an empty path would name the current folder).
    ``shape`` settings decide the shapes of the model's weights (a fine-tune takes them from its
    checkpoint).
    """

    help: str
    panel: str
    flags: tuple[str, ...] = ()
    kind: type | None = None
    hint: str = ""
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    run_control: bool = False
    relocatable: bool = False
    max_per_core: int | None = None
    shape: bool = False
    single: bool = False
    item: type | None = None
    required: bool = False

    def bounds_text(self) -> str:
        """The accepted values in words, for --help and error messages."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        parts = []
        if self.min is not None:
            parts.append(f"{'>' if self.min_open else '>='} {_bound(self.min)}")
        if self.max is not None:
            parts.append(f"{'<' if self.max_open else '<='} {_bound(self.max)}")
        if self.max_per_core is not None:
            parts.append(f"<= {self.max_per_core} x the cores")
        return " and ".join(parts)

    def machine_max(self) -> int | None:
        """The bound of this machine (max_per_core x its cores), or None."""
        if self.max_per_core is None:
            return None
        return self.max_per_core * available_cores()


def _bound(value: float) -> str:
    """An integer bound exactly, in thousands (`4,294,967,295`, as other help texts write
    10,000): `:g` would round it to `4.29497e+09`, a value that is not the bound. A float in
    its short form (`0.5`, `1`)."""
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def setting(default: Any, help: str, panel: str, **rules: Any) -> Any:
    """A config field: its default, and its Setting (help text, panel, bounds) as metadata."""
    return field(default=default, metadata={"setting": Setting(help, panel, **rules)})


def _fraction(default: float, help: str, panel: str, **rules: Any) -> Any:
    """A value in [0, 1) (dropout and the like: 1 would remove everything)."""
    return setting(default, help, panel, min=0.0, max=1.0, max_open=True, **rules)


@dataclass(frozen=True)
class ModelConfig:
    cell: str = setting("lstm", "recurrent core", MODEL, choices=CELLS, shape=True)
    hidden_size: int = setting(512, "units per recurrent layer", MODEL, min=1, shape=True)
    num_layers: int = setting(1, "stacked recurrent layers", MODEL, min=1, shape=True)
    embedding_dim: int = setting(
        64, "character embedding size; 0 = the lesson's one-hot input", MODEL, min=0, shape=True
    )
    dropout: float = _fraction(0.0, "dropout between layers and before the head", MODEL)
    weight_drop: float = _fraction(
        0.0,
        "DropConnect on the recurrent weights (AWD-LSTM's weight drop): the strongest "
        "regulariser for a small corpus",
        MODEL,
    )
    bias: bool = setting(True, "learn bias terms in the recurrent core", MODEL, shape=True)
    nonlinearity: str = setting(
        "tanh", "activation of the plain rnn cell", MODEL, choices=("tanh", "relu"), shape=True
    )


@dataclass(frozen=True)
class TrainConfig:
    auto_size: bool = setting(
        False,
        "size the model for the time budget and this machine: time a few candidate shapes "
        "first (inside the budget) and pick the size, batch, learning rate and regularisation "
        "(charrnn/autosize.py); any of them given in the config or as a flag is kept; the run's "
        "config.toml records the choice",
        MODEL,
    )
    corpus: tuple[str, ...] = setting(
        ("shakespeare",),
        "bundled corpus name, UTF-8 text file or folder (read recursively)",
        DATA,
        flags=("-c",),
        item=str,
        single=True,
        required=True,
        relocatable=True,  # --resume --corpus: a moved copy, accepted when its fingerprint matches
    )
    include: tuple[str, ...] = setting(
        (), "in folders, only files whose relative path matches this glob (** allowed)", DATA,
        item=str,
    )  # fmt: skip
    exclude: tuple[str, ...] = setting(
        (), "in folders, leave out files whose relative path matches this glob", DATA, item=str
    )
    val_corpus: str = setting(
        "", "a separate validation text (file or folder); empty = the last val_fraction", DATA
    )
    max_vocab: int = setting(
        0,
        "keep the N most frequent characters, the rest become U+FFFD; 0 = all of them "
        "(up to 10,000)",
        DATA,
        min=0,
    )
    val_fraction: float = _fraction(0.1, "last fraction of the text held out for validation", DATA)
    batch_size: int = setting(32, "parallel rows of text per step", DATA, flags=("-b",), min=1)
    seq_length: int = setting(
        100, "characters per row per step (BPTT length)", DATA, flags=("-s",), min=1
    )
    shift_epochs: bool = setting(True, "start each epoch at a different point of the cycle", DATA)
    optimizer: str = setting("adamw", "optimiser", OPTIMISATION, choices=("adam", "adamw"))
    learning_rate: float = setting(
        2e-3, "peak learning rate", OPTIMISATION, flags=("--lr",), min=0.0, min_open=True
    )
    lr_schedule: str = setting(
        "cosine", "decay after warm-up", OPTIMISATION, choices=("cosine", "linear", "constant")
    )
    min_lr_fraction: float = setting(
        0.05, "final learning rate / peak", OPTIMISATION, min=0.0, max=1.0
    )
    warmup_steps: int = setting(100, "linear warm-up steps", OPTIMISATION, min=0)
    weight_decay: float = setting(
        0.0, "decoupled weight decay (adamw) or L2 (adam)", OPTIMISATION, min=0.0
    )
    grad_clip: float = setting(
        5.0, "clip the gradient norm to this; 0 = off", OPTIMISATION, min=0.0
    )
    ema: float = _fraction(
        0.0,
        "average the weights (an EMA) with at most this decay, e.g. 0.999; it ramps up as "
        "(1+n)/(10+n) after n steps, so it covers about the last tenth of the steps until it "
        "reaches the cap; the average is evaluated and saved in best.pt and last.pt as the "
        "model; 0 = off",
        OPTIMISATION,
    )
    # At most 2**32 - 1: epoch shifts seed a generator with seed * 1_000_003 + epoch, which
    # must fit torch's 64 bits.
    seed: int = setting(
        1337, "random seed (weights, dropout, epoch shifts)", OPTIMISATION, min=0, max=2**32 - 1
    )
    max_steps: int = setting(
        0, "stop after this many steps; 0 = no limit", RUN_CONTROL, min=0, max=MAX_STEP,
        run_control=True,
    )  # fmt: skip
    max_epochs: float = setting(
        0.0, "stop after this many epochs; 0 = no limit", RUN_CONTROL, min=0.0, run_control=True
    )
    max_time: float = setting(
        0.0,
        "stop after this many seconds of this invocation; 0 = no limit",
        RUN_CONTROL,
        min=0.0,
        run_control=True,
    )
    eval_every: int = setting(
        200, "evaluate every N steps; 0 = only at the end", RUN_CONTROL, min=0, run_control=True
    )
    eval_chars: int = setting(
        0,
        "characters of the validation split scored by periodic evaluations; 0 = all "
        "(the final evaluation always scores all)",
        RUN_CONTROL,
        min=0,
        run_control=True,
    )
    checkpoint_every: int = setting(
        500,
        "write last.pt every N steps; 0 = only at the end",
        RUN_CONTROL,
        min=0,
        run_control=True,
    )
    device: str = setting("auto", "where to run", RUN_CONTROL, choices=DEVICES, run_control=True)
    threads: int = setting(
        0, "CPU threads; 0 = all cores", RUN_CONTROL, min=0, max_per_core=4, run_control=True
    )
    precision: str = setting(
        "auto",
        "autocast: auto = bf16 on GPUs; on CPUs with bf16 instructions, the faster of bf16 and "
        "fp32 as timed before a run with a time limit (bf16 without one)",
        RUN_CONTROL,
        choices=PRECISIONS,
        run_control=True,
    )


SECTIONS: dict[str, type] = {"model": ModelConfig, "train": TrainConfig}

# Keys that older versions wrote and this one no longer has: what a saved value means now.
# `bidirectional` only ever existed to be refused (a generator reads left to right).
RETIRED_KEYS = {
    "bidirectional": (
        False,
        "a bidirectional model reads text right to left as well, so it cannot generate text "
        "one character after another",
    )
}


def fields_of(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def all_fields() -> dict[str, dataclasses.Field]:
    """Every declared setting of every section, by name."""
    return {name: f for cls in SECTIONS.values() for name, f in fields_of(cls).items()}


def section_of(name: str) -> str:
    for section, cls in SECTIONS.items():
        if name in fields_of(cls):
            return section
    raise ConfigError(f"unknown setting {shown(name)}; valid: {', '.join(all_fields())}")


def declaration(name: str, cls: type | None = None) -> tuple[type, Any, Setting]:
    """(type, default, Setting) of a declared setting: of a model or training setting, or of
    the settings of `cls` (SampleConfig)."""
    known = all_fields() if cls is None else fields_of(cls)
    f = known.get(name)
    if f is None:
        raise ConfigError(f"unknown setting {shown(name)}; valid: {', '.join(known)}")
    declared = f.metadata["setting"]
    return declared.kind or type(f.default), f.default, declared


def bundled_configs() -> dict[str, Path]:
    return bundled_files("charrnn.configs", ".toml")


def resolve_config(name_or_path: str) -> Path:
    """A bundled config name (``tiny``) or a path to a TOML file."""
    bundled = bundled_configs()
    if name_or_path in bundled:
        return bundled[name_or_path]
    path = Path(name_or_path).expanduser()
    files.refuse_special(path, ConfigError, "config")  # a FIFO would block: refused unopened
    if not path.is_file():
        known = ", ".join(sorted(bundled))
        raise ConfigError(
            f"config {name_or_path!r} is neither a file nor a bundled config (bundled: {known})"
        )
    return path


def load_toml(name_or_path: str) -> dict[str, dict[str, Any]]:
    """Read a config file into {section: {key: value}}, refusing unknown tables and keys."""
    path = resolve_config(name_or_path)
    raw = tomlfile.read(path)  # a regular file, at most 1 MB, nested at most 32 deep
    result: dict[str, dict[str, Any]] = {}
    for section, values in raw.items():
        if not isinstance(values, dict) and section in all_fields():
            raise ConfigError(  # a setting written above every table
                f"config {str(path)!r}: {section} is outside a table; put it under "
                f"[{section_of(section)}]"
            )
        if section not in SECTIONS or not isinstance(values, dict):
            raise ConfigError(
                f"config {str(path)!r}: unknown table [{section}]; use [model] and [train]"
            )
        try:
            result[section] = without_retired_keys(values)
        except ConfigError as error:
            raise ConfigError(f"config {str(path)!r}: {error}") from None
        known = fields_of(SECTIONS[section])
        for key, value in result[section].items():
            if key in all_fields() and key not in known:
                raise ConfigError(
                    f"config {str(path)!r}: {key} belongs in [{section_of(key)}], not [{section}]"
                )
            if key not in known:
                raise ConfigError(
                    f"config {str(path)!r}: unknown key {shown(key)} in [{section}]; "
                    f"valid keys: {', '.join(known)}"
                )
            try:  # here, so that the message names the file the value came from
                check_value(key, value, SECTIONS[section], typed=True)
            except ConfigError as error:
                raise ConfigError(f"config {str(path)!r}: {error}") from None
    return result


def without_retired_keys(values: dict[str, Any]) -> dict[str, Any]:
    """`values` less the keys older versions wrote; a retired key set to a refused value fails.

    Old run directories (their config.toml and checkpoints) keep loading: a saved
    ``bidirectional = false`` meant what every model now is.
    """
    kept = dict(values)
    for key, (meaning, refusal) in RETIRED_KEYS.items():
        if key in kept and kept.pop(key) != meaning:
            raise ConfigError(f"{key} must be {str(meaning).lower()}: {refusal}")
    return kept


def check_value(name: str, value: Any, cls: type | None = None, *, typed: bool = False) -> Any:
    """Type-check and range-check one value; returns it converted (int -> float where due, a
    repeatable setting's list -> a tuple).

    typed: given now (a flag, a config file), not read from a saved run: this machine's bounds
    apply too.
    """
    expected, default, rules = declaration(name, cls)
    most = rules.machine_max() if typed else None
    if most is not None and isinstance(value, int) and value > most:
        cores = f"{rules.max_per_core} x the {available_cores()} cores of this machine"
        raise ConfigError(f"{name} must be at most {most} ({cores}), got {shown(value)}")
    if value is None and default is None:
        return value
    if rules.single and rules.item is not None and isinstance(value, rules.item):
        value = (value,)  # `corpus = "a.txt"`, as older runs and config files wrote it
    if rules.item is None:
        return _check_one(name, value, expected, rules)
    if not isinstance(value, (list, tuple)):
        one = f"a {rules.item.__name__} or " if rules.single else ""  # `corpus = "a.txt"` too
        raise ConfigError(
            f"{name} must be {one}a list of {rules.item.__name__}, got "
            f"{type(value).__name__} {shown(value)}"
        )
    values = tuple(_check_one(name, one, rules.item, rules) for one in value)
    if rules.required and not values:
        raise ConfigError(f"{name} must name at least one, got an empty list")
    blank = next((one for one in values if not one.strip()), None) if rules.required else None
    if blank is not None:  # ("" itself is falsy: hence the None)
        raise ConfigError(f"{name} must not hold an empty name, got {shown(blank)}")
    return values


def _check_one(name: str, value: Any, expected: type, rules: Setting) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise ConfigError(f"{name} must be a finite number, got a huge integer") from None
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(
            f"{name} must be {expected.__name__}, got {type(value).__name__} {shown(value)}"
        )
    if expected is float and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {shown(value)}")
    if rules.choices and value not in rules.choices:
        raise ConfigError(f"{name} must be {rules.bounds_text()}; got {shown(value)}")
    low, high = rules.min, rules.max
    if low is not None and (value < low or (rules.min_open and value == low)):
        bound = f"greater than {low}" if rules.min_open else f"at least {low}"
        raise ConfigError(f"{name} must be {bound}, got {shown(value)}{rules.hint}")
    if high is not None and (value > high or (rules.max_open and value == high)):
        bound = f"less than {high}" if rules.max_open else f"at most {high}"
        raise ConfigError(f"{name} must be {bound}, got {shown(value)}{rules.hint}")
    return value


def build(cls: type, values: dict[str, Any], *, typed: bool = False) -> Any:
    known = fields_of(cls)
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown key {shown(key)}; valid keys: {', '.join(known)}")
    return cls(**{key: check_value(key, v, cls, typed=typed) for key, v in values.items()})


def from_saved(cls: type, values: Any) -> Any:
    """A config saved in a checkpoint, by this or an older version."""
    if not isinstance(values, dict):
        raise ConfigError(f"a saved {cls.__name__} must be a table, got {type(values).__name__}")
    return build(cls, without_retired_keys(values))


def resolve(config_file: str | None, overrides: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """Defaults < config file < overrides (flat {key: value}, only what the user typed)."""
    sections: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    if config_file is not None:
        for section, values in load_toml(config_file).items():
            sections[section].update(values)
    for key, value in overrides.items():
        sections[section_of(key)][key] = value
    model, train = sections["model"], sections["train"]
    return build(ModelConfig, model, typed=True), build(TrainConfig, train, typed=True)


def given_keys(config_file: str | None, overrides: dict[str, Any]) -> frozenset[str]:
    """The settings a user set: the keys of the config file and the flags typed."""
    keys = set(overrides)
    if config_file is not None:
        for values in load_toml(config_file).values():
            keys.update(values)
    return frozenset(keys)


def shape_fields() -> set[str]:
    """Model fields that decide the shapes of the weights (a fine-tune keeps its checkpoint's)."""
    return {name for name, (_, _, s) in _declarations(ModelConfig) if s.shape}


def run_control_fields() -> set[str]:
    """Training fields a resumed run may change (they do not change what is learned)."""
    return {name for name, (_, _, s) in _declarations(TrainConfig) if s.run_control}


def _declarations(cls: type) -> list[tuple[str, tuple[type, Any, Setting]]]:
    return [(name, declaration(name)) for name in fields_of(cls)]


def resume(
    model_config: ModelConfig, train_config: TrainConfig, overrides: dict[str, Any]
) -> tuple[ModelConfig, TrainConfig]:
    """A run's saved configs with the run-control overrides applied; other changes refused."""
    # A relocatable setting (the corpus) may change too: the trainer verifies what it names.
    allowed = run_control_fields() | {
        n for n, (_, _, s) in _declarations(TrainConfig) if s.relocatable
    }
    saved = {**to_dict(model_config), **to_dict(train_config)}
    refused = [k for k, v in overrides.items() if k not in allowed and saved.get(k) != v]
    if refused:
        raise ConfigError(
            f"cannot change {', '.join(refused)} when resuming: it would change the model, the "
            f"data or the optimiser; only {', '.join(sorted(allowed))} may change"
        )
    changes = {k: check_value(k, v, typed=True) for k, v in overrides.items() if k in allowed}
    return model_config, build(TrainConfig, {**to_dict(train_config), **changes})


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def to_toml(model: ModelConfig, train: TrainConfig, comment: str = "") -> str:
    """The resolved config as TOML, written next to a run so it can be rerun with --config;
    `comment` (lines) goes on top."""
    lines = [f"# {line}" for line in comment.splitlines()]
    for section, config in (("model", model), ("train", train)):
        lines.append(f"[{section}]")
        for key, value in to_dict(config).items():
            lines.append(f"{key} = {tomlfile.value(value)}")
        lines.append("")
    return "\n".join(lines)
