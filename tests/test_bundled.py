"""The bundled configs and corpora are found installed, and in a checkout run uninstalled."""

from __future__ import annotations

import importlib.resources

from charrnn import bundled
from charrnn.config import bundled_configs
from charrnn.sources import bundled_corpora


def test_an_install_finds_every_bundled_config_and_corpus():
    assert {"default", "tiny", "gpu", "finetune"} <= set(bundled_configs())
    assert "shakespeare" in bundled_corpora()
    files = [*bundled_configs().values(), *bundled_corpora().values()]
    assert all(path.is_file() for path in files)


def test_an_uninstalled_checkout_finds_the_same_files_beside_the_package(monkeypatch):
    installed = {name: path.read_bytes() for name, path in bundled_configs().items()}
    corpora = {name: path.read_bytes() for name, path in bundled_corpora().items()}

    def not_installed(package):
        raise ModuleNotFoundError(f"No module named {package!r}")

    monkeypatch.setattr(importlib.resources, "files", not_installed)
    assert {n: p.read_bytes() for n, p in bundled_configs().items()} == installed
    assert {n: p.read_bytes() for n, p in bundled_corpora().items()} == corpora
    assert all(p.parent.name in ("configs", "corpora") for p in bundled_configs().values())


def test_a_missing_folder_means_nothing_bundled_not_a_crash(monkeypatch, tmp_path):
    def not_installed(package):
        raise ModuleNotFoundError(package)

    monkeypatch.setattr(importlib.resources, "files", not_installed)
    monkeypatch.setattr(bundled, "__file__", str(tmp_path / "charrnn" / "bundled.py"))
    assert bundled.bundled_files("charrnn.configs", ".toml") == {}
