"""charrnn: a character-level recurrent network that learns to write like any UTF-8 text."""

__version__ = "0.1.0"
__all__ = ["__version__", "fine_tune", "load_model"]


def __getattr__(name: str):
    # Lazy, so `charrnn --version` and the CLI's help do not pay for importing torch.
    if name == "load_model":
        from charrnn.sample import load_model

        return load_model
    if name == "fine_tune":
        from charrnn.finetune import fine_tune

        return fine_tune
    raise AttributeError(f"module 'charrnn' has no attribute {name!r}")
