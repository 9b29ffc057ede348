"""transformers as an oracle: the helpers the optional oracle tests (tests/test_interop_hf.py) and
scripts/make_reference.py share. Imported only where torch and transformers are installed.

float64: stock transformers computes the RMSNorm, the RoPE tables and the loss in float32 even for a
float64 model. float64_transformers() replaces LlamaRMSNorm.forward and LlamaRotaryEmbedding.forward
by the same formulas without the float32 casts, and load_hf(folder, "float64") sets inv_freq to a
float64 one computed here from the rope rule (checked equal to transformers' own to float32
precision); attention runs through SDPA (no float32 softmax).
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import transformers
from transformers.models.llama import modeling_llama

TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64}


def inv_freq64(config) -> torch.Tensor:
    """The default / llama3 inv_freq rule in float64, written from Meta's description."""
    rp = config.rope_parameters
    d = config.head_dim
    inv = 1.0 / rp["rope_theta"] ** (np.arange(0, d, 2, dtype=np.float64) / d)
    if rp["rope_type"] == "llama3":
        old, lo, hi, f = (rp[k] for k in ("original_max_position_embeddings", "low_freq_factor",
                                          "high_freq_factor", "factor"))
        wavelen = 2 * math.pi / inv
        smooth = (old / wavelen - lo) / (hi - lo)
        mid = (1 - smooth) * inv / f + smooth * inv
        inv = np.where(wavelen < old / hi, inv, np.where(wavelen > old / lo, inv / f, mid))
    return torch.from_numpy(inv)


@contextlib.contextmanager
def float64_transformers():
    """LlamaRMSNorm and LlamaRotaryEmbedding computing in the input's dtype (no float32 casts)."""
    def rmsnorm(self, h):
        var = h.pow(2).mean(-1, keepdim=True)
        return self.weight * (h * torch.rsqrt(var + self.variance_epsilon))

    def rotary(self, x, position_ids):
        freqs = position_ids[..., None].to(torch.float64) * self.inv_freq.to(torch.float64)
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)

    saved = modeling_llama.LlamaRMSNorm.forward, modeling_llama.LlamaRotaryEmbedding.forward
    modeling_llama.LlamaRMSNorm.forward, modeling_llama.LlamaRotaryEmbedding.forward = rmsnorm, rotary
    try:
        yield
    finally:
        modeling_llama.LlamaRMSNorm.forward, modeling_llama.LlamaRotaryEmbedding.forward = saved


def load_hf(folder: str, dtype: str):
    model = transformers.LlamaForCausalLM.from_pretrained(folder, dtype=TORCH_DTYPE[dtype],
                                                          attn_implementation="sdpa")
    if dtype == "float64":
        rot = model.model.rotary_emb
        exact = inv_freq64(model.config)
        assert torch.allclose(rot.inv_freq.to(torch.float64), exact, rtol=1e-6, atol=0), "inv_freq rule differs"
        rot.inv_freq = exact
    return model.eval()
