"""The benchmarks' corpus: downloaded once, verified, atomic, and quick to fail offline.

Every download here is from a server on 127.0.0.1 that the test starts itself, serving a slice
of the bundled corpus: nothing leaves the machine and nothing outside the repository is read.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from benchmarks import run as benchmarks_run
from benchmarks import tiny_shakespeare as tiny
from charrnn.errors import CorpusError
from tests.conftest import play_text

BODY = play_text(5000).encode("utf-8")
DIGEST = hashlib.sha256(BODY).hexdigest()


class Server:
    """An HTTP server on 127.0.0.1: /text answers BODY, /silent accepts and never answers."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                if self.path == "/silent":
                    server.release.wait(30)  # far past the client's timeout; then hang up
                    return
                body = {"/text": BODY, "/longer": BODY + b"more"}.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        # A short poll: shutdown() waits for it.
        self.thread = threading.Thread(target=self.http.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}{path}"

    def close(self) -> None:
        self.release.set()
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server()
    yield server
    server.close()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A port on 127.0.0.1 that is bound but not listening: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/input.txt"


@pytest.fixture
def as_tiny_shakespeare(monkeypatch):
    """Make BODY the expected file, so that the cache logic runs against the local server."""
    monkeypatch.setattr(tiny, "SHA256", DIGEST)
    monkeypatch.setattr(tiny, "SIZE", len(BODY))


def test_a_download_is_the_whole_verified_file_and_nothing_else(server, tmp_path):
    target = tmp_path / "cache" / "downloads" / "text.txt"
    assert tiny.download(server.url("/text"), target, DIGEST, len(BODY)) == target
    assert target.read_bytes() == BODY
    assert list(target.parent.iterdir()) == [target]  # no temporary left beside it


@pytest.mark.parametrize(
    ("path", "digest", "size", "message"),
    [
        ("/text", "0" * 64, len(BODY), "not the expected file"),  # same size, other hash
        ("/longer", DIGEST, len(BODY), "not the expected file"),  # longer than announced
        ("/missing", DIGEST, len(BODY), "HTTP 404"),
    ],
    ids=["other hash", "longer", "not found"],
)
def test_a_wrong_file_is_refused_and_nothing_is_kept(server, tmp_path, path, digest, size,
                                                     message):  # fmt: skip
    target = tmp_path / "downloads" / "text.txt"
    with pytest.raises(CorpusError, match=message) as refused:
        tiny.download(server.url(path), target, digest, size)
    assert "\n" not in str(refused.value)
    assert list(target.parent.iterdir()) == []


def test_a_server_that_never_answers_fails_on_the_timeout(server, tmp_path):
    target = tmp_path / "text.txt"
    with pytest.raises(CorpusError, match="timed out after 0.2 s"):
        tiny.download(server.url("/silent"), target, DIGEST, len(BODY), timeout=0.2)
    # Without a timeout, the server's hang-up 30 s later would be a different error.
    assert server.requests == ["/silent"] and list(tmp_path.iterdir()) == []


def test_tiny_shakespeare_is_downloaded_once_into_the_cache(
    server, tmp_path, monkeypatch, as_tiny_shakespeare
):
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))
    first = tiny.tiny_shakespeare(server.url("/text"))
    assert first == tmp_path / "cache" / "downloads" / "tinyshakespeare.txt"
    assert first.read_bytes() == BODY
    assert tiny.tiny_shakespeare(server.url("/text")) == first
    assert server.requests == ["/text"]  # the second call read the cache
    # A damaged cached copy is not trusted: it is downloaded again.
    first.write_bytes(BODY[:-1] + b"?")
    assert tiny.tiny_shakespeare(server.url("/text")).read_bytes() == BODY
    assert server.requests == ["/text", "/text"]


def test_offline_the_error_says_how_to_pass_the_file(tmp_path, monkeypatch, refused_url):
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CorpusError) as offline:
        tiny.tiny_shakespeare(refused_url)
    message = str(offline.value)
    assert message.startswith(f"cannot download {refused_url}: ")
    assert "--corpus PATH" in message and "\n" not in message
    assert list((tmp_path / "cache" / "downloads").iterdir()) == []


def test_the_benchmark_offline_prints_one_line_and_exits_1(tmp_path, monkeypatch, capsys,
                                                            refused_url):  # fmt: skip
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tiny, "URL", refused_url)
    monkeypatch.setattr("sys.argv", ["benchmarks.run", "--quick", "--tiny", "--out",
                                     str(tmp_path / "out")])  # fmt: skip
    with pytest.raises(SystemExit) as exited:
        benchmarks_run.main()
    assert exited.value.code == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("benchmarks: cannot download") and "--corpus PATH" in err
    assert not (tmp_path / "out").exists()  # it stopped before measuring anything


def test_a_cache_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, server):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CHARRNN_CACHE", str(blocker))
    with pytest.raises(CorpusError, match=f"cannot write to {blocker}.*CHARRNN_CACHE"):
        tiny.tiny_shakespeare(server.url("/text"))
    assert server.requests == []


def test_a_given_corpus_is_used_without_the_network(tmp_path):
    text = tmp_path / "mine.txt"
    text.write_text("Some text.\n", encoding="utf-8")
    assert tiny.corpus(text, url="http://127.0.0.1:9/never") == text
    with pytest.raises(CorpusError, match="no such file"):
        tiny.corpus(tmp_path / "missing.txt")
