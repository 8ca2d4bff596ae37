"""TOML files: read safely, and written so that they always read back.

Reading takes a regular file of at most ``MAX_BYTES`` (a FIFO or ``/dev/zero`` is refused
unread), valid UTF-8, nested at most ``MAX_DEPTH`` deep (tomllib parses nesting by recursion:
a deeper file would otherwise end in a RecursionError, not a sentence).

Writing escapes what TOML does not allow raw in a string (control characters, DEL) and
replaces what it cannot hold at all: a lone surrogate, which is how Python spells the bytes of
a file name that is not UTF-8. The value then reads back with U+FFFD in their place, and a
comment on its line gives the exact original, escaped.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from charrnn import files
from charrnn.errors import ConfigError

MAX_BYTES = 1 << 20  # a config is a few hundred bytes
MAX_DEPTH = 32


def read(path: Path) -> dict[str, Any]:
    """A TOML file as a dict. Raises ConfigError naming the file and what is wrong."""
    data = files.read_bytes(path, ConfigError, "config", MAX_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"cannot read config {str(path)!r}: not UTF-8 (byte {error.start} cannot be decoded)"
        ) from None
    try:
        raw = tomllib.loads(text)
    except RecursionError:
        raise ConfigError(f"config {str(path)!r} nests more than {MAX_DEPTH} deep") from None
    except ValueError as error:  # TOMLDecodeError, or an integer of over 4300 digits
        raise ConfigError(f"config {str(path)!r} is not valid TOML: {error}") from None
    if _depth(raw) > MAX_DEPTH:
        raise ConfigError(f"config {str(path)!r} nests more than {MAX_DEPTH} deep")
    return raw


def _depth(value: Any) -> int:
    """How deep tables and arrays nest (TOML shares nothing, so a plain walk is exact)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:  # no need to go further down
                inner = item.values() if isinstance(item, dict) else item
                stack.extend((child, depth + 1) for child in inner)
    return deepest


ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
           "\r": "\\r"}  # fmt: skip


def value(item: bool | int | float | str | tuple | list) -> str:
    """`item` as a TOML value (and, for a string TOML cannot hold exactly, a comment)."""
    parts = item if isinstance(item, (tuple, list)) else [item]
    shown = [_scalar(part) for part in parts]
    text = ", ".join(text for text, _ in shown)
    if isinstance(item, (tuple, list)):  # a repeatable setting: an array on one line
        text = f"[{text}]"
    notes = [note for _, note in shown if note]
    return text + (f"  # {'; '.join(notes)}" if notes else "")


def _scalar(item: bool | int | float | str) -> tuple[str, str | None]:
    """A TOML scalar, and what a comment must say of it (None: it holds the value exactly)."""
    if isinstance(item, bool):
        return ("true" if item else "false"), None
    if not isinstance(item, str):
        return repr(item), None  # ints, and floats (TOML spells inf and nan as Python does)
    quoted, replaced = [], False
    for char in item:
        code = ord(char)
        if char in ESCAPES:
            quoted.append(ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            quoted.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:  # a lone surrogate: not a character, not in UTF-8
            quoted.append("\\uFFFD")
            replaced = True
        else:
            quoted.append(char)
    note = f"not UTF-8, the exact value was {ascii(item)}" if replaced else None
    return '"' + "".join(quoted) + '"', note
