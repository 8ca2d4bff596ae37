"""Tiny Shakespeare for the benchmarks: from --corpus, else the cache, else downloaded once.

The benchmarks measure on Tiny Shakespeare (char-rnn's 1 MB corpus) so their losses compare
with published ones. It is not in the repository: the first run downloads it from its canonical
source into the cache (charrnn.cache: $CHARRNN_CACHE, else ~/.cache/charrnn on Linux), checks
its sha256 and keeps it. Offline, pass the file with --corpus PATH.

A download either gives the whole, verified file or leaves nothing: it is written to a
temporary file beside the target and renamed over it only once its hash is right.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from charrnn.cache import cache_root
from charrnn.errors import CorpusError

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SIZE = 1_115_394
# Seconds for the connection and for each read (urllib applies one socket timeout to both), so
# an offline machine fails in seconds. Name resolution is the system's and not covered by it.
TIMEOUT = 10.0
CHUNK = 1 << 16


def cached_path() -> Path:
    return cache_root() / "downloads" / "tinyshakespeare.txt"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def why(error: Exception, timeout: float) -> str:
    """One line on why a download failed."""
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(error, urllib.error.HTTPError):
        reason = f"HTTP {error.code} {error.reason}"
    if isinstance(reason, TimeoutError):  # socket.timeout, on connect or on a read
        return f"timed out after {timeout:g} s"
    return " ".join(str(reason).split()) or type(reason).__name__


def how_to_pass_it(destination: Path) -> str:
    return f"download it yourself and pass it with --corpus PATH, or put it at {destination}"


def download(url: str, destination: Path, sha256: str, size: int, timeout: float = TIMEOUT) -> Path:
    """Download `url` to `destination` (atomically), refusing anything but `size` bytes of
    `sha256`. Raises CorpusError, in one line, when the server cannot be reached or the file
    is not the expected one; nothing is left at `destination` or beside it then."""
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=destination.parent, prefix=f".{destination.name}.", suffix=".part"
        )
    except OSError as error:
        raise CorpusError(
            f"cannot write to {destination.parent} ({error.strerror}); set CHARRNN_CACHE "
            "to a folder you can write to"
        ) from None
    temporary = Path(temporary)
    try:
        digest, received = hashlib.sha256(), 0
        with os.fdopen(handle, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    # Read one chunk past the expected size at most: a wrong (or endless)
                    # answer is refused without filling the disk.
                    while received <= size and (block := response.read(CHUNK)):
                        digest.update(block)
                        out.write(block)
                        received += len(block)
            except (OSError, http.client.HTTPException) as error:  # URLError is an OSError
                raise CorpusError(f"cannot download {url}: {why(error, timeout)}") from None
            out.flush()
            os.fsync(out.fileno())
        if received != size or digest.hexdigest() != sha256:
            got = f"{received:,} bytes" if received <= size else f"over {size:,} bytes"
            raise CorpusError(
                f"{url} is not the expected file ({got}, sha256 {digest.hexdigest()[:16]}...; "
                f"expected {size:,} bytes, sha256 {sha256[:16]}...): refused, nothing kept"
            )
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)
    return destination


def tiny_shakespeare(url: str | None = None, timeout: float = TIMEOUT) -> Path:
    """The cached Tiny Shakespeare, downloaded (and verified) the first time.

    A cached file whose hash is wrong (a damaged disk, an edit) is downloaded again.
    Raises CorpusError with a one-line hint on how to pass the file by hand.
    """
    path = cached_path()
    if path.is_file() and path.stat().st_size == SIZE and sha256_of(path) == SHA256:
        return path
    try:
        return download(url or URL, path, SHA256, SIZE, timeout)
    except CorpusError as error:
        raise CorpusError(f"{error}; {how_to_pass_it(path)}") from None


def corpus(path: Path | None, url: str | None = None) -> Path:
    """The corpus a benchmark trains on: `path` when given (a --corpus flag), else Tiny
    Shakespeare from the cache or the network."""
    if path is not None:
        if not path.is_file():
            raise CorpusError(f"--corpus {path}: no such file")
        return path
    return tiny_shakespeare(url)
