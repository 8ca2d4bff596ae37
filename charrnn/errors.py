"""The project's exceptions. Library code raises these; only the CLI turns them into exit codes."""

import math


class CharRNNError(Exception):
    """Base of every error a user can cause and fix (bad input, not a bug)."""


class ConfigError(CharRNNError):
    """A config file, flag or option value is unknown, of the wrong type or out of range."""


class CorpusError(CharRNNError):
    """A corpus cannot be read, is not UTF-8, or is too short for the requested shape."""


class CheckpointError(CharRNNError):
    """A checkpoint is missing, corrupt, foreign, unsafe or of an unsupported version."""


class TrainingError(CharRNNError):
    """Training cannot go on (for example the loss became NaN)."""


class SamplingError(CharRNNError):
    """Generation cannot go on: the model's next-character probabilities are not finite (its
    state overflowed, as a ReLU RNN's can)."""


class DistributedError(CharRNNError):
    """The processes of a multi-process run disagree (another text, say) or lost each other."""


class ExportError(CharRNNError):
    """A model cannot be exported (a gate-level cell, no export extra, a file in the way)."""


class OutputError(CharRNNError):
    """An output file cannot be written: its folder is missing or a file, or it would replace a
    file without --force, or the disk refused it."""


def shown(value: object, limit: int = 80) -> str:
    """A value as an error message names it: one short line, however large or odd the value.

    ``repr`` would print a 5000-digit integer (or refuse to: Python caps int-to-text at 4300
    digits), a megabyte string, or a nested list that never ends; this never does.
    """
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        if value.bit_length() <= 200:
            return repr(value)
        digits = int(math.log10(abs(value))) + 1  # exact but at powers of ten; no text made
        return f"an integer of {digits:,} digits"
    if isinstance(value, str):
        text = repr(value)
        if len(text) <= limit:
            return text
        # Both ends: a long path keeps the file name, which is what tells the user which file.
        head = (limit - 3) // 2
        return f"{text[:head]}...{text[-(limit - 3 - head) :]} ({len(value):,} chars)"
    size = getattr(value, "shape", None)
    if size is not None:
        return f"a {type(value).__name__} of shape {list(size)}"
    if isinstance(value, (list, tuple, dict, set, frozenset, bytes)):
        return f"a {type(value).__name__} of {len(value):,} items"
    return f"a {type(value).__name__}"
