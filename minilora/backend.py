"""Array backend: the array module comes from the arrays themselves.

There is no global "current backend". A compute function asks its inputs which
module they belong to (``xp = array_module(x)``) and uses ``xp`` for everything
it creates; a function that creates arrays from nothing takes ``xp`` explicitly.
CuPy is imported only when a CuPy array is seen or ``get_xp("cupy")`` is called.

Compute modules never import numpy; host-side modules (file formats, data
preparation, CLIs, benchmarks) may. tests/test_backend_guard.py lists which and
why, and fails on any other.
"""
from __future__ import annotations

import numpy


def _is_cupy(x) -> bool:
    return type(x).__module__.split(".")[0] == "cupy"


def array_module(*arrays):
    """The array module (numpy or cupy) of the given arrays; None entries are skipped.

    Mixing numpy and cupy arrays raises TypeError, as CuPy itself would.
    """
    kinds = {_is_cupy(a) for a in arrays if a is not None and hasattr(a, "shape")}
    if len(kinds) > 1:
        raise TypeError("mixed numpy and cupy arrays; move them explicitly with asarray(x, xp)")
    if kinds == {True}:
        import cupy

        return cupy
    return numpy


def get_xp(name: str = "numpy"):
    """The array module by name: 'numpy' or 'cupy' (imported only now)."""
    if name == "numpy":
        return numpy
    if name == "cupy":
        import cupy

        return cupy
    raise ValueError(f"unknown backend {name!r}; expected 'numpy' or 'cupy'")


def to_numpy(x):
    """A host numpy array for x (a copy only when x lives on the device)."""
    if _is_cupy(x):
        return x.get()
    return numpy.asarray(x)


def asarray(x, xp, dtype=None):
    """x as an array of module xp (an explicit host->device or device->host move)."""
    if xp is numpy:
        return numpy.asarray(to_numpy(x), dtype=dtype)
    return xp.asarray(x, dtype=dtype)


def generator_module(rng):
    """The array module whose arrays rng draws (numpy.random.Generator -> numpy, CuPy's -> cupy)."""
    return get_xp("cupy") if _is_cupy(rng) else numpy


def generator_for(rng, xp):
    """rng itself when it draws arrays of xp, else a new Generator of xp seeded from one draw of rng.

    A generator of the wrong module would put host arrays into device code (or the reverse); this
    converts once, reproducibly: the same rng state gives the same new generator.
    """
    if generator_module(rng) is xp:
        return rng
    seed = int(to_numpy(rng.integers(0, 2 ** 63 - 1, size=1, dtype="int64"))[0])
    return xp.random.default_rng(seed)


def cupy_status():
    """None when CuPy can run here, else the reason it cannot (one line).

    Finding a device is not enough: cupy-cuda12x without CUDA's libraries (its `ctk` extra or a
    local toolkit) imports and counts devices, then fails at the first kernel. So this compiles and
    runs an elementwise kernel and a reduction (nvrtc), draws from a generator (cuRAND) and takes a
    QR decomposition (cuSOLVER, cuBLAS) on a tiny array.
    """
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA device"
        x = cupy.arange(6, dtype=cupy.float64).reshape(3, 2)
        if float((x * 2.0).sum()) != 30.0:
            return "a CuPy kernel gave a wrong sum"
        cupy.random.default_rng(0).random((4,)).get()
        q, r = cupy.linalg.qr(x)
        if not float(cupy.abs(q @ r - x).max()) < 1e-9:
            return "CuPy's qr gave a wrong result"
        cupy.cuda.Stream.null.synchronize()
    except Exception as e:  # ImportError, a missing CUDA library, no driver, no device
        return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    return None


def backend_name(xp) -> str:
    """'numpy' or 'cupy' for an array module."""
    return xp.__name__.split(".")[0]


def quiet_overflow(xp, **which):
    """NumPy's floating-point warnings off inside a `with` (default: overflow); CuPy raises none."""
    if backend_name(xp) == "numpy":
        return xp.errstate(**(which or {"over": "ignore"}))
    import contextlib

    return contextlib.nullcontext()


def compute_dtype(dtype, xp):
    """The dtype to accumulate in: at least float32 (float16 and ints promote)."""
    return xp.promote_types(dtype, xp.float32)


def scatter_add_rows(target, idx, values):
    """target[idx[n]] += values[n] for every n, duplicates accumulating; in place, returns target.

    target (V, C), idx (N,) integer, values (N, C). Plain ``target[idx] += values`` would keep only
    one of the duplicates, so numpy uses ``add.at`` and cupy ``cupyx.scatter_add``.
    """
    if _is_cupy(target):
        import cupyx

        cupyx.scatter_add(target, idx, values)
    else:
        numpy.add.at(target, idx, values)
    return target


def sum_rows_by_index(idx, values, num_rows: int):
    """out[v] = sum of values[n] over every n with idx[n] == v: a new (num_rows, C) array.

    idx (N,) integers in [0, num_rows), values (N, C). The same sums as scatter_add_rows into
    zeros, faster on numpy: a stable sort by index, then one add.reduceat over the runs of equal
    indices (each run summed in its original order) and one write per distinct index. cupy uses
    cupyx.scatter_add. Rows whose index never occurs are zero.
    """
    xp = array_module(idx, values)
    out = xp.zeros((num_rows, values.shape[-1]), dtype=values.dtype)     # (V, C)
    if _is_cupy(values) or idx.shape[0] == 0:
        return scatter_add_rows(out, idx, values)
    order = numpy.argsort(idx, kind="stable")                            # (N,) equal indices stay in order
    sorted_idx = idx[order]
    starts = numpy.flatnonzero(numpy.concatenate(([True], sorted_idx[1:] != sorted_idx[:-1])))  # run starts
    out[sorted_idx[starts]] = numpy.add.reduceat(values[order], starts, axis=0)   # (runs, C)
    return out


# ---- memory: sizes are checked before anything that large is allocated ------------------------
def _host_available() -> int | None:
    """Bytes the host can still give: MemAvailable, lowered by a cgroup (container) limit."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        try:
            import os
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            room = int(limit) - used
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    return avail


def available_memory(xp=None) -> int | None:
    """Bytes that can still be allocated on xp's device (host RAM for numpy); None if unknown."""
    if xp is not None and backend_name(xp) == "cupy":
        free, _ = xp.cuda.Device().mem_info
        return int(free)
    return _host_available()


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"


def check_allocation(nbytes: int, what: str, xp=None) -> None:
    """MiniLoraError, before allocating, if `what` needs more bytes than xp's device has free."""
    from minilora.errors import MiniLoraError

    avail = available_memory(xp)
    if avail is not None and nbytes > avail:
        raise MiniLoraError(f"{what} needs {format_bytes(nbytes)}, more than the {format_bytes(avail)} of memory "
                            "available; nothing was allocated")


def check_finite_weight(arr, name: str, where) -> None:
    """MiniLoraError naming the weight if it holds a NaN or an infinity (it would poison every output)."""
    from minilora.errors import MiniLoraError

    xp = array_module(arr)
    finite = xp.isfinite(arr)
    if not bool(xp.all(finite)):
        bad = int(arr.size - int(xp.count_nonzero(finite)))
        raise MiniLoraError(f"{where}: weight {name} holds {bad} non-finite value(s) (NaN or inf); refusing to load it")
