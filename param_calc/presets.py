"""Preset architectures: published config.json values, by name and by Hugging Face model id.

Each preset is the subset of the model's published config.json that fixes its parameter shapes,
with Hugging Face field names. Instruct and base variants share shapes, so both ids map to one
preset. GPT-3 has no config.json; its values come from the GPT-3 paper (see param_calc.gpt3).
"""
from __future__ import annotations

from param_calc.errors import ParamCalcError
from param_calc.gpt3 import GPT3_175B


def _llama(h, inter, layers, heads, kv, vocab, tied, head_dim=None, model_type="llama"):
    cfg = {"model_type": model_type, "hidden_size": h, "intermediate_size": inter,
           "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv,
           "vocab_size": vocab, "tie_word_embeddings": tied}
    if head_dim:
        cfg["head_dim"] = head_dim
    return cfg


def _gpt2(d, layers, heads):
    return {"model_type": "gpt2", "n_embd": d, "n_layer": layers, "n_head": heads, "n_positions": 1024,
            "vocab_size": 50257, "n_inner": None, "tie_word_embeddings": True}


# name: (Hugging Face id, config)
PRESETS = {
    "llama-3.1-8b": ("meta-llama/Llama-3.1-8B", _llama(4096, 14336, 32, 32, 8, 128256, False)),
    "llama-3.1-70b": ("meta-llama/Llama-3.1-70B", _llama(8192, 28672, 80, 64, 8, 128256, False)),
    "llama-3.1-405b": ("meta-llama/Llama-3.1-405B", _llama(16384, 53248, 126, 128, 8, 128256, False)),
    "llama-3.2-1b": ("meta-llama/Llama-3.2-1B", _llama(2048, 8192, 16, 32, 8, 128256, True, head_dim=64)),
    "llama-3.2-3b": ("meta-llama/Llama-3.2-3B", _llama(3072, 8192, 28, 24, 8, 128256, True, head_dim=128)),
    "mistral-7b": ("mistralai/Mistral-7B-v0.1",
                   _llama(4096, 14336, 32, 32, 8, 32000, False, model_type="mistral")),
    "mistral-7b-v0.3": ("mistralai/Mistral-7B-v0.3",
                        _llama(4096, 14336, 32, 32, 8, 32768, False, model_type="mistral")),
    "qwen2.5-7b": ("Qwen/Qwen2.5-7B", _llama(3584, 18944, 28, 28, 4, 152064, False, model_type="qwen2")),
    "smollm2-135m": ("HuggingFaceTB/SmolLM2-135M-Instruct", _llama(576, 1536, 30, 9, 3, 49152, True)),
    "gpt2": ("openai-community/gpt2", _gpt2(768, 12, 12)),
    "gpt2-medium": ("openai-community/gpt2-medium", _gpt2(1024, 24, 16)),
    "gpt2-large": ("openai-community/gpt2-large", _gpt2(1280, 36, 20)),
    "gpt2-xl": ("openai-community/gpt2-xl", _gpt2(1600, 48, 25)),
    "gpt3-175b": ("(GPT-3 paper; no public weights)", dict(GPT3_175B)),
}

ALIASES = {
    "gpt2-small": "gpt2", "gpt-2": "gpt2", "gpt3": "gpt3-175b", "gpt-3": "gpt3-175b",
    "gpt-3-175b": "gpt3-175b", "mistral-7b-v0.1": "mistral-7b", "mistral-7b-v0.2": "mistral-7b",
    "llama-3-8b": "llama-3.1-8b", "llama-3-70b": "llama-3.1-70b",
}

# Words in hub ids that do not change the shapes.
_DROP = ("-instruct", "-chat", "-hf", "-base")


def normalise_name(name: str) -> str:
    """'meta-llama/Meta-Llama-3.1-8B-Instruct' -> 'llama-3.1-8b'."""
    n = name.strip().lower().rsplit("/", 1)[-1].replace("_", "-")
    if n.startswith("meta-llama-"):
        n = n[len("meta-"):]
    for word in _DROP:
        n = n.replace(word, "")
    return n


def preset_names() -> list:
    """The preset names, in table order."""
    return list(PRESETS)


def resolve_preset(name: str) -> str:
    """A preset name, alias or Hugging Face id -> the preset name; ParamCalcError if unknown."""
    n = normalise_name(name)
    n = ALIASES.get(n, n)
    if n in PRESETS:
        return n
    raise ParamCalcError(f"unknown model {name!r}; known: {', '.join(PRESETS)} (see --list-models)")


def preset_config(name: str) -> dict:
    """The config dict of a preset (a copy)."""
    return dict(PRESETS[resolve_preset(name)][1])


def preset_hf_id(name: str) -> str:
    """The Hugging Face id a preset's values come from."""
    return PRESETS[resolve_preset(name)][0]
