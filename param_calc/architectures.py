"""Architecture: a model's adaptable modules and base parameter shapes, built from a config dict.

One entry point, ``build_architecture(cfg)``, dispatches on ``model_type``:

    llama, mistral, qwen2   param_calc.shapes (the table minilora allocates from)
    gpt2                    param_calc.gpt2 (Conv1D layout, tied head)
    gpt3                    param_calc.gpt3 (as the LoRA paper counts it)

Module names are the full paths transformers gives them (``model.layers.0.self_attn.q_proj``),
because PEFT matches target names against those paths.
"""
from __future__ import annotations

from dataclasses import dataclass

from param_calc.errors import ParamCalcError
from param_calc.gpt2 import gpt2_linear_modules, gpt2_param_shapes
from param_calc.gpt3 import gpt3_linear_modules, gpt3_param_shapes
from param_calc.shapes import llama_head_dim, llama_linear_modules, llama_param_shapes

LLAMA_TYPES = ("llama", "mistral", "qwen2")
SUPPORTED_TYPES = LLAMA_TYPES + ("gpt2", "gpt3")
CONFIG_TYPES = LLAMA_TYPES + ("gpt2",)        # gpt3 exists only as the preset gpt3-175b

MAX_LAYERS = 10_000       # the largest released models have ~130 layers; the listing grows with this

# Fields that fix the shapes, per model_type; every one must be a positive integer.
REQUIRED = {
    "llama": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"),
    "gpt2": ("n_embd", "n_layer", "n_head", "n_positions", "vocab_size"),
}
OPTIONAL_INT = {"llama": ("num_key_value_heads", "head_dim"), "gpt2": ("n_inner",)}

# PEFT's targets when LoraConfig gets none (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING);
# for GPT-3, the LoRA paper's choice of W_q and W_v.
DEFAULT_TARGETS = {
    "llama": ("q_proj", "v_proj"), "mistral": ("q_proj", "v_proj"), "qwen2": ("q_proj", "v_proj"),
    "gpt2": ("c_attn",), "gpt3": ("q_proj", "v_proj"),
}


@dataclass(frozen=True)
class Module:
    """One module LoRA can adapt."""
    name: str      # full path, e.g. model.layers.0.self_attn.q_proj
    group: str     # the path without its layer prefix, e.g. self_attn.q_proj
    kind: str      # "linear", "conv1d" or "embedding"
    fan_in: int    # in_features (num_embeddings for an embedding)
    fan_out: int   # out_features (embedding_dim for an embedding)


@dataclass(frozen=True)
class Architecture:
    """A model as the calculator sees it: adaptable modules plus every base parameter's shape."""
    name: str             # preset name or a label for a config file
    model_type: str       # llama, mistral, qwen2, gpt2 or gpt3
    config: dict          # the shape-fixing config values
    modules: tuple        # Module, in model order (embeddings, layers, lm_head)
    param_shapes: dict    # {parameter name: shape}; a tied head appears once
    output_head: str      # the output layer, which all-linear leaves out
    hidden_size: int      # d_model, the n of |Theta| = 2 * L * n * r
    num_layers: int

    @property
    def base_params(self) -> int:
        """Every base parameter counted once (a tied head shares the embedding)."""
        total = 0
        for shape in self.param_shapes.values():
            n = 1
            for s in shape:
                n *= s
            total += n
        return total

    @property
    def default_targets(self) -> tuple:
        return DEFAULT_TARGETS[self.model_type]

    @property
    def tied(self) -> bool:
        return not any(n.startswith(self.output_head + ".") for n in self.param_shapes)


def _group(name: str) -> str:
    """'model.layers.3.mlp.up_proj' -> 'mlp.up_proj'; names without a layer index are kept."""
    parts = name.split(".")
    for i, p in enumerate(parts):
        if p.isdigit():
            return ".".join(parts[i + 1:])
    return name


def validate_config(cfg: dict, where: str = "config") -> dict:
    """Check the shape-fixing fields of a config dict; return it. ParamCalcError names the field."""
    if not isinstance(cfg, dict):
        raise ParamCalcError(f"{where}: expected a JSON object, got {type(cfg).__name__}")
    mt = cfg.get("model_type")
    if mt is None:
        raise ParamCalcError(f"{where}: missing field 'model_type' (supported: {', '.join(CONFIG_TYPES)})")
    if mt not in SUPPORTED_TYPES:
        raise ParamCalcError(f"{where}: field 'model_type' is {mt!r}, which is not supported "
                             f"(supported: {', '.join(CONFIG_TYPES)})")
    family = "llama" if mt in LLAMA_TYPES else "gpt2"
    for f in REQUIRED[family]:
        if f not in cfg or cfg[f] is None:
            raise ParamCalcError(f"{where}: missing field {f!r} (needed for model_type {mt})")
    for f in REQUIRED[family] + OPTIONAL_INT[family]:
        v = cfg.get(f)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise ParamCalcError(f"{where}: field {f!r} must be a positive integer, got {v!r}")
    if family == "llama":
        _check_heads(cfg, where)
    for f in ("tie_word_embeddings", "attention_bias", "mlp_bias"):
        if cfg.get(f) is not None and not isinstance(cfg[f], bool):
            raise ParamCalcError(f"{where}: field {f!r} must be true or false, got {cfg[f]!r}")
    layers_key = "num_hidden_layers" if family == "llama" else "n_layer"
    if cfg[layers_key] > MAX_LAYERS:              # the work (one row per module) is bounded first
        raise ParamCalcError(f"{where}: field {layers_key!r} is {cfg[layers_key]:,}: param-calc lists every "
                             f"module (about {cfg[layers_key] * 7:,} of them) and handles at most "
                             f"{MAX_LAYERS:,} layers")
    return cfg


def _check_heads(cfg: dict, where: str):
    """Grouped-query attention fits: KV heads divide heads; head_dim given or hidden / heads exact."""
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    if nh % nkv:
        raise ParamCalcError(f"{where}: field 'num_key_value_heads' ({nkv}) must divide "
                             f"num_attention_heads ({nh})")
    if not cfg.get("head_dim") and cfg["hidden_size"] % nh:
        raise ParamCalcError(f"{where}: field 'head_dim' is needed: hidden_size ({cfg['hidden_size']}) "
                             f"is not a multiple of num_attention_heads ({nh})")


def build_architecture(cfg: dict, name: str = "config") -> Architecture:
    """Architecture from a config dict with Hugging Face field names (see validate_config)."""
    cfg = dict(validate_config(cfg, name))
    mt = cfg["model_type"]
    family = "llama" if mt in LLAMA_TYPES else "gpt2"
    keep = ("model_type",) + REQUIRED[family] + OPTIONAL_INT[family] + (
        "tie_word_embeddings", "attention_bias", "mlp_bias")
    cfg = {k: cfg[k] for k in keep if k in cfg}
    if mt in LLAMA_TYPES:
        if cfg.get("tie_word_embeddings") is None:
            cfg["tie_word_embeddings"] = False
        h, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
        if not cfg.get("num_key_value_heads"):
            cfg["num_key_value_heads"] = cfg["num_attention_heads"]
        if not cfg.get("head_dim"):
            cfg["head_dim"] = llama_head_dim(cfg)
        linears, shapes = llama_linear_modules(cfg), llama_param_shapes(cfg)
        embeddings = {"model.embed_tokens": (cfg["vocab_size"], h)}
        kind = "linear"
    else:
        if cfg.get("tie_word_embeddings") is None:
            cfg["tie_word_embeddings"] = True
        h, layers = cfg["n_embd"], cfg["n_layer"]
        if mt == "gpt2":
            linears, shapes, kind = gpt2_linear_modules(cfg), gpt2_param_shapes(cfg), "conv1d"
        else:
            linears, shapes, kind = gpt3_linear_modules(cfg), gpt3_param_shapes(cfg), "linear"
        embeddings = {"transformer.wte": (cfg["vocab_size"], h), "transformer.wpe": (cfg["n_positions"], h)}
    modules = [Module(n, _group(n), "embedding", v, d) for n, (v, d) in embeddings.items()]
    for n, (fin, fout) in linears.items():
        modules.append(Module(n, _group(n), "linear" if n == "lm_head" else kind, fin, fout))
    return Architecture(name=name, model_type=mt, config=cfg, modules=tuple(modules), param_shapes=shapes,
                        output_head="lm_head", hidden_size=h, num_layers=layers)
