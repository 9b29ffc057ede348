"""The real-model LoRA step on the GPU: CuPy vs PyTorch CUDA + transformers + PEFT (if installed).

SmolLM2-135M's shapes with random weights, LoRA r=8 on q,k,v,o, batch 4 x 128, a full AdamW step
(minilora.bench.real), the same weights on both sides, float32. Prints median step seconds, the
ratio (> 1: CuPy is faster), both losses, and each side's peak GPU memory (CuPy's pool, torch's
max_memory_allocated). With --checkpointing, minilora recomputes each decoder layer in the backward.

    python scripts/gpu_real_step.py [--repeats 5] [--checkpointing]
"""
import argparse
import json
import time

import numpy as np

from minilora.bench.models import minilora_step
from minilora.bench.real import REAL_LORA, SMOLLM2_135M, make_real_model, real_batch


def median(fn, sync, repeats):
    fn()
    sync()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="timed steps per side (after one warm-up)")
    p.add_argument("--checkpointing", action="store_true", help="minilora with gradient checkpointing")
    a = p.parse_args()
    import cupy

    model = make_real_model(SMOLLM2_135M)                 # host weights, copied to both sides
    ids, labels = real_batch(SMOLLM2_135M, 4, 128)
    out = {}
    try:
        import torch

        from minilora.bench.torch_peft import PeftTrainer

        if torch.cuda.is_available():
            tr = PeftTrainer(model, REAL_LORA, device="cuda")
            out["loss_torch_cuda"] = tr.loss(ids, labels)
            out["step_s_torch_cuda"] = median(lambda: tr.step(ids, labels), torch.cuda.synchronize, a.repeats)
            out["peak_mib_torch_cuda"] = torch.cuda.max_memory_allocated() / 2**20
            del tr
            torch.cuda.empty_cache()
    except ImportError as e:
        out["torch_skipped"] = str(e)
    model.to("cupy")
    model.gradient_checkpointing = a.checkpointing
    dids, dlabels = cupy.asarray(ids), cupy.asarray(labels)
    out["loss_cupy"] = float(model.loss(dids, dlabels))
    step = minilora_step(model, dids, dlabels)
    out["step_s_cupy"] = median(step, cupy.cuda.Stream.null.synchronize, a.repeats)
    out["peak_mib_cupy_pool"] = cupy.get_default_memory_pool().total_bytes() / 2**20
    if "step_s_torch_cuda" in out:
        out["cupy_vs_torch_cuda_real_step"] = out["step_s_torch_cuda"] / out["step_s_cupy"]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
