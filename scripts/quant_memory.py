"""Memory, load time and LoRA step time of the SmolLM2-135M base in each frozen-base format.

Run by hand (the cached GGUF is needed: `minilora fetch smollm2-135m-instruct`):
    OPENBLAS_NUM_THREADS=1 python scripts/quant_memory.py                 # all formats, markdown table
    python scripts/quant_memory.py --formats float32 q4_1 --steps 3 --json out.json

Each format runs in a fresh process, so its peak RSS is its own:
    float32  from_pretrained(gguf): every tensor dequantized once to float32
    q8_0     float32 load, then model.quantize_base(8, fmt="q8_0")
    q4_1     from_pretrained(gguf, quant="gguf"): the file's own Q4_1 blocks kept packed
    nf4      float32 load, then model.quantize_base(4, fmt="nf4")
Reported: load time (including the gguf package's header parse), the bytes the model's arrays hold
(all of them, and the decoder-layer linear weights alone), peak RSS while loading and during the
training steps (the peak is reset after loading, so the training window sees the base as
stored, not the float32 copy it was quantized from), and the time of one LoRA step (batch 4 x 64,
r=8 on q, k, v, o, AdamW): median and minimum of --steps steps after one warm-up step. Also the
size of that adapter exported with export-gguf.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

FORMATS = ("float32", "q8_0", "q4_1", "nf4")


def _rss_mib() -> float:
    """Peak RSS of this process since start or since the last _reset_peak(), MiB (Linux VmHWM)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024      # never reset


def _reset_peak():
    """Start a new peak-RSS window (Linux: writing 5 to /proc/self/clear_refs resets VmHWM)."""
    import gc

    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def measure(fmt: str, steps: int) -> dict:
    import numpy as np

    from minilora import from_pretrained
    from minilora.adapters import LoraConfig, add_lora
    from minilora.quant import nbytes
    from minilora.runs.registry import resolve_model
    from minilora.training.optim import AdamW

    path = resolve_model("smollm2-135m-instruct", fetch_missing=False)
    rss_import = _rss_mib()
    t0 = time.perf_counter()
    model = from_pretrained(path, quant="gguf" if fmt == "q4_1" else None)
    if fmt in ("q8_0", "nf4"):
        model.quantize_base(8 if fmt == "q8_0" else 4, fmt=fmt)
    load_s = time.perf_counter() - t0
    assert (fmt == "float32") == (not model.quantized)
    layer = sum(nbytes(q) for q in model.quantized.values()) or sum(
        v.nbytes for k, v in model.params.items() if ".layers." in k and k.endswith("_proj.weight"))
    total = sum(v.nbytes for v in model.params.values()) + sum(nbytes(q) for q in model.quantized.values())
    rss_load = _rss_mib()
    _reset_peak()                          # the training window: the base as stored, not the float32 load
    add_lora(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]), seed=0)
    opt = AdamW(lr=1e-4)
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (4, 64))
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        loss, grads = model.loss_and_grads(ids, ids)
        opt.step(model.params, grads)
        times.append(time.perf_counter() - t)
    return {"format": fmt, "load_s": load_s, "model_MiB": total / 2**20, "layer_linears_MiB": layer / 2**20,
            "rss_imports_MiB": rss_import, "peak_rss_load_MiB": rss_load, "peak_rss_train_MiB": _rss_mib(),
            "step_s": float(np.median(times[1:])), "step_min_s": float(np.min(times[1:])), "loss": float(loss)}


def interleaved(steps: int) -> dict:
    """float32 vs kept Q4_1 blocks in one process, steps alternating, so that load from other jobs
    hits both alike: the median of the per-pair ratios (Q4_1 step / float32 step)."""
    import numpy as np

    from minilora import from_pretrained
    from minilora.adapters import LoraConfig, add_lora
    from minilora.runs.registry import resolve_model
    from minilora.training.optim import AdamW

    path = resolve_model("smollm2-135m-instruct", fetch_missing=False)
    models = {"float32": from_pretrained(path), "q4_1": from_pretrained(path, quant="gguf")}
    ids = np.random.default_rng(0).integers(0, models["q4_1"].config.vocab_size, (4, 64))
    opts, times = {}, {k: [] for k in models}
    for k, m in models.items():
        add_lora(m, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]), seed=0)
        opts[k] = AdamW(lr=1e-4)
    for _ in range(steps + 1):
        for k, m in models.items():
            t = time.perf_counter()
            _, grads = m.loss_and_grads(ids, ids)
            opts[k].step(m.params, grads)
            times[k].append(time.perf_counter() - t)
    ratios = [q / f for q, f in zip(times["q4_1"][1:], times["float32"][1:], strict=True)]
    return {"float32_step_s": float(np.median(times["float32"][1:])),
            "q4_1_step_s": float(np.median(times["q4_1"][1:])),
            "ratio_median": float(np.median(ratios)), "ratio_min": float(np.min(ratios))}


def adapter_size() -> dict:
    """Export an r=8 q, k, v, o adapter of SmolLM2 with export-gguf; its size and the PEFT file's."""
    from minilora import from_pretrained
    from minilora.adapters import LoraConfig, add_lora
    from minilora.io.gguf_adapter import write_gguf_adapter
    from minilora.io.peft import save_adapter
    from minilora.runs.registry import resolve_model

    path = resolve_model("smollm2-135m-instruct", fetch_missing=False)
    model = from_pretrained(path, quant="gguf")
    add_lora(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        save_adapter(model, os.path.join(tmp, "peft"))
        info = write_gguf_adapter(os.path.join(tmp, "peft"), path, os.path.join(tmp, "adapter.gguf"))
        peft = os.path.getsize(os.path.join(tmp, "peft", "adapter_model.safetensors"))
    return {"gguf_adapter_bytes": info["bytes"], "peft_safetensors_bytes": peft, "tensors": info["tensors"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS, help="formats to measure")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per format (after one warm-up)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--one", default=None, choices=FORMATS + ("adapter", "interleaved"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        one = {"adapter": adapter_size, "interleaved": lambda: interleaved(args.steps)}.get(args.one)
        print(json.dumps(one() if one else measure(args.one, args.steps)))
        return 0
    rows = []
    for fmt in args.formats + ["interleaved", "adapter"]:
        out = subprocess.run([sys.executable, __file__, "--one", fmt, "--steps", str(args.steps)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"(peak RSS includes the interpreter and imports: {rows[0]['rss_imports_MiB']:.0f} MiB)\n")
    print("| base | load s | model MiB | layer linears MiB | peak RSS load MiB | peak RSS train MiB "
          "| step s (median) | step s (min) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows[:-2]:
        print(f"| {r['format']} | {r['load_s']:.1f} | {r['model_MiB']:.1f} | {r['layer_linears_MiB']:.1f} | "
              f"{r['peak_rss_load_MiB']:.0f} | {r['peak_rss_train_MiB']:.0f} | {r['step_s']:.2f} | "
              f"{r['step_min_s']:.2f} |")
    i = rows[-2]
    print(f"\nfloat32 vs kept Q4_1, steps interleaved in one process: {i['float32_step_s']:.2f} s vs "
          f"{i['q4_1_step_s']:.2f} s; Q4_1 / float32 per pair: median {i['ratio_median']:.2f}, "
          f"min {i['ratio_min']:.2f}")
    a = rows[-1]
    print(f"\nexport-gguf, r=8 on q, k, v, o: {a['gguf_adapter_bytes']:,} bytes ({a['tensors']} tensors); "
          f"PEFT adapter_model.safetensors: {a['peft_safetensors_bytes']:,} bytes")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
