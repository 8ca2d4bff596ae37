"""Files that ship inside the package: the bundled configs and corpora, found by name."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

# An install puts the top-level configs/ and corpora/ into the package (pyproject.toml); a
# checkout run without installing it (`python -m charrnn` from its root, as on a machine where
# nothing can be installed) has them only beside the package, under these names.
CHECKOUT_FOLDERS = {"charrnn.configs": "configs", "charrnn.corpora": "corpora"}


def bundled_files(package: str, suffix: str) -> dict[str, Path]:
    """{name: path} of the files ending in `suffix` in `package` (e.g. charrnn.corpora)."""
    try:
        entries = [Path(str(entry)) for entry in importlib.resources.files(package).iterdir()]
    except ModuleNotFoundError:
        folder = Path(__file__).resolve().parent.parent / CHECKOUT_FOLDERS[package]
        entries = sorted(folder.iterdir()) if folder.is_dir() else []
    return {entry.stem: entry for entry in entries if entry.name.endswith(suffix)}
