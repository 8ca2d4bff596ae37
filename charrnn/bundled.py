"""Files that ship inside the package: the bundled configs and corpora, found by name."""

from __future__ import annotations

import importlib.resources
from pathlib import Path


def bundled_files(package: str, suffix: str) -> dict[str, Path]:
    """{name: path} of the files ending in `suffix` in `package` (e.g. charrnn.corpora)."""
    folder = importlib.resources.files(package)
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in folder.iterdir()
        if entry.name.endswith(suffix)
    }
