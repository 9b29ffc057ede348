"""LoRA on the whole model, by PEFT's rules: add adapters, merge/unmerge, count parameters.

Target matching follows PEFT: a list of names matches every module whose name equals an entry
or ends with "." + entry (so "q_proj" adapts every layer's self_attn.q_proj); a string is a
regular expression that must match the whole module name; "all-linear" is every linear module
except the output head.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

from .errors import MiniLoraError
from .layers.lora import init_lora_weights, lora_merge, lora_scaling, lora_unmerge
from .model import LoraModule


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
        if self.bias != "none":
            raise MiniLoraError(f"bias={self.bias!r} is not supported; use bias='none'")


def check_lora_hparams(r, alpha, dropout):
    """One clear error for a rank, alpha or dropout out of range."""
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise MiniLoraError(f"LoRA rank r must be a positive integer, got {r!r}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha > 0:
        raise MiniLoraError(f"lora_alpha must be a positive number, got {alpha!r}")
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise MiniLoraError(f"lora_dropout must be in [0, 1), got {dropout!r}")


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


def _pattern_value(name: str, pattern: dict, default):
    for key, value in pattern.items():
        if _suffix_match(name, key) or re.fullmatch(key, name):
            return value
    return default


def add_lora(model, config: LoraConfig, seed: int = 0):
    """Adapt the matching linears of `model` in place; only LoRA factors become trainable.

    Returns {target: number of modules it matched}. A target that matches nothing raises and
    lists the available names. A rank above min(in, out) raises; a rank with no savings warns.
    """
    if model.merged:
        raise MiniLoraError("cannot add adapters while adapters are merged; unmerge first")
    if model.lora:
        raise MiniLoraError("the model already has an adapter; remove it first (remove_lora)")
    modules = model.config.linear_modules()                       # {name: (in, out)}
    matched = match_targets(modules, config.target_modules)
    empty = [t for t, ms in matched.items() if not ms]
    if empty:
        kinds = sorted({n.split(".")[-1] for n in modules})
        raise MiniLoraError(f"target module(s) {', '.join(map(str, empty))} matched nothing; "
                            f"available names: {', '.join(kinds)} (or 'all-linear')")
    chosen = sorted({m for ms in matched.values() for m in ms}, key=list(modules).index)
    xp, dtype = model.xp, model.dtype
    rng = xp.random.default_rng(seed)
    new_params, new_lora = {}, {}
    for m in chosen:
        fin, fout = modules[m]
        r = _pattern_value(m, config.rank_pattern, config.r)
        alpha = _pattern_value(m, config.alpha_pattern, config.lora_alpha)
        check_lora_hparams(r, alpha, config.lora_dropout)
        if r > min(fin, fout):
            raise MiniLoraError(f"rank {r} exceeds min(in, out) = {min(fin, fout)} for {m} ({fin} -> {fout})")
        if r * (fin + fout) >= fin * fout:
            warnings.warn(f"LoRA on {m} saves nothing: r*(in+out) = {r * (fin + fout):,} >= "
                          f"in*out = {fin * fout:,}", stacklevel=2)
        a, b = init_lora_weights(fin, fout, r, rng, xp, config.init_lora_weights, dtype)
        new_params[m + ".lora_A.weight"], new_params[m + ".lora_B.weight"] = a, b
        new_lora[m] = LoraModule(r, float(alpha), lora_scaling(r, alpha, config.use_rslora), config.lora_dropout)
    model.params.update(new_params)
    model.lora = new_lora
    model.lora_config = config
    model.trainable = set(new_params)
    return {t: len(ms) for t, ms in matched.items()}


def remove_lora(model):
    """Drop the adapter (its factors and state); refused while merged."""
    if model.merged:
        raise MiniLoraError("cannot remove an adapter while it is merged; unmerge first")
    for m in model.lora:
        model.params.pop(m + ".lora_A.weight", None)
        model.params.pop(m + ".lora_B.weight", None)
    model.lora, model.trainable = {}, set()


def _check_finite(xp, arrays: dict, what: str):
    bad = [n for n, a in arrays.items() if not bool(xp.all(xp.isfinite(a)))]
    if bad:
        raise MiniLoraError(f"{what} produced non-finite values in {bad[0]}; weights left unchanged")


def merge_lora(model):
    """Fold s*B@A into every adapted weight (W0 + s B A, at least float32, cast once).

    All merged weights are computed first and checked finite; only then are they written, so a
    failed merge leaves the model unchanged. Merging twice raises.
    """
    if model.merged:
        raise MiniLoraError("adapters are already merged; merging again would add the update twice")
    if not model.lora:
        raise MiniLoraError("the model has no adapter to merge")
    new = {}
    for m, lm in model.lora.items():
        w = model.weight(m + ".weight")
        new[m + ".weight"] = lora_merge(w, model.params[m + ".lora_A.weight"],
                                        model.params[m + ".lora_B.weight"], lm.scale)
    _check_finite(model.xp, new, "merge")
    report = _store_weights(model, new)
    model.merged = True
    return report


def unmerge_lora(model):
    """Subtract s*B@A again (the inverse of merge_lora). Unmerging an unmerged model warns, no-op."""
    if not model.merged:
        warnings.warn("adapters are not merged; unmerge did nothing", stacklevel=2)
        return {}
    new = {}
    for m, lm in model.lora.items():
        w = model.weight(m + ".weight")
        new[m + ".weight"] = lora_unmerge(w, model.params[m + ".lora_A.weight"],
                                          model.params[m + ".lora_B.weight"], lm.scale)
    _check_finite(model.xp, new, "unmerge")
    report = _store_weights(model, new)
    model.merged = False
    return report


def _store_weights(model, new: dict) -> dict:
    """Write merged weights back; a quantized base is requantized. Returns {name: max abs error}."""
    report = {}
    for name, w in new.items():
        if name in model.quantized:
            from .quant import dequantize, quantize

            old = model.quantized[name]
            qt = quantize(w, old.bits, old.group_size)
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
    return sum(lm.r * (modules[m][0] + modules[m][1]) for m, lm in model.lora.items())


