"""The project's exceptions. Library code raises these; only the CLI turns them into exit codes."""


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


class DistributedError(CharRNNError):
    """The processes of a multi-process run disagree (another text, say) or lost each other."""


class ExportError(CharRNNError):
    """A model cannot be exported (a gate-level cell, no export extra, a file in the way)."""


class OutputError(CharRNNError):
    """An output file cannot be written: its folder is missing or a file, or it would replace a
    file without --force, or the disk refused it."""
