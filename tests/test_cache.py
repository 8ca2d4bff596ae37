"""The cache root: $CHARRNN_CACHE, else the platform's user cache folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from charrnn import cache
from charrnn.errors import CharRNNError


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A clean environment: no override, no XDG, a known home folder."""
    for name in (cache.ENV_VAR, "XDG_CACHE_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path / "home"))
    return tmp_path / "home"


def test_the_environment_variable_wins_everywhere(home, monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for platform in ("linux", "darwin", "win32"):
        monkeypatch.setattr(cache.sys, "platform", platform)
        assert cache.cache_root() == tmp_path / "mine"


def test_override_expands_the_home_folder(home, monkeypatch):
    monkeypatch.setenv(cache.ENV_VAR, "~/somewhere")
    monkeypatch.setenv("HOME", str(home))
    assert cache.cache_root() == home / "somewhere"


def test_linux_uses_xdg_cache_home_else_dot_cache(home, monkeypatch, tmp_path):
    monkeypatch.setattr(cache.sys, "platform", "linux")
    assert cache.cache_root() == home / ".cache" / "charrnn"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == tmp_path / "xdg" / "charrnn"
    # The XDG spec: a relative path is invalid and ignored.
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert cache.cache_root() == home / ".cache" / "charrnn"


def test_macos_uses_library_caches(home, monkeypatch):
    monkeypatch.setattr(cache.sys, "platform", "darwin")
    assert cache.cache_root() == home / "Library" / "Caches" / "charrnn"


def test_windows_uses_local_app_data(home, monkeypatch, tmp_path):
    monkeypatch.setattr(cache.sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "AppData" / "Local"))
    assert cache.cache_root() == tmp_path / "AppData" / "Local" / "charrnn" / "Cache"
    monkeypatch.delenv("LOCALAPPDATA")
    with pytest.raises(CharRNNError, match="CHARRNN_CACHE"):
        cache.cache_root()


def test_the_tests_never_touch_the_users_cache():
    # conftest points CHARRNN_CACHE at a temporary folder for the whole session.
    root = cache.cache_root()
    assert root != Path.home() / ".cache" / "charrnn"
    assert root.name == "charrnn-cache"
