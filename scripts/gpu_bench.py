"""CuPy vs NumPy vs PyTorch CUDA (when torch sees a GPU): one LoRA training step and greedy generation
on the same Llama weights, in float32 and float16. Prints one JSON object: seconds per step, tokens
per second, ratios (> 1: CuPy is faster), and the first loss of each side against NumPy float32's
(the same weights, B = 0, so every side must give the same number up to its dtype's rounding).

    python scripts/gpu_bench.py [--hidden 512 --layers 8 --seq 256 --batch 4 --vocab 4096 --new-tokens 64]

NumPy is timed in float32 only (NumPy has no float16 matrix product; it would time the emulation).
PyTorch generation has no KV cache here (minilora.bench.torch_ref recomputes the prefix), so its
tokens/s is a lower bound. MINILORA_CUPY_STANDIN=1 runs against the test suite's CuPy stand-in.
"""
import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

if os.environ.get("MINILORA_CUPY_STANDIN"):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
    import cupy_standin

    cupy_standin.install_for_process()

from minilora.adapters import LoraConfig, add_lora  # noqa: E402
from minilora.backend import asarray, get_xp  # noqa: E402
from minilora.config import LlamaConfig  # noqa: E402
from minilora.inference.generate import generate  # noqa: E402
from minilora.model import LlamaForCausalLM  # noqa: E402
from minilora.training.optim import AdamW  # noqa: E402

LORA = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])


def median_seconds(fn, sync, repeats):
    fn()
    sync()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def minilora_side(name, dtype, cfg, host, ids, new_tokens, repeats) -> dict:
    """Train-step seconds, generation tokens/s and the first loss of minilora on backend `name`."""
    xp = get_xp(name)
    sync = xp.cuda.Stream.null.synchronize if name == "cupy" else (lambda: None)
    m = LlamaForCausalLM(cfg, {k: asarray(v.astype(dtype), xp) for k, v in host.params.items()})
    add_lora(m, LORA, seed=0)
    dids = asarray(ids, xp)
    loss0 = float(m.loss(dids, dids))
    opt = AdamW(lr=1e-3)

    def step():
        _, grads = m.loss_and_grads(dids, dids)
        opt.step(m.params, grads)

    key = f"{name}_{dtype}"
    out = {f"train_step_s_{key}": median_seconds(step, sync, repeats), f"loss0_{key}": loss0}
    prompt = dids[:1, :16]
    out[f"generate_tok_s_{key}"] = new_tokens / median_seconds(lambda: generate(m, prompt, new_tokens), sync,
                                                                max(1, repeats // 2))
    return out


def torch_side(dtype, cfg, host, ids, new_tokens, repeats, device="cuda") -> dict:
    """The same on PyTorch CUDA (eager, SDPA attention), or {} without torch or a GPU."""
    try:
        import torch
    except ImportError:
        return {}
    if device == "cuda" and not torch.cuda.is_available():
        return {}
    from minilora.bench.torch_ref import TorchLlama

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    m = LlamaForCausalLM(cfg, dict(host.params))
    add_lora(m, LORA, seed=0)
    net = TorchLlama(m).to(device=device, dtype=getattr(torch, dtype))
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    t_ids = torch.as_tensor(ids, device=device)
    with torch.no_grad():
        loss0 = float(net.loss(t_ids, t_ids))

    def step():
        opt.zero_grad(set_to_none=True)
        net.loss(t_ids, t_ids).backward()
        opt.step()

    @torch.no_grad()
    def gen():
        x = t_ids[:1, :16]
        for _ in range(new_tokens):
            x = torch.cat([x, net(x)[:, -1].argmax(-1, keepdim=True)], dim=1)

    key = f"torch_{device}_{dtype}"
    return {f"train_step_s_{key}": median_seconds(step, sync, repeats), f"loss0_{key}": loss0,
            f"generate_tok_s_{key}": new_tokens / median_seconds(gen, sync, max(1, repeats // 2))}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=512, help="hidden size")
    p.add_argument("--layers", type=int, default=8, help="decoder layers")
    p.add_argument("--seq", type=int, default=256, help="sequence length")
    p.add_argument("--batch", type=int, default=4, help="batch size")
    p.add_argument("--vocab", type=int, default=4096, help="vocabulary size")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens to generate")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (the median is reported)")
    p.add_argument("--dtypes", default="float32,float16", help="comma-separated dtypes for CuPy and torch")
    a = p.parse_args()
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=int(a.hidden * 8 / 3) // 8 * 8,
                      num_hidden_layers=a.layers, num_attention_heads=8, num_key_value_heads=4,
                      max_position_embeddings=a.seq + a.new_tokens)
    host = LlamaForCausalLM.init(cfg, seed=0, initializer_range=0.02)
    ids = np.random.default_rng(0).integers(0, a.vocab, (a.batch, a.seq))
    out = {"config": dict(hidden=a.hidden, layers=a.layers, seq=a.seq, batch=a.batch, vocab=a.vocab,
                          new_tokens=a.new_tokens, lora=f"r={LORA.r} on {','.join(LORA.target_modules)}")}
    out.update(minilora_side("numpy", "float32", cfg, host, ids, a.new_tokens, a.repeats))
    ref = out["loss0_numpy_float32"]
    for dtype in a.dtypes.split(","):
        out.update(minilora_side("cupy", dtype, cfg, host, ids, a.new_tokens, a.repeats))
        out.update(torch_side(dtype, cfg, host, ids, a.new_tokens, a.repeats))
        for side in ("cupy", "torch_cuda"):
            key = f"{side}_{dtype}"
            if f"loss0_{key}" in out:
                out[f"loss0_rel_diff_vs_numpy_float32_{key}"] = abs(out[f"loss0_{key}"] - ref) / ref
        if f"train_step_s_torch_cuda_{dtype}" in out:
            out[f"cupy_vs_torch_cuda_train_step_{dtype}"] = (out[f"train_step_s_torch_cuda_{dtype}"]
                                                             / out[f"train_step_s_cupy_{dtype}"])
            out[f"cupy_vs_torch_cuda_generate_{dtype}"] = (out[f"generate_tok_s_cupy_{dtype}"]
                                                           / out[f"generate_tok_s_torch_cuda_{dtype}"])
    if "train_step_s_cupy_float32" in out:
        out["cupy_vs_numpy_train_step_float32"] = out["train_step_s_numpy_float32"] / out["train_step_s_cupy_float32"]
        out["cupy_vs_numpy_generate_float32"] = (out["generate_tok_s_cupy_float32"]
                                                 / out["generate_tok_s_numpy_float32"])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
