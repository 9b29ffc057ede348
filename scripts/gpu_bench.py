"""CuPy vs NumPy (and PyTorch CUDA eager, if installed): one LoRA training step and greedy generation
on the same Llama config, same weights, float32. Prints times and ratios (> 1: CuPy is faster).

    python scripts/gpu_bench.py [--hidden 512 --layers 8 --seq 256 --batch 4]
"""
import argparse
import json
import time

import numpy as np

from minilora.adapters import LoraConfig, add_lora
from minilora.backend import asarray, get_xp
from minilora.config import LlamaConfig
from minilora.model import LlamaForCausalLM
from minilora.training.optim import AdamW


def median(fn, sync, repeats=5):
    fn()
    sync()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def time_backend(name, cfg, host, ids, new_tokens) -> dict:
    """Median seconds of one LoRA training step (forward, backward, AdamW) and generation tokens/s."""
    xp = get_xp(name)

    def sync():
        if name == "cupy":
            xp.cuda.Stream.null.synchronize()

    m = LlamaForCausalLM(cfg, {k: asarray(v, xp) for k, v in host.params.items()})
    add_lora(m, LoraConfig(r=8, target_modules=["q_proj", "k_proj", "v_proj"]))
    opt = AdamW(lr=1e-3)
    dids = asarray(ids, xp)

    def step():
        _, grads = m.loss_and_grads(dids, dids)
        opt.step(m.params, grads)

    out = {f"train_step_s_{name}": median(step, sync)}
    try:
        from minilora.inference.generate import generate
    except ImportError:
        return out
    prompt = dids[:1, :16]
    out[f"generate_tok_s_{name}"] = new_tokens / median(lambda: generate(m, prompt, new_tokens), sync, repeats=3)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=512, help="hidden size")
    p.add_argument("--layers", type=int, default=8, help="decoder layers")
    p.add_argument("--seq", type=int, default=256, help="sequence length")
    p.add_argument("--batch", type=int, default=4, help="batch size")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens to generate")
    a = p.parse_args()
    cfg = LlamaConfig(vocab_size=259, hidden_size=a.hidden, intermediate_size=int(a.hidden * 8 / 3) // 8 * 8,
                      num_hidden_layers=a.layers, num_attention_heads=8, num_key_value_heads=4,
                      max_position_embeddings=a.seq + a.new_tokens)
    host = LlamaForCausalLM.init(cfg, seed=0)
    ids = np.random.default_rng(0).integers(0, 259, (a.batch, a.seq))
    out = {}
    for name in ("numpy", "cupy"):
        out.update(time_backend(name, cfg, host, ids, a.new_tokens))
    try:
        import torch

        if torch.cuda.is_available():
            from minilora import bench_torch

            if hasattr(bench_torch, "torch_train_step_seconds"):
                out["train_step_s_torch_cuda"] = bench_torch.torch_train_step_seconds(host, ids, device="cuda")
    except ImportError:
        pass
    out["cupy_vs_numpy_train_step"] = out["train_step_s_numpy"] / out["train_step_s_cupy"]
    if "generate_tok_s_cupy" in out:
        out["cupy_vs_numpy_generate"] = out["generate_tok_s_cupy"] / out["generate_tok_s_numpy"]
    if "train_step_s_torch_cuda" in out:
        out["cupy_vs_torch_cuda_train_step"] = out["train_step_s_torch_cuda"] / out["train_step_s_cupy"]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
