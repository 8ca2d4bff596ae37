"""Config loading: precedence, refusals with the key named, round trip through TOML."""

from __future__ import annotations

import pytest

from charrnn import config
from charrnn.errors import ConfigError


def test_precedence_defaults_file_flags(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[model]\nhidden_size = 64\nnum_layers = 2\n[train]\nbatch_size = 7\n")
    model, train = config.resolve(str(path), {"hidden_size": 99})
    assert model.hidden_size == 99  # flag beats file
    assert model.num_layers == 2  # file beats default
    assert train.batch_size == 7
    assert train.seq_length == config.TrainConfig().seq_length  # default


@pytest.mark.parametrize(
    "text, message",
    [
        ("[model]\nhiden_size = 3\n", "unknown key 'hiden_size'.*valid keys: cell"),
        ("[modle]\n", r"unknown table \[modle\]"),
        ("[model]\nhidden_size = 'big'\n", "hidden_size must be int"),
        ("[model]\nhidden_size = 0\n", "hidden_size must be at least 1"),
        ("[model]\ncell = 'lstmm'\n", "cell must be one of lstm, gru"),
        ("[model]\ndropout = 1.0\n", "dropout must be less than 1.0"),
        ("[train]\nlearning_rate = 0\n", "learning_rate must be greater than 0"),
        ("[train]\nbatch_size = true\n", "batch_size must be int"),
        ("[model\n", "not valid TOML"),
        ("hidden_size = 32\n", r"hidden_size is outside a table; put it under \[model\]"),
        ("[model]\nmax_steps = 10\n", r"max_steps belongs in \[train\], not \[model\]"),
        ("[train]\ncorpus = 5\n", "corpus must be a str or a list of str, got int 5"),
    ],
)
def test_bad_files_are_refused_naming_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as refused:
        config.resolve(str(path), {})
    if "TOML" not in message:  # every refusal of a value says which file it came from
        assert str(refused.value).startswith(f"config {str(path)!r}: ")


def test_int_is_accepted_for_float():
    _, train = config.resolve(None, {"max_time": 5})
    assert train.max_time == 5.0 and isinstance(train.max_time, float)


def test_bundled_configs_load_and_round_trip(tmp_path):
    for name in ("default", "tiny", "gpu"):
        model, train = config.resolve(name, {})
        path = tmp_path / f"{name}.toml"
        path.write_text(config.to_toml(model, train))
        assert config.resolve(str(path), {}) == (model, train)


def test_missing_config_lists_bundled():
    with pytest.raises(ConfigError, match="bundled: default, finetune, gpu, tiny"):
        config.resolve("nope", {})
