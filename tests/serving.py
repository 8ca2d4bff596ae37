"""Helpers for the tests of `charrnn serve` (tests/test_serve.py, tests/test_page.py).

The serve extra (fastapi, uvicorn) is optional: these tests are skipped where it is missing,
naming the command that installs it, except in CI (.ci/run installs it), where they fail.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest


def need(module: str, extra: str = "serve"):
    """Import `module` of an optional extra: a failure in CI, a skip elsewhere."""
    try:
        return importlib.import_module(module)
    except ImportError:
        message = f'{module} is not installed (pip install -e ".[{extra}]")'
        if os.environ.get("CI"):
            pytest.fail(f"CI must run these tests, but {message}; .ci/run installs it")
        pytest.skip(message, allow_module_level=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SlowStepper:
    """The generator's stepper, `delay` seconds slower per step: streams that last long enough
    to be joined, queued behind, disconnected from or cut by a shutdown."""

    def __init__(self, stepper, delay: float):
        self.stepper, self.delay = stepper, delay

    def __getattr__(self, name):
        return getattr(self.stepper, name)

    def __call__(self, ids, state):
        time.sleep(self.delay)
        return self.stepper(ids, state)


@contextlib.contextmanager
def live_server(app, grace: float = 2.0) -> Iterator[str]:
    """`app` on uvicorn in a thread of this process, on 127.0.0.1 and a free port: its URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            timeout_graceful_shutdown=grace)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) of a text/event-stream, from its lines."""
    event, data = "message", []
    for line in lines:
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield event, "\n".join(data)
