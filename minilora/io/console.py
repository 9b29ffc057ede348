"""Standard output for the command lines: closed (`>&-`) or full (`> /dev/full`) is one error line.

Python sets sys.stdout to None when file descriptor 1 is closed at start, and a full device fails
only when the buffer is flushed, often at exit, as an "Exception ignored" traceback. The CLIs call
check_stdout() before any work and finish_stdout() at the end; stdout_error() turns an OSError
raised while printing into the one line. Standard library only (param-calc uses it).
"""
from __future__ import annotations

import errno
import os
import sys

from minilora.errors import MiniLoraError

_STDOUT_ERRNOS = (errno.EPIPE, errno.ENOSPC, errno.EIO, errno.EBADF, errno.EDQUOT)


def check_stdout() -> None:
    """MiniLoraError before any work when standard output is closed."""
    if sys.stdout is None:
        raise MiniLoraError("standard output is closed; redirect it instead (e.g. > /dev/null)")


def _silence():
    """Point fd 1 at /dev/null, so the interpreter's flush at exit does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, AttributeError, ValueError):
        pass


def stdout_error(e: OSError) -> MiniLoraError | None:
    """The one-line error for an OSError that came from writing standard output (else None)."""
    if e.filename is not None or e.errno not in _STDOUT_ERRNOS:
        return None
    _silence()
    return MiniLoraError(f"cannot write to standard output ({e.strerror or os.strerror(e.errno)})")


def finish_stdout() -> None:
    """Flush standard output now; MiniLoraError (one line) if it is full or gone."""
    if sys.stdout is None:
        return
    try:
        sys.stdout.flush()
    except OSError as e:
        err = stdout_error(e) or MiniLoraError(f"cannot write to standard output ({e})")
        _silence()
        raise err from None
