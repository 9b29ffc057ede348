"""The real-model case: one LoRA training step at SmolLM2-135M's shapes, against PyTorch + PEFT.

SmolLM2-135M: hidden 576, 30 layers, 9 query heads and 3 KV heads of dim 64, SwiGLU width 1536,
vocabulary 49,152, tied embeddings; random weights (N(0, 0.02^2), as transformers initialises).
LoRA r = 8, alpha = 16 on q, k, v, o (B drawn small and non-zero); batch 4 x 128; a full AdamW step.
Timed in interleaved rounds in this process: minilora, minilora with gradient checkpointing,
minilora on two BLAS threads, and transformers + PEFT (minilora.bench.torch_peft). Peak memory
comes from fresh processes (REAL_PROBE), the same method for both sides: see docs/performance.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from minilora.adapters import LoraConfig, add_lora
from minilora.bench.models import SMOLLM2_135M, TINY_REAL, minilora_step, step_flops  # noqa: F401  (re-exported)
from minilora.bench.tools import _summary, blas_threads, interleaved, profile_call
from minilora.config import LlamaConfig
from minilora.errors import MiniLoraError
from minilora.model import LlamaForCausalLM

REAL_LORA = dict(r=8, lora_alpha=16, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))


def make_real_model(spec: dict, seed: int = 0):
    """Random weights with `spec`'s shapes and REAL_LORA added (B small and non-zero)."""
    model = LlamaForCausalLM.init(LlamaConfig(**spec), seed=seed)
    add_lora(model, LoraConfig(**{**REAL_LORA, "target_modules": list(REAL_LORA["target_modules"])}),
             seed=seed + 1)
    rng = np.random.default_rng(seed + 2)
    for m in model.adapters.modules:
        b = model.params[m + ".lora_B.weight"]
        b[...] = 0.01 * rng.standard_normal(b.shape, dtype=np.float32)
    return model


def real_batch(spec: dict, batch: int, seq: int, seed: int = 0):
    ids = np.random.default_rng(seed).integers(0, spec["vocab_size"], (batch, seq))
    return ids, ids.copy()


def _on_threads(fn, n: int):
    """fn run with the BLAS on n threads (set before every call: rounds interleave thread counts)."""
    def run():
        blas_threads(n)
        return fn()
    return run


def bench_real(spec, batch, seq, warmup, repeats, threads=1, use_torch=True) -> dict:
    """The real LoRA step: minilora vs PEFT, checkpointing on vs off, 2 BLAS threads vs 1."""
    model = make_real_model(spec)
    ids, labels = real_batch(spec, batch, seq)
    step = minilora_step(model, ids, labels)

    def ckpt_step():
        model.gradient_checkpointing = True
        try:
            return step()
        finally:
            model.gradient_checkpointing = False
    fns = {"minilora": _on_threads(step, threads), "minilora_ckpt": _on_threads(ckpt_step, threads)}
    pairs = [("minilora_ckpt", "minilora")]
    losses = {"minilora": float(model.loss(ids, labels))}
    if use_torch:
        from minilora.bench.torch_peft import PeftTrainer

        tr = PeftTrainer(model, REAL_LORA, lr=1e-4, threads=threads)
        losses["torch_peft"] = tr.loss(ids, labels)
        fns["torch_peft"] = lambda: tr.step(ids, labels)
        pairs.append(("torch_peft", "minilora"))
    for name in ("minilora", "torch_peft"):       # the others share their warm state
        for _ in range(warmup if name in fns else 0):
            fns[name]()
    out = _summary(interleaved(fns, 0, repeats), pairs)
    if threads == 1 and (blas_threads() or 0) >= 1:  # 2 threads vs 1, fewer rounds (its own pairs)
        two = interleaved({"minilora_1thread": fns["minilora"], "minilora_2threads": _on_threads(step, 2)},
                          0, min(repeats, 2))
        out["threads2"] = _summary(two, [("minilora_1thread", "minilora_2threads")])
    blas_threads(threads)
    out["initial_loss"] = losses
    out["profile"] = profile_call(step)
    return out


REAL_PROBE = """
import json, sys, tracemalloc, types
sys.path.insert(0, {root!r})
from minilora.bench import real, tools
spec, side = {spec!r}, {side!r}
if side == "torch":                          # the libraries' own code is not the step's memory
    import peft, torch, transformers  # noqa: F401
    from minilora.bench.torch_peft import PeftTrainer
rss0 = tools.peak_rss_kib()
ids, labels = real.real_batch(spec, {batch}, {seq})
out = {{"rss_after_imports_kib": rss0}}
if side == "torch":
    from minilora.config import LlamaConfig
    shell = types.SimpleNamespace(config=LlamaConfig(**spec), params={{}})
    tr = PeftTrainer(shell, real.REAL_LORA, threads={threads}, copy_weights=False)
    runs = {{"torch": lambda: tr.step(ids, labels)}}
else:
    tracemalloc.start()
    model = real.make_real_model(spec)
    step = real.minilora_step(model, ids, labels)
    def ckpt():
        model.gradient_checkpointing = True
        return step()
    runs = {{"minilora": step, "minilora_ckpt": ckpt}}
for name, fn in runs.items():
    reset = tools.reset_peak_rss()
    if tracemalloc.is_tracing():
        tracemalloc.reset_peak()
    before = tools.rss_kib()
    for _ in range(2):
        fn()
    out[name] = {{"peak_rss_kib": tools.peak_rss_kib(), "rss_before_steps_kib": before, "hwm_reset": reset}}
    if tracemalloc.is_tracing():
        out[name]["traced_peak_kib"] = tracemalloc.get_traced_memory()[1] // 1024
print(json.dumps(out))
"""


def real_peak_memory(spec, batch, seq, side: str, threads: int = 1) -> dict:
    """Peak memory of 2 real steps in a fresh process: side 'minilora' (checkpointing off, then on)
    or 'torch' (PEFT). Each run's peak is its VmHWM (reset before the run) over the RSS after imports.
    """
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = REAL_PROBE.format(root=root, spec=spec, side=side, batch=batch, seq=seq, threads=threads)
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MALLOC_MMAP_THRESHOLD_="65536")     # big blocks mmapped: freed memory leaves the RSS
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise MiniLoraError(f"real memory probe ({side}) failed: {proc.stderr.strip().splitlines()[-1:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for v in out.values():
        if isinstance(v, dict):
            v["step_kib"] = v["peak_rss_kib"] - out["rss_after_imports_kib"]
    return out


def add_real_ratios(ratios: dict, notes: dict, timed: dict, mem: dict,
                    torch_why: str = "PyTorch + transformers + PEFT are not installed"):
    """The real-model ratios from bench_real's timings and the memory probes."""
    p = timed["paired"]
    ratios["real_lora_step_vs_torch"] = p.get("torch_peft/minilora")
    if "threads2" in timed:
        ratios["threads2_speedup"] = timed["threads2"]["paired"]["minilora_1thread/minilora_2threads"]
    ratios["gradient_checkpointing_time"] = p["minilora_ckpt/minilora"]
    m = mem["minilora"]
    ratios["gradient_checkpointing_mem"] = m["minilora_ckpt"]["step_kib"] / m["minilora"]["step_kib"]
    if "torch" in mem:
        ratios["real_peak_mem_vs_torch"] = m["minilora"]["step_kib"] / mem["torch"]["torch"]["step_kib"]
        mem["checkpointed_vs_torch"] = m["minilora_ckpt"]["step_kib"] / mem["torch"]["torch"]["step_kib"]
    for key, why in (("real_lora_step_vs_torch", torch_why), ("real_peak_mem_vs_torch", torch_why),
                     ("threads2_speedup", "--threads is not 1, or the BLAS thread count cannot be set")):
        if ratios.get(key) is None:
            notes[key] = why


def peft_available() -> bool:
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True



def run_section(section, case, warmup, repeats, threads, use_torch, ratios, notes, timings, flops):
    """The real case inside run_bench: timings 'real' and 'real_peak_memory', flops 'real_lora', ratios."""
    spec, batch, seq = case
    peft_ok = use_torch and peft_available()
    timings["real"] = section("real step", bench_real, spec, batch, seq, warmup, repeats, threads, peft_ok)
    sides = ("minilora", "torch") if peft_ok else ("minilora",)
    mem = section("real peak memory", lambda: {s: real_peak_memory(spec, batch, seq, s, threads) for s in sides})
    timings["real_peak_memory"] = mem
    add_real_ratios(ratios, notes, timings["real"], mem, "--no-torch was given" if not use_torch else
                    "PyTorch + transformers + PEFT are not installed")
    flops["real_lora"] = step_flops(LlamaConfig(**spec), batch, seq, "lora", targets=REAL_LORA["target_modules"])
