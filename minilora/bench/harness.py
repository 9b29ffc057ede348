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

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from minilora.adapters import merge_lora
from minilora.bench import real
from minilora.bench.models import LORA, PRESETS, VOCAB, make_batch, make_config, make_model, minilora_step, step_flops  # noqa: F401  (re-exported: tests and the memory probe use bench.<name>)
from minilora.bench.tools import (  # noqa: F401  (re-exported: tests and callers use bench.<name>)
    _MEMPROBE,
    _cpu_model,
    _openblas,
    _param_calc_script,
    _summary,
    _torch_available,
    bench_startup,
    blas_threads,
    environment,
    interleaved,
    matmul_fn,
    matmul_rate,
    median,
    peak_rss_kib,
    profile_call,
)
from minilora.errors import MiniLoraError

RATIO_KEYS = ("train_step_vs_torch_small", "train_step_vs_torch_medium", "mfu_medium",
              "lora_vs_full_step", "lora_vs_full_peak_mem", "merged_vs_base_latency",
              "unmerged_vs_base_latency", "kv_cache_speedup", "param_calc_startup_vs_python",
              "real_lora_step_vs_torch", "real_peak_mem_vs_torch", "threads2_speedup",
              "gradient_checkpointing_mem", "gradient_checkpointing_time")

# name -> (model config, batch, seq). GQA with half as many KV heads; byte-level vocabulary.
# ---- threads ------------------------------------------------------------------------------


# ---- timing -------------------------------------------------------------------------------


# ---- sections -----------------------------------------------------------------------------


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
        from minilora.bench.torch_ref import TorchTrainer

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


def peak_memory(spec, batch, seq, mode, threads: int = 1) -> dict:
    """Peak memory (KiB) of a fresh process that imports minilora, builds the model, takes 2 steps.

    peak_rss_kib is the process's RSS high-water mark (VmHWM); traced_* are tracemalloc's counts
    of live Python and NumPy allocations (setup = weights; after steps = + optimizer state).
    """
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the repository
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
    """Greedy generation of new_tokens with and without the KV cache (minilora.inference.generate)."""
    try:
        from minilora.inference.generate import generate
    except ImportError as e:
        return {"skipped": f"minilora.inference.generate is not available ({e})"}
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
    cfg = make_config(spec)
    ids, labels = make_batch(batch, seq)
    step = minilora_step(make_model(cfg, mode), ids, labels)
    step()
    return profile_call(step, top)


# ---- the run ------------------------------------------------------------------------------


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
    r = _Result(ratios=dict.fromkeys(RATIO_KEYS), log=log)
    if not torch_ok:
        why = "PyTorch is not installed" if use_torch else "--no-torch was given"
        r.notes["train_step_vs_torch_small"] = r.notes["train_step_vs_torch_medium"] = why
    w, reps = P["warmup"], P["repeats"]
    r.timings["matmul"] = r.section("matmul peak", matmul_rate, P["matmul_n"])
    for size in ("small", "medium"):
        _train_section(r, P, size, torch_ok, threads)
    real.run_section(r.section, P["real"], w, reps["real"], threads, use_torch, r.ratios, r.notes, r.timings,
                     r.flops)
    _memory_and_latency_sections(r, P, threads)
    return {"ratios": r.ratios, "notes": r.notes, "timings": r.timings, "flops": r.flops,
            "configs": _configs(P, preset), "environment": environment(threads), "memory_method": MEMORY_METHOD,
            "section_seconds": r.sections, "wall_seconds": time.perf_counter() - t_start}


MEMORY_METHOD = ("peak RSS (VmHWM) of a fresh subprocess that imports minilora, builds the model (medium) and "
                 "runs 2 training steps; real: VmHWM reset after setup, over 2 steps, minus the RSS after imports, "
                 "both sides, MALLOC_MMAP_THRESHOLD_=65536")


@dataclass
class _Result:
    """What the sections fill in: ratios, their notes, raw timings, FLOP counts, section times."""
    ratios: dict
    log: object
    notes: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    flops: dict = field(default_factory=dict)
    sections: dict = field(default_factory=dict)

    def section(self, name, fn, *args, **kw):
        self.log(f"{name} ...")
        t0 = time.perf_counter()
        result = fn(*args, **kw)
        self.sections[name] = time.perf_counter() - t0
        return result


def _train_section(r: _Result, P: dict, size: str, torch_ok: bool, threads: int):
    """A training step of the small or medium config against PyTorch; medium also gives MFU and LoRA vs full."""
    spec, batch, seq = P[size]
    medium = size == "medium"
    attn = P["torch_attention"][size] if torch_ok else ()
    cfg, out = r.section(f"train step {size}", bench_train, spec, batch, seq, P["warmup"], P["repeats"][size], attn,
                         threads, with_full=medium, matmul_n=P["matmul_n"] if medium else None)
    r.timings[f"train_{size}"] = out
    if attn:                                   # PyTorch's faster attention kind is the reference
        r.ratios[f"train_step_vs_torch_{size}"] = min(out["paired"][f"torch_{a}/minilora_lora"] for a in attn)
    if not medium:
        return
    r.flops["medium_lora"] = step_flops(cfg, batch, seq, "lora")
    r.flops["medium_full"] = step_flops(cfg, batch, seq, "full")
    n = P["matmul_n"]
    r.ratios["mfu_medium"] = r.flops["medium_lora"]["total"] / (2.0 * n ** 3) * out["paired"][
        "matmul/minilora_lora"]                       # (F / t_step) / (2 n^3 / t_matmul)
    out["mfu_vs_best_matmul"] = r.flops["medium_lora"]["total"] / out["median"]["minilora_lora"] / \
        r.timings["matmul"]["flops_per_s"]
    out["mfu_full"] = r.flops["medium_full"]["total"] / out["median"]["minilora_full"] / \
        (2.0 * n ** 3 / out["median"]["matmul"])
    r.ratios["lora_vs_full_step"] = out["paired"]["minilora_lora/minilora_full"]


def _memory_and_latency_sections(r: _Result, P: dict, threads: int):
    """Profile, peak memory (LoRA vs full), merged latency, the KV cache, param-calc's start-up."""
    w, reps = P["warmup"], P["repeats"]
    spec, batch, seq = P["medium"]
    r.timings["profile_medium_lora"] = r.section("profile", profile_step, spec, batch, seq)
    mem = r.section("peak memory", lambda: {m: peak_memory(spec, batch, seq, m, threads) for m in ("lora", "full")})
    r.timings["peak_memory"] = mem
    r.ratios["lora_vs_full_peak_mem"] = mem["lora"]["peak_rss_kib"] / mem["full"]["peak_rss_kib"]
    mem["traced_peak_ratio"] = mem["lora"]["traced_peak_kib"] / mem["full"]["traced_peak_kib"]
    lat = r.section("forward latency", bench_latency, P["small"][0], P["latency_batch"], P["small"][2],
                    w + 1, reps["latency"])
    r.timings["latency"] = lat
    r.ratios["merged_vs_base_latency"] = lat["paired"]["merged/base"]
    r.ratios["unmerged_vs_base_latency"] = lat["paired"]["unmerged/base"]
    gen = r.section("generation", bench_generation, P["small"][0], P["prompt_len"], P["new_tokens"], 0,
                    reps["generation"])
    r.timings["generation"] = gen
    if "skipped" in gen:
        r.notes["kv_cache_speedup"] = gen["skipped"]
    else:
        r.ratios["kv_cache_speedup"] = gen["paired"]["no_cache/cache"]
    st = r.section("param-calc startup", bench_startup, reps["startup"])
    r.timings["startup"] = st
    r.ratios["param_calc_startup_vs_python"] = st["paired"]["param_calc_help/python_pass"]


def _configs(P: dict, preset: str) -> dict:
    """The configurations every section ran, recorded with the results."""
    configs = {size: {"model": make_config(P[size][0]).to_dict(), "batch": P[size][1], "seq": P[size][2]}
               for size in ("small", "medium")}
    configs["real"] = {"model": P["real"][0], "batch": P["real"][1], "seq": P["real"][2], "lora": real.REAL_LORA}
    configs.update(lora=LORA, preset=preset, warmup=P["warmup"], repeats=P["repeats"], matmul_n=P["matmul_n"],
                   dtype="float32", new_tokens=P["new_tokens"], prompt_len=P["prompt_len"],
                   latency_batch=P["latency_batch"], torch_attention=P["torch_attention"])
    return configs


def format_ratios(result: dict) -> str:
    """The ratios as an aligned two-column table (null ratios show their note)."""
    lines = []
    for k in RATIO_KEYS:
        v = result["ratios"][k]
        lines.append(f"{k:32s} {'null (' + result['notes'].get(k, '') + ')' if v is None else f'{v:.3f}'}")
    return "\n".join(lines)

