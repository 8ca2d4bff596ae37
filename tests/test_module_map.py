"""The README's module map names every module of the package, and only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_module_map_matches_the_tree():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## For contributors: where things live", 1)[1]
    mapped = set(re.findall(r"^\| `(charrnn/[\w/]+\.py)` \|", section, flags=re.M))
    modules = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "charrnn").rglob("*.py")
        if path.name != "__main__.py" and (path.name != "__init__.py" or path.parent.name == "cli")
    }
    assert modules - mapped == set(), "modules missing from the README's map"
    assert mapped - modules == set(), "the README's map names modules that do not exist"
