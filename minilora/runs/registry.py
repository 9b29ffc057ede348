"""The model registry: names a run or a command may use for a base model, resolved to files.

    minilora/tiny-sentiment-base   the shipped tiny pretrained Llama (a Hugging Face folder)
    a path                         a Hugging Face folder (config.json + safetensors) or a .gguf file

Standard library only: param-calc resolves a FinLoRA run's base_model through it without numpy.
"""
from __future__ import annotations

import os

from minilora.errors import MiniLoraError

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))     # minilora/
ROOT = os.path.dirname(PACKAGE)                                           # the repository
BASE_NAME = "minilora/tiny-sentiment-base"


def base_dir() -> str:
    """The shipped tiny base's folder."""
    return os.path.join(PACKAGE, "assets", "tiny-sentiment-base")


def default_config_path() -> str:
    """The project's own FinLoRA-style run file."""
    return os.path.join(ROOT, "configs", "finetune_configs.json")


def resolve_base(name: str) -> str:
    """The folder (or file) of a run's base_model: a registered name, else an existing path."""
    if name == BASE_NAME:
        return base_dir()
    if os.path.isdir(name) or (name.endswith(".gguf") and os.path.isfile(name)):
        return name
    raise MiniLoraError(f"base_model {name!r} is neither a registered name ({BASE_NAME}) nor an existing "
                        "folder or .gguf file")
