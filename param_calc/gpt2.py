"""GPT-2 parameter shapes in Hugging Face's layout (pure Python, no numpy).

GPT-2 uses transformers' ``Conv1D`` instead of ``nn.Linear``: the weight is stored (in, out), the
transpose of a linear's, and y = x W + b. PEFT adapts a Conv1D like a linear (A is (r, in), B is
(out, r)), so LoRA counts are the same r * (in + out). One block has

    attn.c_attn   d -> 3d   q, k and v fused into one matrix
    attn.c_proj   d -> d    attention output projection
    mlp.c_fc      d -> 4d   (n_inner when the config sets it)
    mlp.c_proj    4d -> d   MLP output projection; the name ``c_proj`` matches both projections

Token and position embeddings are learned; the output head is tied to ``transformer.wte``.
Reference: Radford et al. 2019; transformers ``GPT2LMHeadModel``.
"""
from __future__ import annotations

from param_calc.shapes import _get


def gpt2_inner(cfg) -> int:
    """MLP width: n_inner if the config gives it, else 4 * n_embd."""
    return _get(cfg, "n_inner") or 4 * _get(cfg, "n_embd")


def gpt2_block_linears(cfg) -> dict:
    """The Conv1D modules of one block: {relative name: (in_features, out_features, bias)}."""
    d, inner = _get(cfg, "n_embd"), gpt2_inner(cfg)
    return {
        "attn.c_attn": (d, 3 * d, True),
        "attn.c_proj": (d, d, True),
        "mlp.c_fc": (d, inner, True),
        "mlp.c_proj": (inner, d, True),
    }


def gpt_linear_modules(cfg, block_linears) -> dict:
    """Every module of a GPT-style stack (transformer.h.<i>.<rel>), lm_head included: {name: (in, out)}."""
    out = {}
    for layer in range(_get(cfg, "n_layer")):
        for rel, (fin, fout, _) in block_linears(cfg).items():
            out[f"transformer.h.{layer}.{rel}"] = (fin, fout)
    out["lm_head"] = (_get(cfg, "n_embd"), _get(cfg, "vocab_size"))
    return out


def gpt2_linear_modules(cfg) -> dict:
    """Every Conv1D / linear module, lm_head included: {full name: (in, out)}."""
    return gpt_linear_modules(cfg, gpt2_block_linears)


def gpt2_param_shapes(cfg) -> dict:
    """Every parameter of a GPT2LMHeadModel: {state-dict name: shape}; Conv1D weights are (in, out).

    The output head is tied to transformer.wte unless the config sets tie_word_embeddings false.
    """
    d, v = _get(cfg, "n_embd"), _get(cfg, "vocab_size")
    shapes = {"transformer.wte.weight": (v, d), "transformer.wpe.weight": (_get(cfg, "n_positions"), d)}
    for layer in range(_get(cfg, "n_layer")):
        p = f"transformer.h.{layer}."
        shapes[p + "ln_1.weight"], shapes[p + "ln_1.bias"] = (d,), (d,)
        for rel, (fin, fout, bias) in gpt2_block_linears(cfg).items():
            if rel == "mlp.c_fc":
                shapes[p + "ln_2.weight"], shapes[p + "ln_2.bias"] = (d,), (d,)
            shapes[p + rel + ".weight"] = (fin, fout)
            if bias:
                shapes[p + rel + ".bias"] = (fout,)
    shapes["transformer.ln_f.weight"], shapes["transformer.ln_f.bias"] = (d,), (d,)
    if not _get(cfg, "tie_word_embeddings", True):
        shapes["lm_head.weight"] = (v, d)
    return shapes
