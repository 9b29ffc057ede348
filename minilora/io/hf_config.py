"""config.json <-> LlamaConfig: what minilora reads from a Hugging Face Llama folder and writes back.

Reads both spellings of the RoPE settings:
    old (transformers < 5, the hub's Llama 3.1/3.2 files): top-level "rope_theta" and "rope_scaling"
    new (transformers 5): "rope_parameters": {"rope_type": ..., "rope_theta": ..., <scaling keys>}
and writes the old one (transformers 5 still reads it, so both generations load the folder).
Anything minilora's Llama does not compute (another model_type, biases, an activation other than
SiLU, a RoPE type other than default/llama3) is refused with one clear message, not ignored.
"""
from __future__ import annotations

import numpy as np

from minilora.config import LlamaConfig
from minilora.errors import MiniLoraError
from minilora.layers.rope import rope_inv_freq

SUPPORTED_MODEL_TYPES = ("llama",)
_REQUIRED_INTS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
_DTYPE_KEYS = ("torch_dtype", "dtype")      # transformers 4 writes torch_dtype, transformers 5 dtype


def _rope_from_hf(d: dict, where: str):
    """(rope_theta, rope_scaling or None) from either spelling (see the module docstring)."""
    rp = d.pop("rope_parameters", None)
    if rp is not None:
        if not isinstance(rp, dict):
            raise MiniLoraError(f"{where}: rope_parameters must be an object, got {type(rp).__name__}")
        if "rope_theta" not in rp and "rope_theta" not in d:
            raise MiniLoraError(f"{where}: rope_parameters has no rope_theta")
        theta = rp.get("rope_theta", d.get("rope_theta"))
        scaling = {k: v for k, v in rp.items() if k != "rope_theta"}
        d.pop("rope_scaling", None)              # rope_parameters is the newer, authoritative form
    else:
        theta = d.get("rope_theta", 10000.0)
        scaling = d.get("rope_scaling")
    d.pop("rope_theta", None)
    if scaling is not None and not isinstance(scaling, dict):
        raise MiniLoraError(f"{where}: rope_scaling must be an object or null, got {type(scaling).__name__}")
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        for k in ("partial_rotary_factor", "attention_factor"):
            if scaling.get(k, 1.0) != 1.0:
                raise MiniLoraError(f"{where}: RoPE {k}={scaling[k]} is not supported (minilora rotates all dims)")
        scaling = None if kind == "default" else {**scaling, "rope_type": kind}
    return theta, scaling or None


def config_from_hf(d: dict, where: str = "config.json") -> LlamaConfig:
    """LlamaConfig from a config.json dict (either RoPE spelling); MiniLoraError names what is unsupported."""
    mt = d.get("model_type")
    if mt not in SUPPORTED_MODEL_TYPES:
        raise MiniLoraError(f"{where}: unsupported model_type {mt!r}; minilora reads "
                            f"{', '.join(SUPPORTED_MODEL_TYPES)} (LlamaForCausalLM) folders only")
    missing = [k for k in _REQUIRED_INTS if k not in d]
    if missing:
        raise MiniLoraError(f"{where}: missing field(s) {', '.join(missing)}")
    for k in _REQUIRED_INTS + ("num_key_value_heads",):
        v = d.get(k)
        if (v is not None or k in _REQUIRED_INTS) and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise MiniLoraError(f"{where}: {k} must be a positive integer, got {v!r}")
    for k in ("attention_bias", "mlp_bias"):
        if d.get(k):
            raise MiniLoraError(f"{where}: {k}=true is not supported by minilora's Llama")
    act = d.get("hidden_act", "silu")
    if act != "silu":
        raise MiniLoraError(f"{where}: hidden_act {act!r} is not supported (minilora's MLP is SwiGLU with silu)")
    d = {k: v for k, v in d.items() if k not in _DTYPE_KEYS + ("architectures", "model_type")}  # rewritten on save
    d["rope_theta"], d["rope_scaling"] = _rope_from_hf(d, where)
    _check_optional_fields(d, where)
    if d.get("num_key_value_heads") is None:
        d["num_key_value_heads"] = d["num_attention_heads"]
    try:
        config = LlamaConfig.from_dict(d)
        rope_inv_freq(config.head_dim, config.rope_theta, np, config.rope_scaling)  # refuse bad RoPE now
    except MiniLoraError as e:
        raise MiniLoraError(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:
        raise MiniLoraError(f"{where}: {e}") from None
    return config


def _check_optional_fields(d: dict, where: str):
    """The optional fields the model computes with: positive integers, positive finite numbers, a bool."""
    for k in ("head_dim", "max_position_embeddings"):
        v = d.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise MiniLoraError(f"{where}: {k} must be a positive integer, got {v!r}")
    for k in ("rms_norm_eps", "rope_theta"):
        v = d.get(k)
        if k in d and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf")):
            raise MiniLoraError(f"{where}: {k} must be a positive finite number, got {v!r}")
    if d.get("tie_word_embeddings") is not None and not isinstance(d["tie_word_embeddings"], bool):
        raise MiniLoraError(f"{where}: tie_word_embeddings must be true or false, got {d['tie_word_embeddings']!r}")


def config_dtype(d: dict):
    """The weight dtype a config.json names ('torch_dtype' or 'dtype'), or None."""
    for k in _DTYPE_KEYS:
        if isinstance(d.get(k), str):
            return d[k]
    return None


def config_to_hf(config: LlamaConfig, dtype) -> dict:
    """config.json for a LlamaForCausalLM folder: architectures, model_type, torch_dtype, old RoPE keys."""
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    d = config.to_dict()
    for k in _DTYPE_KEYS + ("rope_parameters",):
        d.pop(k, None)
    d.update(architectures=["LlamaForCausalLM"], model_type="llama", torch_dtype=name, hidden_act="silu")
    if d.get("rope_scaling") is None:
        d.pop("rope_scaling", None)
    return {k: v for k, v in d.items() if v is not None or k.endswith("token_id")}
