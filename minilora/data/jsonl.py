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


def read_json_lines(path) -> list[tuple[int, object]]:
    """[(line number, parsed JSON value), ...] of a JSON-lines file; blank lines are skipped.

    An unreadable file, a non-UTF-8 byte, invalid JSON or a file with no rows raises MiniLoraError
    naming the path (and the line). The values are not checked: load_jsonl and data/formats.py do that.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        raise MiniLoraError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise MiniLoraError(f"{path}: is a folder, not a JSON-lines file") from None
    except OSError as e:
        raise MiniLoraError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise MiniLoraError(f"{path}: not UTF-8 text (byte {e.start})") from None
    values = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            values.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            raise MiniLoraError(f"{path}: line {lineno}: invalid JSON ({e.msg})") from None
    if not values:
        raise MiniLoraError(f"{path}: no rows (empty file)")
    return values


def load_jsonl(path) -> list[dict]:
    """Read FinLoRA-style JSON lines; every row needs string 'context' and 'target'.

    Blank lines are skipped; any other bad line raises MiniLoraError naming path and line number.
    """
    rows = []
    for lineno, row in read_json_lines(path):
        _check_row(row, f"{os.fspath(path)}: line {lineno}")
        rows.append(row)
    return rows
