"""charrnn: a character-level recurrent network that learns to write like any UTF-8 text."""

__version__ = "0.1.0"
