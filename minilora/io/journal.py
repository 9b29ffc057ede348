"""The names of interrupted writes and their recovery (minilora.io.atomic writes through them).

A folder cannot be renamed over a non-empty folder, so there is a moment (between the two last
renames) when NAME is missing. The names say what each leftover is, so recover(NAME), which the
next write to NAME runs first (and so do the readers of checkpoints, adapters and model folders),
finishes or undoes an interrupted write:
    NAME missing, a .new present  ->  the .new becomes NAME (the write is completed)
    NAME missing, only an .old    ->  the .old becomes NAME again (the write is undone)
    then every other leftover of NAME (.tmp: incomplete; .new / .old: superseded) is removed.
TAG is 8 hex digits, so the leftovers of NAME are told apart from those of NAME.x. A name longer
than 200 bytes is shortened in temporary names (a prefix + a hash), so they fit NAME_MAX (255).
Standard library only.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import shutil

SUFFIXES = (".tmp", ".new", ".old")
_TAG = 8                       # hex digits of the random part of a temporary name
_LONG = 200                    # names longer than this (in bytes) are shortened in temporary names


def _stem(name: str) -> str:
    """The destination's name as it appears in its temporary names (shortened if long)."""
    raw = os.fsencode(name)
    if len(raw) <= _LONG:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:16]
    cut = raw[:160].decode("utf-8", "ignore") if isinstance(name, str) else raw[:160]
    return f"{cut}~{digest}"


def temp_name(path: str, suffix: str, tag: str | None = None) -> str:
    """.NAME.TAG<suffix> beside path (suffix .tmp, .new or .old)."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{_stem(name)}.{tag or secrets.token_hex(_TAG // 2)}{suffix}")


def leftovers(path) -> dict:
    """{suffix: [paths]} of the temporaries of interrupted writes to path, oldest first."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    head = f".{_stem(name)}."
    found = {s: [] for s in SUFFIXES}
    try:
        entries = os.listdir(folder)
    except OSError:
        return found
    for entry in entries:
        tag, suffix = entry[len(head):-4], entry[-4:]
        if entry.startswith(head) and suffix in found and len(tag) == _TAG \
                and all(c in "0123456789abcdef" for c in tag):
            found[suffix].append(os.path.join(folder, entry))
    for paths in found.values():
        paths.sort(key=lambda p: (os.lstat(p).st_mtime_ns, p))
    return found


def remove_path(path):
    """Remove a file or a whole folder (a leftover); a missing path is fine."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


def recover(path) -> str | None:
    """Finish or undo an interrupted write to path and remove its leftovers (see the module
    docstring); returns 'completed', 'restored' or None (nothing to finish)."""
    path = os.path.abspath(os.fspath(path))
    found = leftovers(path)
    done = None
    if not os.path.lexists(path):
        if found[".new"]:
            os.replace(found[".new"].pop(), path)          # the newest complete new copy
            done = "completed"
        elif found[".old"]:
            os.replace(found[".old"].pop(), path)          # the newest old copy comes back
            done = "restored"
    for paths in found.values():
        for p in paths:
            remove_path(p)
    return done


def recover_if_missing(path) -> None:
    """For readers: a missing path whose interrupted write left a copy gets it back (see recover)."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.lexists(path):
        try:
            recover(path)
        except OSError:
            pass
