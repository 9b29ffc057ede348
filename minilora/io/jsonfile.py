"""Reading JSON files with one clear error (standard library only: param-calc uses it without numpy)."""
from __future__ import annotations

import json

from minilora.errors import MiniLoraError


def read_json(path) -> dict:
    """A JSON object from a file, with one clear error for a missing, unreadable or invalid file."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise MiniLoraError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MiniLoraError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise MiniLoraError(f"{path}: cannot read ({e.strerror})") from None
    if not isinstance(obj, dict):
        raise MiniLoraError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj
