"""The library's error type: every bad input raises MiniLoraError with one clear message."""


class MiniLoraError(ValueError):
    """Bad input to minilora (a config, a file, an argument). CLIs print it as one line, exit 2."""

    def __str__(self):
        return " ".join(super().__str__().split())      # one line, even when the bad input held a newline


class MiniLoraStateError(MiniLoraError, RuntimeError):
    """An operation the model's current state forbids (training or quantizing while merged, full
    fine-tuning of a quantized base). Also a RuntimeError, for callers that catch that."""
