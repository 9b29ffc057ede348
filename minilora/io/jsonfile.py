"""Reading JSON files with one clear error (standard library only: param-calc uses it without numpy)."""
from __future__ import annotations

import json
import os
import stat

from minilora.errors import MiniLoraError

MAX_JSON_BYTES = 64 << 20        # state.json of a long run is a few MB; a config a few KB


def check_regular_file(path, max_bytes: int | None = None, what: str = "file") -> int:
    """The size of `path` if it is a regular file of at most max_bytes; MiniLoraError otherwise.

    Checked before opening: a FIFO would block the reader and /dev/zero would never end.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MiniLoraError(f"{path}: {what} not found") from None
    except OSError as e:
        raise MiniLoraError(f"{path}: cannot read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise MiniLoraError(f"{path}: is a folder, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise MiniLoraError(f"{path}: not a regular file (a device, FIFO or socket); refusing to read it")
    if max_bytes is not None and st.st_size > max_bytes:
        raise MiniLoraError(f"{path}: {st.st_size:,} bytes is too large for a {what} (at most {max_bytes:,})")
    return st.st_size


def read_json(path, max_bytes: int = MAX_JSON_BYTES) -> dict:
    """A JSON object from a file, with one clear error for a missing, unreadable, oversized or invalid file."""
    check_regular_file(path, max_bytes, "file")
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise MiniLoraError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MiniLoraError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise MiniLoraError(f"{path}: not valid JSON (nested too deeply)") from None
    except OSError as e:
        raise MiniLoraError(f"{path}: cannot read ({e.strerror})") from None
    if not isinstance(obj, dict):
        raise MiniLoraError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj
