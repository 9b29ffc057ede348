"""FinLoRA-style JSON lines: one {"context": str, "target": str, ...} object per line.

write_jsonl validates every row before writing and writes atomically (minilora.io.atomic), so a
crash leaves the old file or the new one. load_jsonl names the path and line of the first bad row.
"""
from __future__ import annotations

import json
import os

from minilora.errors import MiniLoraError
from minilora.io.atomic import write_text


def _check_row(row, where: str):
    if not isinstance(row, dict):
        raise MiniLoraError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key in ("context", "target"):
        if key not in row:
            raise MiniLoraError(f"{where}: missing {key!r}")
        if not isinstance(row[key], str):
            raise MiniLoraError(f"{where}: {key!r} must be a string, got {type(row[key]).__name__}")


def write_jsonl(path, rows) -> None:
    """Write rows as JSON lines (UTF-8), atomically: a temp file beside path, then os.replace."""
    rows = list(rows)
    for i, row in enumerate(rows):
        _check_row(row, f"row {i}")
    write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def load_jsonl(path) -> list[dict]:
    """Read FinLoRA-style JSON lines; every row needs string 'context' and 'target'.

    Blank lines are skipped; any other bad line raises MiniLoraError naming path and line number.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        raise MiniLoraError(f"{path}: no such file") from None
    except OSError as e:
        raise MiniLoraError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise MiniLoraError(f"{path}: not UTF-8 text (byte {e.start})") from None
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise MiniLoraError(f"{path}: line {lineno}: invalid JSON ({e.msg})") from None
        _check_row(row, f"{path}: line {lineno}")
        rows.append(row)
    if not rows:
        raise MiniLoraError(f"{path}: no rows (empty file)")
    return rows
