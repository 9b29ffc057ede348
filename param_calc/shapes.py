"""The one home of the Llama-family parameter shapes (pure Python, no numpy).

The minilora model allocates its arrays from ``llama_param_shapes`` and the calculator counts
from the same table, so the two cannot drift apart (tests/test_param_calc_vs_model.py).
Names are Hugging Face state-dict names; linear weights are (out, in) as in torch.
"""
from __future__ import annotations


def _get(cfg, name, default=None):
    if isinstance(cfg, dict):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def llama_head_dim(cfg) -> int:
    """head_dim if the config gives it, else hidden_size // num_attention_heads."""
    hd = _get(cfg, "head_dim")
    return int(hd) if hd else _get(cfg, "hidden_size") // _get(cfg, "num_attention_heads")


def llama_layer_linears(cfg, attention_bias: bool = False, mlp_bias: bool = False) -> dict:
    """The linear modules of one decoder layer: {relative name: (in_features, out_features, bias)}.

    Also serves Mistral (no biases) and Qwen2 (cfg model_type "qwen2": q/k/v biased, o_proj not).
    """
    h, i = _get(cfg, "hidden_size"), _get(cfg, "intermediate_size")
    nh, nkv = _get(cfg, "num_attention_heads"), _get(cfg, "num_key_value_heads") or _get(cfg, "num_attention_heads")
    hd = llama_head_dim(cfg)
    ab = bool(_get(cfg, "attention_bias", attention_bias))
    mb = bool(_get(cfg, "mlp_bias", mlp_bias))
    # transformers' Qwen2Attention always has q/k/v biases and never an o_proj bias.
    qkv_b = True if _get(cfg, "model_type") == "qwen2" else ab
    return {
        "self_attn.q_proj": (h, nh * hd, qkv_b),
        "self_attn.k_proj": (h, nkv * hd, qkv_b),
        "self_attn.v_proj": (h, nkv * hd, qkv_b),
        "self_attn.o_proj": (nh * hd, h, ab),
        "mlp.gate_proj": (h, i, mb),
        "mlp.up_proj": (h, i, mb),
        "mlp.down_proj": (i, h, mb),
    }


def llama_linear_modules(cfg) -> dict:
    """Every linear module of the model, lm_head included: {full name: (in, out)}."""
    out = {}
    for layer in range(_get(cfg, "num_hidden_layers")):
        for rel, (fin, fout, _) in llama_layer_linears(cfg).items():
            out[f"model.layers.{layer}.{rel}"] = (fin, fout)
    out["lm_head"] = (_get(cfg, "hidden_size"), _get(cfg, "vocab_size"))
    return out


def llama_param_shapes(cfg) -> dict:
    """Every parameter of a LlamaForCausalLM: {state-dict name: shape}, in allocation order.

    With tie_word_embeddings the output head shares model.embed_tokens.weight and has no entry.
    """
    h, v = _get(cfg, "hidden_size"), _get(cfg, "vocab_size")
    shapes = {"model.embed_tokens.weight": (v, h)}
    for layer in range(_get(cfg, "num_hidden_layers")):
        p = f"model.layers.{layer}."
        shapes[p + "input_layernorm.weight"] = (h,)
        for rel, (fin, fout, bias) in llama_layer_linears(cfg).items():
            if rel == "mlp.gate_proj":
                shapes[p + "post_attention_layernorm.weight"] = (h,)
            shapes[p + rel + ".weight"] = (fout, fin)
            if bias:
                shapes[p + rel + ".bias"] = (fout,)
    shapes["model.norm.weight"] = (h,)
    if not _get(cfg, "tie_word_embeddings", False):
        shapes["lm_head.weight"] = (v, h)
    return shapes
