"""The benchmark: minilora against PyTorch, LoRA against full fine-tuning, in one run.

    minilora bench --json bench.json                    # the full run (~80 s on an idle 2-core machine)
    python -m minilora.bench --json bench.json          # the same
    minilora bench --preset tiny --json smoke.json      # seconds: the test suite's smoke run

Every timed thing is warmed up, then the things compared run in interleaved rounds (a, b, a, b,
...) so that load from other processes hits both sides alike; each ratio is the median over the
rounds of a_i / b_i (the plain medians are recorded too). One BLAS thread by default (--threads).
The JSON holds ``ratios`` (the headline numbers), ``timings`` (the raw seconds), ``flops``,
``configs`` and ``environment``. A ratio that could not be measured is null and ``notes`` says
why (e.g. PyTorch is not installed). What each ratio means and how the FLOPs are counted:
docs/performance.md.
"""
from __future__ import annotations

import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

from .adapters import LoraConfig, add_lora, merge_lora
from .config import LlamaConfig
from .errors import MiniLoraError
from .model import LlamaForCausalLM
from .optim import AdamW

RATIO_KEYS = ("train_step_vs_torch_small", "train_step_vs_torch_medium", "mfu_medium",
              "lora_vs_full_step", "lora_vs_full_peak_mem", "merged_vs_base_latency",
              "unmerged_vs_base_latency", "kv_cache_speedup", "param_calc_startup_vs_python")

# name -> (model config, batch, seq). GQA with half as many KV heads; byte-level vocabulary.
PRESETS = {
    "full": {
        "small": (dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2), 8, 128),
        "medium": (dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                        num_attention_heads=8, num_key_value_heads=4), 4, 256),
        "matmul_n": 2048, "new_tokens": 128, "prompt_len": 64, "latency_batch": 2,
        "torch_attention": {"small": ("sdpa", "eager"), "medium": ("sdpa",)},
        "warmup": 1, "repeats": {"small": 4, "medium": 3, "latency": 20, "generation": 3, "startup": 10},
    },
    "tiny": {
        "small": (dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2), 2, 16),
        "medium": (dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2), 2, 24),
        "matmul_n": 256, "new_tokens": 8, "prompt_len": 4, "latency_batch": 2,
        "torch_attention": {"small": ("sdpa", "eager"), "medium": ("sdpa",)},
        "warmup": 0, "repeats": {"small": 1, "medium": 1, "latency": 3, "generation": 1, "startup": 2},
    },
}
LORA = dict(r=8, lora_alpha=16, target_modules="all-linear")   # the shipped r8 all-linear run
VOCAB = 259


# ---- threads ------------------------------------------------------------------------------
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


# ---- timing -------------------------------------------------------------------------------
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


# ---- models -------------------------------------------------------------------------------
def make_config(spec: dict) -> LlamaConfig:
    return LlamaConfig(vocab_size=VOCAB, max_position_embeddings=512, **spec)


def make_model(cfg: LlamaConfig, mode: str, seed: int = 0):
    """'base' (no adapter), 'lora' (r=8 all-linear, B random so the update is not zero), 'full'."""
    model = LlamaForCausalLM.init(cfg, seed=seed)
    if mode == "full":
        model.set_full_finetuning()
    elif mode == "lora":
        add_lora(model, LoraConfig(**LORA), seed=seed + 1)
        rng = np.random.default_rng(seed + 2)
        for m in model.lora:
            b = model.params[m + ".lora_B.weight"]
            b[...] = 0.01 * rng.standard_normal(b.shape, dtype=np.float32)
    return model


def make_batch(batch: int, seq: int, seed: int = 0):
    ids = np.random.default_rng(seed).integers(0, VOCAB, (batch, seq))
    return ids, ids.copy()


def minilora_step(model, ids, labels):
    """A closure running one training step: forward, backward, AdamW over the trainable names."""
    opt = AdamW(lr=1e-4)

    def step():
        loss, grads = model.loss_and_grads(ids, labels)
        opt.step(model.params, grads)
        return loss
    return step


# ---- FLOP accounting ---------------------------------------------------------------------
def step_flops(cfg: LlamaConfig, batch: int, seq: int, mode: str, r: int = LORA["r"]) -> dict:
    """Matrix-product FLOPs (2 per multiply-add) one training step needs; see docs/performance.md.

    Linear (in -> out) over N tokens: forward 2 N in out; backward dX 2 N in out, plus dW
    2 N in out only when W trains (full fine-tuning). LoRA adds forward 2 N r (in + out) and
    backward dB, dz, dA, dx: 4 N r (in + out). The head sees N' = B (T - 1) tokens. Attention
    counts the causal triangle only (T (T + 1) / 2 query-key pairs per head): QK^T and PV forward,
    dP, dV, dQ, dK backward, 2 hd FLOPs per pair each. Elementwise work (norms, softmax, SwiGLU,
    RoPE, AdamW) is not counted.
    """
    n, n_head = batch * seq, batch * (seq - 1)
    fwd = bwd = 0
    for name, (fin, fout) in cfg.linear_modules().items():
        tokens = n_head if name == "lm_head" else n
        mm = 2 * tokens * fin * fout
        fwd += mm
        bwd += mm if mode == "lora" else 2 * mm                   # dX (+ dW)
        if mode == "lora" and name != "lm_head":
            fwd += 2 * tokens * r * (fin + fout)
            bwd += 4 * tokens * r * (fin + fout)
    pairs = batch * cfg.num_attention_heads * seq * (seq + 1) // 2
    att = 2 * pairs * cfg.head_dim * cfg.num_hidden_layers        # one pair-product per layer
    fwd += 2 * att
    bwd += 4 * att
    return {"forward": fwd, "backward": bwd, "total": fwd + bwd, "attention": 6 * att}


# ---- sections -----------------------------------------------------------------------------
def _summary(times: dict, pairs=()) -> dict:
    """Medians of each series and, for each (a, b) in pairs, the median over rounds of a_i / b_i."""
    out = {"seconds": times, "median": {k: median(v) for k, v in times.items()}}
    out["paired"] = {f"{a}/{b}": median([x / y for x, y in zip(times[a], times[b], strict=True)])
                     for a, b in pairs}
    return out


def bench_train(spec, batch, seq, warmup, repeats, torch_attn=(), threads=1, with_full=False,
                matmul_n=None):
    """One LoRA training step: minilora, and torch (each attention kind in torch_attn), minilora's
    full fine-tuning step and an (n, n) matmul when asked, timed in interleaved rounds."""
    cfg = make_config(spec)
    ids, labels = make_batch(batch, seq)
    lora = make_model(cfg, "lora")
    fns, losses = {"minilora_lora": minilora_step(lora, ids, labels)}, {}
    losses["minilora"] = float(lora.loss(ids, labels))
    if torch_attn:
        from .bench_torch import TorchTrainer

        for att in torch_attn:
            tr = TorchTrainer(lora, lr=1e-4, attention=att, threads=threads)
            losses[f"torch_{att}"] = tr.loss(ids, labels)
            fns[f"torch_{att}"] = lambda tr=tr: tr.step(ids, labels)
    if with_full:
        fns["minilora_full"] = minilora_step(make_model(cfg, "full"), ids, labels)
    if matmul_n:
        fns["matmul"] = matmul_fn(matmul_n)
    pairs = [(f"torch_{att}", "minilora_lora") for att in torch_attn]
    pairs += [("minilora_lora", "minilora_full")] if with_full else []
    pairs += [("matmul", "minilora_lora")] if matmul_n else []
    out = _summary(interleaved(fns, warmup, repeats), pairs)
    out["initial_loss"] = losses
    return cfg, out


_MEMPROBE = """
import json, sys, tracemalloc
sys.path.insert(0, {root!r})
from minilora import bench
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


def peak_memory(spec, batch, seq, mode, threads: int = 1) -> dict:
    """Peak memory (KiB) of a fresh process that imports minilora, builds the model, takes 2 steps.

    peak_rss_kib is the process's RSS high-water mark (VmHWM); traced_* are tracemalloc's counts
    of live Python and NumPy allocations (setup = weights; after steps = + optimizer state).
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = _MEMPROBE.format(root=root, spec=spec, mode=mode, batch=batch, seq=seq)
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise MiniLoraError(f"memory probe ({mode}) failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_latency(spec, batch, seq, warmup, repeats) -> dict:
    """Inference forward of the base, the merged and the unmerged adapted model (same base weights)."""
    cfg = make_config(spec)
    ids, _ = make_batch(batch, seq, seed=1)
    base, unmerged, merged = (make_model(cfg, m) for m in ("base", "lora", "lora"))  # same seed
    merge_lora(merged)
    err = float(np.max(np.abs(merged.forward(ids) - unmerged.forward(ids))))
    t = interleaved({"base": lambda: base.forward(ids), "merged": lambda: merged.forward(ids),
                     "unmerged": lambda: unmerged.forward(ids)}, warmup, repeats)
    out = _summary(t, [("merged", "base"), ("unmerged", "base")])
    out.update(batch=batch, seq=seq, merged_max_abs_diff=err)
    return out


def bench_generation(spec, prompt_len, new_tokens, warmup, repeats) -> dict:
    """Greedy generation of new_tokens with and without the KV cache (minilora.generate)."""
    try:
        from .generate import generate
    except ImportError as e:
        return {"skipped": f"minilora.generate is not available ({e})"}
    cfg = make_config(spec)
    model = make_model(cfg, "base")
    ids, _ = make_batch(1, prompt_len, seed=2)
    outs = {}

    def run(cache):
        outs[cache] = generate(model, ids, max_new_tokens=new_tokens, use_cache=cache)
    t = interleaved({"cache": lambda: run(True), "no_cache": lambda: run(False)}, warmup, repeats)
    out = _summary(t, [("no_cache", "cache")])
    out.update(new_tokens=new_tokens, prompt_len=prompt_len, batch=1,
               same_tokens=bool(np.array_equal(np.asarray(outs[True]), np.asarray(outs[False]))),
               tokens_per_s={k: new_tokens / v for k, v in out["median"].items()})
    return out


def profile_step(spec, batch, seq, mode: str = "lora", top: int = 15) -> list:
    """cProfile of one training step (after one unprofiled step): the `top` entries by own time."""
    import cProfile
    import pstats

    cfg = make_config(spec)
    ids, labels = make_batch(batch, seq)
    step = minilora_step(make_model(cfg, mode), ids, labels)
    step()
    prof = cProfile.Profile()
    prof.runcall(step)
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
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


# ---- the run ------------------------------------------------------------------------------
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


def run_bench(preset: str = "full", use_torch: bool = True, threads: int = 1, log=print) -> dict:
    """Run every section of `preset` ('full' or 'tiny'); returns the JSON-ready result dict.

    Each ratio is the median over interleaved rounds of the per-round ratio (a_i / b_i), which
    load from other processes disturbs less than a ratio of two medians (both are in timings).
    threads: BLAS threads, PyTorch's threads and the memory probes' threads (default 1: single
    threaded ratios are the reproducible ones on a shared machine).
    """
    if preset not in PRESETS:
        raise MiniLoraError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    P = PRESETS[preset]
    t_start = time.perf_counter()
    if threads < 1:
        raise MiniLoraError(f"threads must be >= 1, got {threads}")
    got = blas_threads(threads)
    if got is not None and got != threads:
        raise MiniLoraError(f"could not set the BLAS to {threads} threads (it uses {got})")
    torch_ok = use_torch and _torch_available()
    ratios = dict.fromkeys(RATIO_KEYS)
    notes, timings, flops, sections = {}, {}, {}, {}
    if not torch_ok:
        why = "PyTorch is not installed" if use_torch else "--no-torch was given"
        notes["train_step_vs_torch_small"] = notes["train_step_vs_torch_medium"] = why
    w, reps = P["warmup"], P["repeats"]

    def section(name, fn, *args, **kw):
        log(f"{name} ...")
        t0 = time.perf_counter()
        result = fn(*args, **kw)
        sections[name] = time.perf_counter() - t0
        return result

    timings["matmul"] = section("matmul peak", matmul_rate, P["matmul_n"])
    for size in ("small", "medium"):
        spec, batch, seq = P[size]
        medium = size == "medium"
        attn = P["torch_attention"][size] if torch_ok else ()
        cfg, out = section(f"train step {size}", bench_train, spec, batch, seq, w, reps[size], attn,
                           threads, with_full=medium, matmul_n=P["matmul_n"] if medium else None)
        timings[f"train_{size}"] = out
        if attn:                                   # PyTorch's faster attention kind is the reference
            ratios[f"train_step_vs_torch_{size}"] = min(out["paired"][f"torch_{a}/minilora_lora"] for a in attn)
        if medium:
            flops["medium_lora"] = step_flops(cfg, batch, seq, "lora")
            flops["medium_full"] = step_flops(cfg, batch, seq, "full")
            n = P["matmul_n"]
            ratios["mfu_medium"] = flops["medium_lora"]["total"] / (2.0 * n ** 3) * out["paired"][
                "matmul/minilora_lora"]                       # (F / t_step) / (2 n^3 / t_matmul)
            out["mfu_vs_best_matmul"] = flops["medium_lora"]["total"] / out["median"]["minilora_lora"] / \
                timings["matmul"]["flops_per_s"]
            out["mfu_full"] = flops["medium_full"]["total"] / out["median"]["minilora_full"] / \
                (2.0 * n ** 3 / out["median"]["matmul"])
            ratios["lora_vs_full_step"] = out["paired"]["minilora_lora/minilora_full"]

    spec, batch, seq = P["medium"]
    timings["profile_medium_lora"] = section("profile", profile_step, spec, batch, seq)
    mem = section("peak memory", lambda: {m: peak_memory(spec, batch, seq, m, threads) for m in ("lora", "full")})
    timings["peak_memory"] = mem
    ratios["lora_vs_full_peak_mem"] = mem["lora"]["peak_rss_kib"] / mem["full"]["peak_rss_kib"]
    mem["traced_peak_ratio"] = mem["lora"]["traced_peak_kib"] / mem["full"]["traced_peak_kib"]

    lat = section("forward latency", bench_latency, P["small"][0], P["latency_batch"], P["small"][2],
                  w + 1, reps["latency"])
    timings["latency"] = lat
    ratios["merged_vs_base_latency"] = lat["paired"]["merged/base"]
    ratios["unmerged_vs_base_latency"] = lat["paired"]["unmerged/base"]

    gen = section("generation", bench_generation, P["small"][0], P["prompt_len"], P["new_tokens"], 0,
                  reps["generation"])
    timings["generation"] = gen
    if "skipped" in gen:
        notes["kv_cache_speedup"] = gen["skipped"]
    else:
        ratios["kv_cache_speedup"] = gen["paired"]["no_cache/cache"]

    st = section("param-calc startup", bench_startup, reps["startup"])
    timings["startup"] = st
    ratios["param_calc_startup_vs_python"] = st["paired"]["param_calc_help/python_pass"]

    configs = {size: {"model": make_config(P[size][0]).to_dict(), "batch": P[size][1], "seq": P[size][2]}
               for size in ("small", "medium")}
    configs.update(lora=LORA, preset=preset, warmup=w, repeats=reps, matmul_n=P["matmul_n"],
                   dtype="float32", new_tokens=P["new_tokens"], prompt_len=P["prompt_len"],
                   latency_batch=P["latency_batch"], torch_attention=P["torch_attention"])
    return {"ratios": ratios, "notes": notes, "timings": timings, "flops": flops, "configs": configs,
            "environment": environment(threads), "memory_method": "peak RSS (VmHWM) of a fresh "
            "subprocess that imports minilora, builds the model (medium) and runs 2 training steps",
            "section_seconds": sections, "wall_seconds": time.perf_counter() - t_start}


def format_ratios(result: dict) -> str:
    """The ratios as an aligned two-column table (null ratios show their note)."""
    lines = []
    for k in RATIO_KEYS:
        v = result["ratios"][k]
        lines.append(f"{k:32s} {'null (' + result['notes'].get(k, '') + ')' if v is None else f'{v:.3f}'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    from .cli import _Parser
    from .commands.bench import __doc__ as doc
    from .commands.bench import add_arguments, run

    p = _Parser(prog="python -m minilora.bench", description=doc,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    try:
        return run(p.parse_args(argv))
    except MiniLoraError as e:
        print(f"minilora: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
