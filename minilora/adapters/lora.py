"""LoRA on the whole model, by PEFT's rules: add adapters, merge/unmerge, count parameters.

Target matching follows PEFT: a list of names matches every module whose name equals an entry
or ends with "." + entry (so "q_proj" adapts every layer's self_attn.q_proj); a string is a
regular expression that must match the whole module name; "all-linear" is every linear module
except the output head.

Named adapters (several on one model, switch, disable, delete) live in minilora.adapters.named (all
of them are exported by minilora.adapters); add_lora(..., adapter_name=...) adds one. ``add_weighted_adapter``
(minilora.adapters.weighted) combines adapters into a new one. Use one AdamW per adapter: its
moments are keyed by parameter names, which adapters share.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

from minilora.adapters.named import adapter_names, install_adapter
from minilora.backend import get_xp
from minilora.errors import MiniLoraError, MiniLoraStateError
from minilora.layers.lora import init_lora_weights, lora_merge, lora_scaling, lora_unmerge
from minilora.model import LoraModule

MAX_LORA_ALPHA = 1e6      # alpha/r beyond this scales B @ A past any sane weight (1e300 -> inf in float32)


@dataclass
class LoraConfig:
    r: int = 8                                  # rank of every adapted matrix (PEFT's r)
    lora_alpha: float = 16.0                    # scale s = lora_alpha / r
    target_modules: object = ("q_proj", "k_proj", "v_proj")  # names, a regex string, or "all-linear"
    lora_dropout: float = 0.0                   # dropout on the LoRA path's input
    use_rslora: bool = False                    # s = lora_alpha / sqrt(r)
    init_lora_weights: object = "gaussian"      # "gaussian" (the seed paper) or True/"kaiming" (PEFT)
    rank_pattern: dict = field(default_factory=dict)   # {name suffix or regex: r} overrides
    alpha_pattern: dict = field(default_factory=dict)  # {name suffix or regex: alpha} overrides
    bias: str = "none"                          # only "none" is supported

    def __post_init__(self):
        if isinstance(self.target_modules, (list, tuple, set)):
            self.target_modules = list(self.target_modules)
        check_lora_hparams(self.r, self.lora_alpha, self.lora_dropout)
        if not isinstance(self.use_rslora, bool):
            raise MiniLoraError(f"use_rslora must be true or false, got {self.use_rslora!r}")
        _check_targets_and_patterns(self)
        if self.bias != "none":
            raise MiniLoraError(f"bias={self.bias!r} is not supported; use bias='none'")


def check_lora_hparams(r, alpha, dropout):
    """One clear error for a rank, alpha or dropout out of range."""
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise MiniLoraError(f"LoRA rank r must be a positive integer, got {r!r}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha < float("inf"):
        raise MiniLoraError(f"lora_alpha must be a positive finite number, got {alpha!r}")
    if alpha > MAX_LORA_ALPHA:
        raise MiniLoraError(f"lora_alpha {alpha!r} is out of range (at most {MAX_LORA_ALPHA:g}): the LoRA "
                            "update would overflow the layer's outputs")
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise MiniLoraError(f"lora_dropout must be in [0, 1), got {dropout!r}")


def _check_targets_and_patterns(cfg):
    """One clear error for target_modules, rank/alpha patterns or an init PEFT names but minilora lacks."""
    t = cfg.target_modules
    if isinstance(t, str):
        if t != "all-linear":
            _check_regex(t, "target_modules")
    elif not isinstance(t, list) or not t or not all(isinstance(x, str) and x for x in t):
        raise MiniLoraError("target_modules must be a regular expression, 'all-linear' or a non-empty "
                            f"list of module names, got {t!r}")
    for name in ("rank_pattern", "alpha_pattern"):
        pattern = getattr(cfg, name)
        if not isinstance(pattern, dict):
            raise MiniLoraError(f"{name} must be an object {{module name or regex: value}}, got {pattern!r}")
        for key in pattern:
            if not isinstance(key, str) or not key:
                raise MiniLoraError(f"{name} keys must be module names or regexes, got {key!r}")
            _check_regex(key, name)
    if isinstance(cfg.init_lora_weights, bool) and not cfg.init_lora_weights \
            or cfg.init_lora_weights not in ("gaussian", "kaiming", "default", True):
        raise MiniLoraError(f"init_lora_weights={cfg.init_lora_weights!r} is not supported; "
                            "use 'gaussian' or 'kaiming' (PEFT's True)")


def _check_regex(text: str, what: str):
    try:
        re.compile(text)
    except re.error as e:
        raise MiniLoraError(f"{what}: {text!r} is not a valid regular expression ({e})") from None


def _suffix_match(name: str, key: str) -> bool:
    return name == key or name.endswith("." + key)


def match_targets(module_names, target_modules, head: str = "lm_head") -> dict:
    """{target: [matched module names]} following PEFT's rules (see the module docstring)."""
    names = list(module_names)
    if target_modules == "all-linear":
        return {"all-linear": [n for n in names if n != head]}
    if isinstance(target_modules, str):
        return {target_modules: [n for n in names if re.fullmatch(target_modules, n)]}
    return {t: [n for n in names if _suffix_match(n, t)] for t in target_modules}


def pattern_value(name: str, pattern: dict, default):
    for key, value in pattern.items():
        if _suffix_match(name, key) or re.fullmatch(key, name):
            return value
    return default


def plan_lora(model, config: LoraConfig, warn: bool = True):
    """({module: LoraModule}, {module: (in, out)}, {target: n matched}) for config on model; no change.

    A target that matches nothing raises and lists the available names. A rank above
    min(in, out) raises; a rank with no savings warns (when warn).
    """
    modules = model.config.linear_modules()                       # {name: (in, out)}
    matched = match_targets(modules, config.target_modules)
    empty = [t for t, ms in matched.items() if not ms]
    if empty:
        kinds = sorted({n.split(".")[-1] for n in modules})
        raise MiniLoraError(f"target module(s) {', '.join(map(str, empty))} matched nothing; "
                            f"available names: {', '.join(kinds)} (or 'all-linear')")
    chosen = sorted({m for ms in matched.values() for m in ms}, key=list(modules).index)
    lora, dims = {}, {}
    for m in chosen:
        fin, fout = modules[m]
        r = pattern_value(m, config.rank_pattern, config.r)
        alpha = pattern_value(m, config.alpha_pattern, config.lora_alpha)
        check_lora_hparams(r, alpha, config.lora_dropout)
        if r > min(fin, fout):
            raise MiniLoraError(f"rank {r} exceeds min(in, out) = {min(fin, fout)} for {m} ({fin} -> {fout})")
        if warn and r * (fin + fout) >= fin * fout:
            warnings.warn(f"LoRA on {m} saves nothing: r*(in+out) = {r * (fin + fout):,} >= "
                          f"in*out = {fin * fout:,}", stacklevel=3)
        lora[m] = LoraModule(r, float(alpha), lora_scaling(r, alpha, config.use_rslora), config.lora_dropout)
        dims[m] = (fin, fout)
    return lora, dims, {t: len(ms) for t, ms in matched.items()}


def add_lora(model, config: LoraConfig, seed: int = 0, adapter_name: str = "default"):
    """Adapt the matching linears of `model` in place; only LoRA factors become trainable.

    Returns {target: number of modules it matched}. A target that matches nothing raises and
    lists the available names. A rank above min(in, out) raises; a rank with no savings warns.
    With an adapter already active, the new one is stored under adapter_name and stays inactive
    until set_adapter(model, adapter_name); adding a name twice raises.
    """
    if model.adapters.merged:
        raise MiniLoraStateError("cannot add adapters while adapters are merged; unmerge first")
    if adapter_name in adapter_names(model):
        raise MiniLoraError(f"the model already has an adapter named {adapter_name!r}; remove it first "
                            f"(remove_lora / delete_adapter) or choose another adapter_name")
    lora, dims, counts = plan_lora(model, config)
    xp, dtype = model.xp, model.dtype
    rng = get_xp("numpy").random.default_rng(seed)   # host draws, placed on xp: same A on every backend
    factors = {}
    for m, lm in lora.items():
        fin, fout = dims[m]
        a, b = init_lora_weights(fin, fout, lm.r, rng, xp, config.init_lora_weights, dtype)
        factors[m + ".lora_A.weight"], factors[m + ".lora_B.weight"] = a, b
    install_adapter(model, adapter_name, config, lora, factors)
    return counts


def remove_lora(model):
    """Drop every adapter (the active one's factors and the stored ones); refused while merged."""
    if model.adapters.merged:
        raise MiniLoraStateError("cannot remove an adapter while it is merged; unmerge first")
    for m in model.adapters.modules:
        model.params.pop(m + ".lora_A.weight", None)
        model.params.pop(m + ".lora_B.weight", None)
    model.adapters.modules, model.trainable = {}, set()
    model.adapters.config, model.adapters.active, model.adapters.inactive = None, None, {}
    model.adapters.enabled = True


def _check_finite(xp, arrays: dict, what: str):
    bad = [n for n, a in arrays.items() if not bool(xp.all(xp.isfinite(a)))]
    if bad:
        raise MiniLoraError(f"{what} produced non-finite values in {bad[0]}; weights left unchanged")


def merge_lora(model):
    """Fold s*B@A into every adapted weight (W0 + s B A, at least float32, cast once).

    All merged weights are computed first and checked finite; only then are they written, so a
    failed merge leaves the model unchanged. Merging twice raises.
    """
    if model.adapters.merged:
        raise MiniLoraStateError("adapters are already merged; merging again would add the update twice")
    if not model.adapters.modules:
        raise MiniLoraStateError("the model has no adapter to merge")
    if not model.adapters.enabled:
        raise MiniLoraStateError("adapters are disabled; enable them before merging (enable_adapters)")
    report = _fold(model, lora_merge, "merge")
    model.adapters.merged = True
    return report


def unmerge_lora(model):
    """Subtract s*B@A again (the inverse of merge_lora). Unmerging an unmerged model warns, no-op."""
    if not model.adapters.merged:
        warnings.warn("adapters are not merged; unmerge did nothing", stacklevel=2)
        return {}
    report = _fold(model, lora_unmerge, "unmerge")
    model.adapters.merged = False
    return report


def _fold(model, fn, what: str) -> dict:
    """fn(W, A, B, s) for every adapted weight; all checked finite before any is written."""
    new = {}
    for m, lm in model.adapters.modules.items():
        new[m + ".weight"] = fn(model.weight(m + ".weight"), model.params[m + ".lora_A.weight"],
                                model.params[m + ".lora_B.weight"], lm.scale)
    _check_finite(model.xp, new, what)
    return _store_weights(model, new)


def _store_weights(model, new: dict) -> dict:
    """Write merged weights back; a quantized base is requantized. Returns {name: max abs error}.

    A quantized weight is requantized in its own format and settings (absmax, NF4 or GGUF blocks,
    minilora.quant.requantize), so the merged model stays as small as before and a GGUF block
    weight stays in the blocks llama.cpp reads; the report gives the rounding error that costs.
    """
    from minilora.quant import dequantize, requantize

    report = {}
    for name, w in new.items():
        if name in model.quantized:
            qt = requantize(model.quantized[name], w)
            report[name] = float(model.xp.max(model.xp.abs(dequantize(qt, dtype=w.dtype) - w)))
            model.quantized[name] = qt
        else:
            model.params[name] = w
            report[name] = 0.0
    return report


def trainable_summary(model) -> dict:
    """PEFT's print_trainable_parameters numbers: trainable, all (base + LoRA), percent."""
    trainable = model.num_params(model.trainable)
    total = model.num_params()
    return {"trainable": trainable, "all": total, "percent": 100.0 * trainable / total}


def format_trainable(model) -> str:
    s = trainable_summary(model)
    return (f"trainable params: {s['trainable']:,} || all params: {s['all']:,} || "
            f"trainable%: {s['percent']:.4f}")


def lora_param_count(model) -> int:
    """Sum of r * (in + out) over the adapted modules."""
    modules = model.config.linear_modules()
    return sum(lm.r * (modules[m][0] + modules[m][1]) for m, lm in model.adapters.modules.items())


