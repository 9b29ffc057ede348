"""GPT-3 parameter shapes as the LoRA paper counts them (pure Python, no numpy).

GPT-3 175B (Brown et al. 2020, Table 2.1): d_model 12288, 96 layers, 96 heads of 128, d_ff = 4 *
d_model, context 2048, the GPT-2 byte-level BPE vocabulary (50257). Its weights were never
published, so there is no state dict to match; the layout follows GPT-2 (learned positions,
LayerNorm with bias, biased projections, output head tied to the token embedding).

The LoRA paper (Hu et al. 2021, Section 4.2) treats W_q, W_k, W_v and W_o each as one
d_model x d_model matrix, even though the output is split into heads. This file does the same:
attention is four separate square modules (``attn.q_proj``, ``attn.k_proj``, ``attn.v_proj``,
``attn.o_proj``), so |Theta| = 2 * L_LoRA * d_model * r is exact for attention targets here.
"""
from __future__ import annotations

from param_calc.gpt2 import gpt_linear_modules
from param_calc.shapes import _get

GPT3_175B = {
    "model_type": "gpt3", "n_embd": 12288, "n_layer": 96, "n_head": 96, "n_positions": 2048,
    "vocab_size": 50257, "n_inner": None, "tie_word_embeddings": True,
}


def gpt3_block_linears(cfg) -> dict:
    """The linear modules of one block: {relative name: (in_features, out_features, bias)}."""
    d = _get(cfg, "n_embd")
    ff = _get(cfg, "n_inner") or 4 * d
    return {
        "attn.q_proj": (d, d, True),
        "attn.k_proj": (d, d, True),
        "attn.v_proj": (d, d, True),
        "attn.o_proj": (d, d, True),
        "mlp.fc_in": (d, ff, True),
        "mlp.fc_out": (ff, d, True),
    }


def gpt3_linear_modules(cfg) -> dict:
    """Every linear module, lm_head included: {full name: (in, out)}."""
    return gpt_linear_modules(cfg, gpt3_block_linears)


def gpt3_param_shapes(cfg) -> dict:
    """Every parameter: {name: shape}, linear weights (out, in); the head is tied to wte."""
    d, v = _get(cfg, "n_embd"), _get(cfg, "vocab_size")
    shapes = {"transformer.wte.weight": (v, d), "transformer.wpe.weight": (_get(cfg, "n_positions"), d)}
    for layer in range(_get(cfg, "n_layer")):
        p = f"transformer.h.{layer}."
        shapes[p + "ln_1.weight"], shapes[p + "ln_1.bias"] = (d,), (d,)
        for rel, (fin, fout, bias) in gpt3_block_linears(cfg).items():
            if rel == "mlp.fc_in":
                shapes[p + "ln_2.weight"], shapes[p + "ln_2.bias"] = (d,), (d,)
            shapes[p + rel + ".weight"] = (fout, fin)
            if bias:
                shapes[p + rel + ".bias"] = (fout,)
    shapes["transformer.ln_f.weight"], shapes["transformer.ln_f.bias"] = (d,), (d,)
    if not _get(cfg, "tie_word_embeddings", True):
        shapes["lm_head.weight"] = (v, d)
    return shapes
