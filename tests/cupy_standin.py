"""A strict stand-in for CuPy, running on NumPy: the CuPy path tested on a machine without a GPU.

Test-suite only, never shipped in the package. `install(monkeypatch)` puts it in sys.modules as
`cupy` and `cupyx` for one test, so minilora's own `import cupy` (backend.get_xp, array_module,
scatter_add_rows, the checkpoint's generator state) finds it. It exposes only what the pinned
CuPy release has (tests/data/cupy_api.json, written by scripts/cupy_api.py from the release's
wheel) and keeps CuPy's host/device rules (cupy/_core/core.pyx, _kernel.pyx, _routines_indexing.pyx):

- a name CuPy lacks raises AttributeError; a keyword CuPy lacks, or one positional too many, raises
  TypeError (each call is bound against the release's parameter list);
- device arrays (`ndarray`) hold a NumPy array but are not one: `__array__` raises TypeError, so
  numpy.asarray(x), numpy.sum(x) with a NumPy array beside it, or a NumPy array built from a list of
  device scalars fail, as on a GPU; `.get()` and `cupy.asnumpy` are the explicit moves;
- a NumPy array given to a device function, an operator or as an assigned value raises TypeError
  (only asarray / array / asanyarray move host data to the device; index arrays may be NumPy, CuPy
  converts them); ufuncs also refuse Python lists;
- reductions and every function return 0-d device arrays, never NumPy scalars; int(), float() and
  complex() work on 0-d arrays only (a sync each), bool() on one element; there is no __index__;
- out-of-range integer index arrays wrap around instead of raising (CuPy's take mode);
- `cupy.random.default_rng(seed)` gives a Generator(XORWOW) with the release's methods, drawing from
  a NumPy PCG64 whose whole state lives in `bit_generator._state`, an int8 device array, as CuPy
  keeps its cuRAND states; checkpoints read and restore it as they would on a GPU.

Every device-to-host read (get, asnumpy, item, tolist, int/float/bool/complex) is appended to
`Standin.transfers` as (nbytes, shape, dtype), so a test can count syncs and copies.

Files: this one (the API file, call checks, install); cupy_standin_array.py (the device array, its
rules and methods; each stand-in's `ndarray` is a subclass that binds only the stand-in and so its
log); cupy_standin_core.py (ufuncs, functions, the host/device moves, the modules);
cupy_standin_random.py (cupy.random's generator, cupy.cuda).
"""
from __future__ import annotations

import functools
import inspect
import json
import pathlib
import sys
import types
from dataclasses import dataclass, field

import numpy

API = json.loads((pathlib.Path(__file__).parent / "data" / "cupy_api.json").read_text())
RELEASE = API["release"]
_UNSET = object()
HOST_IN = ("asarray", "array", "asanyarray")        # the explicit host -> device moves


@functools.lru_cache(maxsize=None)
def signature(spec: str):
    """inspect.Signature from the API file's parameter list (every parameter optional)."""
    params, kind = [], inspect.Parameter.POSITIONAL_OR_KEYWORD
    names = [s.strip() for s in spec.split(",") if s.strip()] if spec else []
    if "/" in names:
        cut = names.index("/")
        names = [(n, inspect.Parameter.POSITIONAL_ONLY) for n in names[:cut]] + names[cut + 1:]
    for n in names:
        if isinstance(n, tuple):
            params.append(inspect.Parameter(n[0], n[1], default=_UNSET))
        elif n == "*":
            kind = inspect.Parameter.KEYWORD_ONLY
        elif n.startswith("**"):
            params.append(inspect.Parameter(n[2:], inspect.Parameter.VAR_KEYWORD))
        elif n.startswith("*"):
            params.append(inspect.Parameter(n[1:], inspect.Parameter.VAR_POSITIONAL))
            kind = inspect.Parameter.KEYWORD_ONLY
        else:
            params.append(inspect.Parameter(n, kind, default=_UNSET))
    return inspect.Signature(params)


def check_call(qualname: str, spec: str, args, kwargs):
    """TypeError, as CuPy's own, for a keyword or an argument count the release does not take."""
    if spec in ("?", "value", "class", "type", "module"):
        return
    try:
        signature(spec).bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"{qualname}() in CuPy {RELEASE}: {e}") from None


@dataclass
class Standin:
    """The fake modules and the log of device-to-host reads."""
    cupy: types.ModuleType = None
    cupyx: types.ModuleType = None
    transfers: list = field(default_factory=list)

    def host_reads(self, dtype=None) -> list:
        return [t for t in self.transfers if dtype is None or t[2] == numpy.dtype(dtype)]


class _StrictModule(types.ModuleType):
    """A module that says whether a missing name is missing from CuPy or only from the stand-in."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        have = API["modules"].get(self.__name__, {})
        if name in have:
            raise AttributeError(f"{self.__name__}.{name} exists in CuPy {RELEASE} but the test stand-in "
                                 "does not implement it; add it to tests/cupy_standin_core.py")
        raise AttributeError(f"module '{self.__name__}' has no attribute '{name}' (not in CuPy {RELEASE})")


def make() -> Standin:
    """A fresh stand-in (its own transfer log)."""
    from cupy_standin_core import build

    s = Standin()
    s.cupy, s.cupyx = build(s, _StrictModule)
    return s


def install(monkeypatch) -> Standin:
    """Make `import cupy` / `import cupyx` give a fresh stand-in for the rest of one test."""
    s = make()
    for name in [m for m in sys.modules if m == "cupy" or m.startswith(("cupy.", "cupyx"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cupy", s.cupy)
    monkeypatch.setitem(sys.modules, "cupy.random", s.cupy.random)
    monkeypatch.setitem(sys.modules, "cupy.linalg", s.cupy.linalg)
    monkeypatch.setitem(sys.modules, "cupy.cuda", s.cupy.cuda)
    monkeypatch.setitem(sys.modules, "cupyx", s.cupyx)
    return s


def install_for_process() -> Standin:
    """For a dry run of the GPU scripts on a machine without one (MINILORA_CUPY_STANDIN=1): the
    stand-in becomes `cupy` for the rest of this process."""
    s = make()
    sys.modules.update({"cupy": s.cupy, "cupy.random": s.cupy.random, "cupy.linalg": s.cupy.linalg,
                        "cupy.cuda": s.cupy.cuda, "cupyx": s.cupyx})
    return s
