"""Measuring tools for the benchmark: interleaved timers, BLAS threads, a GEMM's FLOP rate,
peak memory of a fresh process, process start-up time, and the machine's description.
"""
from __future__ import annotations

import ctypes
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np


def _openblas():
    """(get, set) functions of the OpenBLAS numpy loaded, or None (e.g. another BLAS)."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower() and "/" in ln})
    except OSError:
        return None
    for path in paths:
        lib = ctypes.CDLL(path)
        for pre, suf in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"),
                         ("openblas", "")):
            get = getattr(lib, f"{pre}_get_num_threads{suf}", None)
            put = getattr(lib, f"{pre}_set_num_threads{suf}", None)
            if get is not None and put is not None:
                return get, put
    return None


def blas_threads(n: int | None = None) -> int | None:
    """The BLAS thread count (after setting it to n, if given); None if it cannot be read."""
    ob = _openblas()
    if ob is None:
        return None
    if n is not None:
        ob[1](int(n))
    return int(ob[0]())


def interleaved(fns: dict, warmup: int, repeats: int) -> dict:
    """{name: [seconds, ...]}: each fn warmed up, then timed in rounds a, b, a, b, ..."""
    for f in fns.values():
        for _ in range(warmup):
            f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return times


def median(xs):
    return float(statistics.median(xs))


def matmul_fn(n: int):
    """A closure computing one (n, n) @ (n, n) float32 product (2 n^3 FLOPs)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    return lambda: a @ b


def matmul_rate(n: int, repeats: int = 5) -> dict:
    """The best FLOP rate of an (n, n) @ (n, n) float32 product: 2 n^3 / seconds."""
    t = interleaved({"mm": matmul_fn(n)}, 1, repeats)["mm"]
    return {"n": n, "seconds": t, "flops_per_s": 2.0 * n ** 3 / min(t)}


def _summary(times: dict, pairs=()) -> dict:
    """Medians of each series and, for each (a, b) in pairs, the median over rounds of a_i / b_i."""
    out = {"seconds": times, "median": {k: median(v) for k, v in times.items()}}
    out["paired"] = {f"{a}/{b}": median([x / y for x, y in zip(times[a], times[b], strict=True)])
                     for a, b in pairs}
    return out


_MEMPROBE = """
import json, sys, tracemalloc
sys.path.insert(0, {root!r})
from minilora.bench import harness as bench
rss0 = bench.peak_rss_kib()
tracemalloc.start()
cfg = bench.make_config({spec!r})
model = bench.make_model(cfg, {mode!r})
ids, labels = bench.make_batch({batch}, {seq})
step = bench.minilora_step(model, ids, labels)
rss1, traced1 = bench.peak_rss_kib(), tracemalloc.get_traced_memory()[0]
for _ in range(2):
    step()
traced = tracemalloc.get_traced_memory()
print(json.dumps({{"peak_rss_after_imports_kib": rss0, "peak_rss_after_setup_kib": rss1,
                  "peak_rss_kib": bench.peak_rss_kib(), "traced_after_setup_kib": traced1 // 1024,
                  "traced_after_steps_kib": traced[0] // 1024, "traced_peak_kib": traced[1] // 1024}}))
"""


def peak_rss_kib() -> int:
    """This process's peak resident set size in KiB: VmHWM from /proc/self/status on Linux.

    ru_maxrss is the fallback; on Linux it survives exec, so a child forked from a large parent
    would report the parent's size, which VmHWM (per address space) does not.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib // 1024 if sys.platform == "darwin" else kib                  # macOS reports bytes


def rss_kib() -> int:
    """This process's resident set size now (VmRSS), KiB; 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs); False if impossible."""
    try:                                     # a kernel control file, not data: no atomic temporary
        fd = os.open("/proc/self/clear_refs", os.O_WRONLY)
        try:
            os.write(fd, b"5")
        finally:
            os.close(fd)
        return True
    except OSError:
        return False


def profile_call(fn, top: int = 15) -> list:
    """cProfile of one call of fn: the `top` entries by own time (function, calls, seconds, share)."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.runcall(fn)
    stats = pstats.Stats(prof)
    total = stats.total_tt
    rows = []
    for (path, line, name), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():
        where = f"{os.path.basename(path)}:{line}({name})" if line else name
        rows.append({"function": where, "calls": ncalls, "tottime": tottime, "cumtime": cumtime,
                     "share": tottime / total if total else 0.0})
    return sorted(rows, key=lambda r: -r["tottime"])[:top]


def bench_startup(repeats) -> dict:
    """Wall time of `param-calc --help` and of `python -c pass` (fresh processes, interleaved)."""
    script, python = _param_calc_script()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the repository
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    cmd = [script, "--help"] if script else [python, "-m", "param_calc", "--help"]

    def spawn(argv):
        return lambda: subprocess.run(argv, stdout=subprocess.DEVNULL, env=env, check=True)
    t = interleaved({"param_calc_help": spawn(cmd), "python_pass": spawn([python, "-c", "pass"])},
                    1, repeats)
    out = _summary(t, [("param_calc_help", "python_pass")])
    out.update(command=cmd, baseline=[python, "-c", "pass"])
    return out


def _param_calc_script():
    """(the installed param-calc script or None, the interpreter it runs on).

    The script beside this interpreter, else the first on PATH; its #! line names the interpreter
    that `python -c pass` is timed with, so both sides start the same Python with the same site.
    """
    import shutil

    script = os.path.join(os.path.dirname(sys.executable), "param-calc")
    script = script if os.path.exists(script) else shutil.which("param-calc")
    if script:
        with open(script, "rb") as f:
            first = f.readline().decode(errors="replace").strip()
        if first.startswith("#!") and os.path.exists(first[2:].strip()):
            return script, first[2:].strip()
    return None, sys.executable


def _torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def environment(threads) -> dict:
    env = {"python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
           "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "threads": threads,
           "blas_threads": blas_threads()}
    try:
        env["blas"] = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    except Exception:            # the layout of numpy's build information varies by version
        env["blas"] = None
    try:
        import torch

        env["torch"], env["torch_threads"] = torch.__version__, torch.get_num_threads()
    except ImportError:
        env["torch"] = None
    return env
