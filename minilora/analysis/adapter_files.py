"""Read the LoRA factors of a PEFT adapter folder for analysis: {module: (A, B, scale)}.

A PEFT folder holds adapter_config.json and adapter_model.safetensors with keys
    base_model.model.<module>.lora_A.weight   (r, in)
    base_model.model.<module>.lora_B.weight   (out, r)
PEFT strips the adapter name from the keys when it saves; an adapter not named "default" goes
into a subfolder <name>/ of the save folder. Keys that still carry a name
(`...lora_A.default.weight`, as a raw state_dict holds them) are read too. The scale of each
module is lora_alpha / r (alpha / sqrt(r) with rsLoRA), r being the rank of its tensors and alpha
the config's (or its alpha_pattern entry).
"""
from __future__ import annotations

import os
import re
from typing import NamedTuple

from minilora.adapters import pattern_value
from minilora.backend import array_module
from minilora.errors import MiniLoraError
from minilora.io import load_safetensors, read_json
from minilora.io.peft import PREFIX, read_adapter_config
from minilora.layers.lora import lora_scaling

_FACTOR = re.compile(r"(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.(?P<name>[^.]+))?\.weight")


class AdapterFactors(NamedTuple):
    path: str
    config: object          # minilora.adapters.LoraConfig
    base_model: str | None  # base_model_name_or_path from adapter_config.json
    modules: dict           # {module name: (A (r, in), B (out, r), scale)}, in model order
    ignored: list           # keys that are not LoRA factors of a linear (modules_to_save, ...)


def natural_key(name: str):
    """Sort key that puts layers.2 before layers.10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _config_path(folder: str) -> str:
    if not os.path.isdir(folder):
        raise MiniLoraError(f"{folder}: no such adapter folder")
    path = os.path.join(folder, "adapter_config.json")
    if os.path.isfile(path):
        return path
    subs = sorted(d for d in os.listdir(folder)
                  if os.path.isfile(os.path.join(folder, d, "adapter_config.json")))
    if subs:
        raise MiniLoraError(f"{folder}: no adapter_config.json here; PEFT saved named adapters in "
                            f"subfolders: {', '.join(subs)} (pass one of them)")
    raise MiniLoraError(f"{folder}: no adapter_config.json (not a PEFT adapter folder)")


def _weights_path(folder: str) -> str:
    path = os.path.join(folder, "adapter_model.safetensors")
    if os.path.isfile(path):
        return path
    if os.path.isfile(os.path.join(folder, "adapter_model.bin")):
        raise MiniLoraError(f"{folder}: only adapter_model.bin (a PyTorch pickle) found; minilora "
                            f"reads safetensors (save with safe_serialization=True)")
    raise MiniLoraError(f"{folder}: no adapter_model.safetensors")


def read_adapter_factors(folder) -> AdapterFactors:
    """The factors and scales of every adapted module of a PEFT folder (host arrays as stored).

    Raises MiniLoraError naming the problem for: a missing folder or file, an invalid config or
    safetensors file, a DoRA adapter (its update is not s B A), factors of several adapters in one
    file, an A without its B (or the reverse), shapes that do not fit A (r, in) B (out, r), and
    non-float or non-finite values.
    """
    folder = os.fspath(folder)
    raw = read_json(_config_path(folder))
    config = read_adapter_config(folder)
    if raw.get("use_dora"):
        raise MiniLoraError(f"{folder}: a DoRA adapter (use_dora=true); its update is not s B A, "
                            f"so these tools do not apply")
    tensors = load_safetensors(_weights_path(folder))
    factors, names, ignored = {}, set(), []
    for key in sorted(tensors):
        name = key[len(PREFIX):] if key.startswith(PREFIX) else key
        m = _FACTOR.fullmatch(name)
        if m is None:
            ignored.append(key)
            continue
        if m["name"]:
            names.add(m["name"])
        factors.setdefault(m["module"], {})[m["ab"]] = (key, tensors[key])
    if len(names) > 1:
        raise MiniLoraError(f"{folder}: the file holds the factors of several adapters "
                            f"({', '.join(sorted(names))}); analyze one at a time")
    if not factors:
        raise MiniLoraError(f"{folder}: no LoRA factors (keys ending in lora_A.weight / lora_B.weight)")
    modules = {}
    for module in sorted(factors, key=natural_key):
        ab = factors[module]
        if set(ab) != {"A", "B"}:
            have = next(iter(ab.values()))[0]
            raise MiniLoraError(f"{folder}: {have} has no matching lora_{'B' if 'A' in ab else 'A'}")
        (ka, a), (kb, b) = ab["A"], ab["B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise MiniLoraError(f"{folder}: {module}: lora_A {tuple(a.shape)} and lora_B "
                                f"{tuple(b.shape)} do not fit A (r, in), B (out, r)")
        xp = array_module(a, b)
        for k, t in ((ka, a), (kb, b)):
            if t.dtype.kind != "f":
                raise MiniLoraError(f"{folder}: {k} has dtype {t.dtype}; expected floats")
            if not bool(xp.all(xp.isfinite(t))):
                raise MiniLoraError(f"{folder}: {k} holds non-finite values")
        r = int(a.shape[0])
        alpha = pattern_value(module, config.alpha_pattern, config.lora_alpha)
        modules[module] = (a, b, lora_scaling(r, alpha, config.use_rslora))
    return AdapterFactors(folder, config, raw.get("base_model_name_or_path"), modules, ignored)
