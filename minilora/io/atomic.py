"""Safe writes, the one writer: every file and folder is built under a temporary name beside its
destination and renamed into place, so a crash leaves the old copy or the new one, never a torn one.

A file:   write  .NAME.TAG.tmp  ->  fsync  ->  rename over NAME (one atomic step)
A folder: build  .NAME.TAG.tmp/ ->  rename to .NAME.TAG.new/ (complete from here on)
          ->  rename NAME to .NAME.TAG.old/  ->  rename .NAME.TAG.new/ to NAME  ->  remove .old
A folder cannot be renamed over a non-empty folder, so there is a moment (between the two last
renames) when NAME is missing; minilora.io.journal names the leftovers so that recover(NAME), run
by the next write to NAME and by the readers, finishes or undoes an interrupted write.
Two processes writing the same destination at once are not supported (the second one's recovery
may remove the first one's temporary).

What may be replaced (a model, adapter or checkpoint folder of this project, or anything with
overwrite=True; never a symlink, device or FIFO) is decided by check_output_location
(minilora.io.destination), which atomic_dir runs before it creates anything.
Standard library only: param-calc writes through this module without numpy.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager

from minilora.io.destination import check_output_location
from minilora.io.journal import (  # noqa: F401  (recover, leftovers, temp_name: part of the writer's API)
    SUFFIXES,
    leftovers,
    recover,
    recover_if_missing,
    remove_path,
    temp_name,
)


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _make_parents(folder) -> list:
    """os.makedirs(folder), returning the folders it created (deepest last)."""
    missing = []
    while not os.path.exists(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    for d in reversed(missing):
        os.mkdir(d)
    return list(reversed(missing))


def _remove_created(created: list):
    for d in reversed(created):
        try:
            os.rmdir(d)
        except OSError:
            break


def _create_unique(path: str, suffix: str, make) -> str:
    while True:
        tmp = temp_name(path, suffix)
        try:
            make(tmp)
            return tmp
        except FileExistsError:
            continue


def _new_file(tmp):
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))     # the umask applies


@contextmanager
def atomic_path(path, overwrite: bool = True):
    """Yield a temporary file path beside `path`; on success it is fsynced and renamed over `path`.

    An existing regular file is replaced (overwrite=False refuses it); a folder, symlink, device
    or FIFO at `path` is refused (MiniLoraError) before anything is created. Folders on the way
    are created, and removed again if the write fails.
    """
    path = check_output_location(path, "file", overwrite=overwrite)
    created = _make_parents(os.path.dirname(path))
    tmp = None
    try:
        recover(path)
        tmp = _create_unique(path, ".tmp", _new_file)
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(os.path.dirname(path))
    except BaseException:
        if tmp is not None and os.path.lexists(tmp):
            remove_path(tmp)
        _remove_created(created)
        raise


def write_text(path, text: str, overwrite: bool = True):
    with atomic_path(path, overwrite=overwrite) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path, obj, overwrite: bool = True):
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", overwrite=overwrite)


@contextmanager
def atomic_dir(path, kind: str | None = None, overwrite: bool = False):
    """Yield a temporary folder beside `path`; on success it replaces `path` as a whole.

    kind ('model', 'adapter', 'checkpoint' or None): an existing folder at `path` is replaced only
    if it is empty, is a folder of that kind (recognised by its files), or overwrite=True; anything
    else (and always a file, symlink, device or FIFO) raises MiniLoraError before anything is
    created. The old folder is removed only after the new one is in place; an interruption at any
    point leaves the old folder or the new one (after recover(path), which the next write runs).
    """
    path = check_output_location(path, kind or "folder-replace", overwrite=overwrite)
    created = _make_parents(os.path.dirname(path))
    tmp = new = old = None
    try:
        tmp = _create_unique(path, ".tmp", os.mkdir)
        yield tmp
        new = tmp[:-4] + ".new"
        os.replace(tmp, new)                        # complete: a rerun may install it
        tmp = None
        if os.path.lexists(path):
            old = new[:-4] + ".old"
            os.replace(path, old)
        os.replace(new, path)
        new = None
        _fsync_dir(os.path.dirname(path))
        if old:
            remove_path(old)
    except BaseException:
        if old and not os.path.lexists(path) and os.path.lexists(old):
            os.replace(old, path)                   # put the old folder back
        for p in (tmp, new):
            if p and os.path.lexists(p):
                remove_path(p)
        _remove_created(created)
        raise
