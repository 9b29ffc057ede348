"""The benchmark's configurations, models, batches, one training step, and its FLOP accounting.

Re-exported by minilora.bench; see docs/performance.md for how the FLOPs are counted.
"""
from __future__ import annotations

import numpy as np

from minilora.adapters import LoraConfig, add_lora
from minilora.config import LlamaConfig
from minilora.model import LlamaForCausalLM
from minilora.training.optim import AdamW

# SmolLM2-135M's shapes (the real case) and a tiny stand-in for the smoke run
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, head_dim=64, tie_word_embeddings=True,
                    rope_theta=100000.0, max_position_embeddings=2048)
TINY_REAL = dict(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                 max_position_embeddings=64)

PRESETS = {
    "full": {
        "small": (dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2), 8, 128),
        "medium": (dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                        num_attention_heads=8, num_key_value_heads=4), 4, 256),
        "matmul_n": 2048, "new_tokens": 128, "prompt_len": 64, "latency_batch": 2,
        "torch_attention": {"small": ("sdpa", "eager"), "medium": ("sdpa",)},
        "real": (SMOLLM2_135M, 4, 128),
        "warmup": 1, "repeats": {"small": 4, "medium": 3, "latency": 20, "generation": 3, "startup": 10,
                                 "real": 3},
    },
    "tiny": {
        "small": (dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2), 2, 16),
        "medium": (dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2), 2, 24),
        "matmul_n": 256, "new_tokens": 8, "prompt_len": 4, "latency_batch": 2,
        "torch_attention": {"small": ("sdpa", "eager"), "medium": ("sdpa",)},
        "real": (TINY_REAL, 2, 16),
        "warmup": 0, "repeats": {"small": 1, "medium": 1, "latency": 3, "generation": 1, "startup": 2,
                                 "real": 1},
    },
}
LORA = dict(r=8, lora_alpha=16, target_modules="all-linear")   # the shipped r8 all-linear run
VOCAB = 259


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
        for m in model.adapters.modules:
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
def step_flops(cfg: LlamaConfig, batch: int, seq: int, mode: str, r: int = LORA["r"], targets=None) -> dict:
    """Matrix-product FLOPs (2 per multiply-add) one training step needs; see docs/performance.md.

    Linear (in -> out) over N tokens: forward 2 N in out; backward dX 2 N in out, plus dW
    2 N in out only when W trains (full fine-tuning). LoRA adds forward 2 N r (in + out) and
    backward dB, dz, dA, dx: 4 N r (in + out). The head sees N' = B (T - 1) tokens. Attention
    counts the causal triangle only (T (T + 1) / 2 query-key pairs per head): QK^T and PV forward,
    dP, dV, dQ, dK backward, 2 hd FLOPs per pair each. Elementwise work (norms, softmax, SwiGLU,
    RoPE, AdamW) is not counted. targets: the LoRA modules' short names (default: every linear
    but the head).
    """
    n, n_head = batch * seq, batch * (seq - 1)
    fwd = bwd = 0
    for name, (fin, fout) in cfg.linear_modules().items():
        tokens = n_head if name == "lm_head" else n
        mm = 2 * tokens * fin * fout
        fwd += mm
        bwd += mm if mode == "lora" else 2 * mm                   # dX (+ dW)
        adapted = name != "lm_head" and (targets is None or name.split(".")[-1] in targets)
        if mode == "lora" and adapted:
            fwd += 2 * tokens * r * (fin + fout)
            bwd += 4 * tokens * r * (fin + fout)
    pairs = batch * cfg.num_attention_heads * seq * (seq + 1) // 2
    att = 2 * pairs * cfg.head_dim * cfg.num_hidden_layers        # one pair-product per layer
    fwd += 2 * att
    bwd += 4 * att
    return {"forward": fwd, "backward": bwd, "total": fwd + bwd, "attention": 6 * att}
