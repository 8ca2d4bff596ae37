"""Where charrnn keeps what it can rebuild: one cache root for everything the project caches.

The benchmarks' download of Tiny Shakespeare, the encoded corpora (charrnn.tokens) and the
compiled sampling step (kernels/, charrnn.kernel). Nothing in the cache is precious: deleting
the folder costs only the time to download, encode or compile again.

    $CHARRNN_CACHE                      when set (CI, tests and shared machines point it anywhere)
    $XDG_CACHE_HOME/charrnn             on Linux and other Unix, when XDG_CACHE_HOME is set
    ~/.cache/charrnn                    on Linux and other Unix otherwise
    ~/Library/Caches/charrnn            on macOS
    %LOCALAPPDATA%\\charrnn\\Cache        on Windows

Only the path is decided here; whoever writes to the cache creates the folders it needs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from charrnn.errors import CharRNNError

ENV_VAR = "CHARRNN_CACHE"


def cache_root() -> Path:
    """The folder under which charrnn caches things (not created here)."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        if not local:
            raise CharRNNError(f"cannot find a cache folder: set {ENV_VAR} or LOCALAPPDATA")
        return Path(local) / "charrnn" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "charrnn"
    # XDG: a relative XDG_CACHE_HOME is invalid and must be ignored.
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "charrnn"
    return Path.home() / ".cache" / "charrnn"
