"""The settings of the commands that put a trained model to work: sampling (`charrnn sample`,
the server's requests), dynamic evaluation (`charrnn eval --dynamic`) and serving (`charrnn
serve`). Declared like the model and training settings (charrnn.config), each once; their
options, checks and --help come from these declarations.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from charrnn.config import setting
from charrnn.errors import ConfigError

SAMPLING = "Sampling"
DYNAMIC = "Dynamic evaluation"
SERVING = "Serving"

# Below it, logits / temperature can overflow to infinity and leave no distribution to draw from.
MIN_TEMPERATURE = 1e-3


@dataclass(frozen=True)
class SampleConfig:
    """How text is generated: shared by `charrnn sample` and everything else that samples."""

    length: int = setting(500, "new characters to generate", SAMPLING, flags=("-n",), min=0)
    temperature: float = setting(
        0.8,
        "<1 sharper, >1 more random",
        SAMPLING,
        flags=("-t",),
        min=MIN_TEMPERATURE,
        hint="; use --greedy for the most likely character",
    )
    top_k: int = setting(0, "keep the K most likely characters; 0 = off", SAMPLING, min=0)
    top_p: float = setting(
        1.0, "keep the smallest set with this much probability", SAMPLING, min=0.0,
        min_open=True, max=1.0,
    )  # fmt: skip
    greedy: bool = setting(False, "always the most likely character", SAMPLING)
    seed: int | None = setting(
        None, "same seed, same text; none = a new text each time", SAMPLING, kind=int, min=0,
        max=2**63 - 1,
    )  # fmt: skip
    num_samples: int = setting(
        1, "independent samples, generated as one batch", SAMPLING, flags=("-m",), min=1
    )
    stop: tuple[str, ...] = setting(
        (), "a sample ends at the first of these strings it writes, which is kept at its end",
        SAMPLING, item=str,
    )  # fmt: skip


# What shapes a draw from the distribution, and the seed that draws it: greedy decoding takes
# the largest entry instead, so one of these given beside it is a mistake.
IGNORED_BY_GREEDY = ("temperature", "top_k", "top_p", "seed")


def check_greedy(given: dict[str, Any], spell: Callable[[str], str] = str) -> None:
    """Refuse sampling settings that `greedy` would make do nothing (ConfigError).

    given: the settings the user gave (name -> value), not their defaults; spell: a setting's
    name as the user writes it (a flag, a request field).
    """
    if not given.get("greedy"):
        return
    ignored = [spell(name) for name in IGNORED_BY_GREEDY if name in given]
    if ignored:
        named = ", ".join(ignored)
        raise ConfigError(
            f"{spell('greedy')} always writes the most likely character, so {named} would do "
            f"nothing; leave out {spell('greedy')} or {named}"
        )
    samples = given.get("num_samples", 1)
    if samples > 1:
        raise ConfigError(
            f"{spell('greedy')} writes the same text every time, so {spell('num_samples')} "
            f"{samples} would write it {samples} times; leave out {spell('greedy')} or "
            f"{spell('num_samples')}"
        )


@dataclass(frozen=True)
class DynamicConfig:
    """Dynamic evaluation (`charrnn eval --dynamic`, charrnn.dynamic): how fast the model adapts
    to the text it has just scored. Defaults chosen on held-out training text for a 1x768 LSTM
    (benchmarks/dynamic_eval.py; benchmarks/NOTES.md), never on the validation split they are
    reported on."""

    # RMS-normalised: each weight moves about dynamic_lr a step, so 1 is already far past use.
    dynamic_lr: float = setting(
        3e-4, "step size of the adaptation (RMS-normalised); 0 = static", DYNAMIC, min=0.0,
        max=1.0,
    )  # fmt: skip
    dynamic_decay: float = setting(
        3e-4, "pull toward the trained weights after every step", DYNAMIC, min=0.0, max=1.0
    )


@dataclass(frozen=True)
class ServeConfig:
    """Where `charrnn serve` listens and the limits that keep it up under any load."""

    host: str = setting("127.0.0.1", "address to listen on (127.0.0.1: this machine only)", SERVING)
    port: int = setting(8000, "TCP port to listen on", SERVING, min=1, max=65535)
    max_length: int = setting(
        2000, "the most new characters one request may ask for", SERVING, min=1
    )
    max_streams: int = setting(
        32, "samples generated at once, in one batch; later requests wait", SERVING, min=1
    )
    max_queue: int = setting(
        64, "requests that may wait for a place in the batch; past that, 503", SERVING, min=0
    )
    max_samples: int = setting(8, "the most num_samples of one request", SERVING, min=1)
    max_request_bytes: int = setting(
        65536, "the largest request body (prime, text to score); past that, 413", SERVING,
        min=1024,
    )  # fmt: skip
    grace: float = setting(
        5.0, "seconds that running streams get to finish after SIGTERM", SERVING, min=0.0
    )
    cors_origin: tuple[str, ...] = setting(
        (), "a web origin (https://example.org, or * for any) whose pages may call the API "
        "from a browser; none = only the page served here", SERVING, item=str,
    )  # fmt: skip
    access_log: bool = setting(False, "print a line for each request on stderr", SERVING)


def check_cors_origins(origins: tuple[str, ...]) -> None:
    """A browser sends its page's origin as scheme://host[:port], nothing after it; anything
    else (a trailing slash, a path, no scheme) would match no request and allow nothing."""
    for origin in origins:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ConfigError(
                f"--cors-origin {origin!r} is no web origin; give scheme://host[:port] with "
                "nothing after it (https://example.org), or * for any"
            )
