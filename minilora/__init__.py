"""minilora: LoRA from scratch in NumPy (and CuPy), on a Llama-architecture transformer."""
from .errors import MiniLoraError

__all__ = ["MiniLoraError"]
__version__ = "0.1.0"
