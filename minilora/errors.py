"""The library's error type: every bad input raises MiniLoraError with one clear message."""


class MiniLoraError(ValueError):
    """Bad input to minilora (a config, a file, an argument). CLIs print it as one line, exit 2."""
