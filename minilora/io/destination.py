"""The one rule for every writer: what may be replaced, checked before any work starts.

check_output_location(path, kind) is run by the atomic writer (minilora.io.atomic) and, earlier,
by the commands (before training, merging, benchmarking), so a bad destination costs nothing:
- a destination that exists is replaced only if it is what the command writes: a regular file for
  kind 'file'; for a folder kind, an empty folder or one recognised by its files as a minilora
  model folder (config.json + model*.safetensors [+ tokenizer files]), adapter folder
  (adapter_config.json + adapter_model.safetensors) or training checkpoint (state.json +
  trainable/optimizer/rng.safetensors); anything else only with overwrite=True (--force);
- never a file where a folder goes (or a folder where a file goes), never a symlink, a device, a
  FIFO or a socket, whatever overwrite says;
- inputs are compared with the output by real path (symlinks resolved): the output may not be an
  input, nor a folder that holds one;
- the location must be writable, with room for the name (NAME_MAX, PATH_MAX) and the free space
  asked for, tried by creating and removing a probe file under the temporary name.
Standard library only (param-calc uses it).
"""
from __future__ import annotations

import errno
import os
import re
import stat

from minilora.errors import MiniLoraError
from minilora.io.journal import recover, temp_name

KINDS = ("file", "folder", "folder-replace", "model", "adapter", "checkpoint")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "generation_config.json")
_FILES = {   # kind: (files that must be there (one of each tuple), pattern every file must match)
    "model": ((("config.json",), ("model.safetensors", "model.safetensors.index.json")),
              re.compile(r"config\.json|model\.safetensors(\.index\.json)?|model-\d+-of-\d+\.safetensors|"
                         + "|".join(re.escape(f) for f in TOKENIZER_FILES))),
    "adapter": ((("adapter_config.json",), ("adapter_model.safetensors",)),
                re.compile(r"adapter_config\.json|adapter_model\.safetensors")),
    "checkpoint": ((("state.json",), ("trainable.safetensors",)),
                   re.compile(r"state\.json|(trainable|optimizer|rng)\.safetensors")),
}
_WHAT = {"model": "model folder", "adapter": "adapter folder", "checkpoint": "training checkpoint"}


def folder_kind(path) -> str | None:
    """'model', 'adapter' or 'checkpoint' if every file of the folder is one minilora writes for
    that kind (and the essential ones are there); 'empty' for an empty folder; else None."""
    try:
        entries = os.listdir(path)
    except OSError:
        return None
    if not entries:
        return "empty"
    for kind, (needed, allowed) in _FILES.items():
        if all(allowed.fullmatch(e) and os.path.isfile(os.path.join(path, e)) and
               not os.path.islink(os.path.join(path, e)) for e in entries) \
                and all(any(n in entries for n in group) for group in needed):
            return kind
    return None


def _describe(st_mode) -> str | None:
    for test, what in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket")):
        if test(st_mode):
            return what
    return None


def _check_existing(path: str, shown, kind: str, overwrite: bool):
    """The rule for a destination that exists (see the module docstring)."""
    st = os.lstat(path)
    special = _describe(st.st_mode)
    if special == "a symbolic link" and kind == "folder" and os.path.isdir(path):
        return                                            # files go inside the folder it points to
    if special:
        raise MiniLoraError(f"{shown} is {special}; minilora never replaces one (remove it, or write "
                            "somewhere else)")
    is_dir = stat.S_ISDIR(st.st_mode)
    if kind == "file":
        if is_dir:
            raise MiniLoraError(f"{shown} is a folder; a file goes here (choose a file name)")
        if not overwrite:
            raise MiniLoraError(f"{shown} exists; refusing to replace it without --force / overwrite=True")
        return
    if not is_dir:
        raise MiniLoraError(f"{shown} is a file, not a folder; refusing to replace a file with a folder")
    if kind == "folder":
        return
    found = folder_kind(path)
    if found in ("empty", kind) or overwrite:
        return
    held = sorted(os.listdir(path))
    more = f", ... ({len(held)} entries)" if len(held) > 3 else ""
    seen = f"a minilora {_WHAT[found]}" if found else f"not a minilora {_WHAT.get(kind, 'output folder')}"
    raise MiniLoraError(f"{shown} exists and is {seen} (it holds {', '.join(held[:3])}{more}); refusing to "
                        "replace it: choose another folder, or remove it yourself (merge takes --force, the library "
                        "overwrite=True)")


def _check_inputs(path: str, shown, kind: str, inputs):
    real = os.path.realpath(path)
    for inp in inputs:
        if inp is None or not os.path.exists(inp):
            continue
        other = os.path.realpath(inp)
        if other == real:
            raise MiniLoraError(f"{shown} is the input {inp} (same file or folder, symlinks resolved); "
                                "the output must differ from every input")
        if kind != "file" and kind != "folder" and other.startswith(real.rstrip(os.sep) + os.sep):
            raise MiniLoraError(f"{shown} holds the input {inp}; replacing it would delete that input")


def _nearest_existing(folder: str) -> str:
    while not os.path.exists(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return folder


def _limit(folder: str, name: str, default: int) -> int:
    try:
        return os.pathconf(folder, name)
    except (OSError, ValueError):
        return default


def _check_location(path: str, shown, need_bytes: int):
    """Writable, with room for the name and the bytes: tried with a probe under the temporary name."""
    parent = os.path.dirname(path)
    base = _nearest_existing(parent)
    if not os.path.isdir(base):
        raise MiniLoraError(f"{shown}: {base} is not a folder")
    name_max, path_max = _limit(base, "PC_NAME_MAX", 255), _limit(base, "PC_PATH_MAX", 4096)
    new_parts = os.path.relpath(path, base).split(os.sep)
    for part in new_parts:
        if len(os.fsencode(part)) > name_max:
            raise MiniLoraError(f"{shown}: the name {part[:40]}... is {len(os.fsencode(part))} bytes; "
                                f"this file system allows {name_max}")
    if len(os.fsencode(path)) + 64 > path_max:            # room for the files written inside
        raise MiniLoraError(f"{shown}: the path is {len(os.fsencode(path))} bytes long; this file system "
                            f"allows {path_max} (with room for the names inside)")
    probe = temp_name(os.path.join(base, new_parts[0]), ".tmp")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            os.unlink(probe)
        except FileNotFoundError:                         # already taken away as a leftover
            pass
    except OSError as e:
        raise MiniLoraError(f"{shown}: cannot write in {base} ({e.strerror})") from None
    try:
        fs = os.statvfs(base)
    except (OSError, AttributeError):
        return
    free = fs.f_bavail * fs.f_frsize
    if free < max(need_bytes, 1):
        raise MiniLoraError(f"{shown}: the file system of {base} has {_size(free)} free, "
                            f"{_size(need_bytes)} needed")


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def check_output_location(path, kind: str, overwrite: bool | None = None, inputs=(), need_bytes: int = 0,
                          what: str | None = None) -> str:
    """The absolute destination path, or MiniLoraError if `path` may not be written (module docstring).

    kind: 'file'; 'folder' (files are written into it, the folder itself is kept); or a folder
    replaced as a whole: 'model', 'adapter', 'checkpoint' (recognised by their files) or
    'folder-replace' (only an empty folder). Interrupted writes to path are recovered first
    (minilora.io.atomic.recover). overwrite: also replace what the rule keeps (default: an existing
    regular file is replaced for kind 'file', nothing else). what: how to name the path in messages.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if path is None or os.fspath(path) in ("", b""):
        raise MiniLoraError(f"{what or 'output path'} is empty")
    overwrite = (kind == "file") if overwrite is None else overwrite
    raw = os.fspath(path)
    shown = what or raw
    path = os.path.abspath(raw)
    if kind != "folder":
        try:
            recover(path)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
                raise MiniLoraError(f"{shown}: cannot finish an interrupted write ({e.strerror})") from None
    try:
        exists = os.path.lexists(path)
        if exists:
            _check_existing(path, shown, kind, overwrite)
        _check_inputs(path, shown, kind, inputs)
        if not (exists and kind == "folder"):
            _check_location(path, shown, need_bytes)
    except OSError as e:
        raise MiniLoraError(f"{shown}: {e.strerror}") from None
    return path

