"""PEFT's adapter files: adapter_config.json + adapter_model.safetensors.

Keys are PEFT's: ``base_model.model.<module>.lora_A.weight`` (r, in) and ``...lora_B.weight``
(out, r), with no adapter name inside the key, as PEFT writes them (a ``.default`` or other
adapter name inside a key, as in an in-memory PEFT state dict, is accepted on load). Files written
here load with ``PeftModel.from_pretrained``; files PEFT wrote load here
(tests/test_interop_hf.py checks both ways). PEFT features minilora does not compute (DoRA,
modules_to_save, layers_to_transform, LoRA biases, PiSSA-style inits that change the base) are
refused with a message naming the field, not ignored.

read_adapter_factors is the one reader of these files: load_adapter (onto a model) and the
analysis tools (spectra, subspaces) both go through it. An adapter not named "default" is saved by
PEFT into a subfolder <name>/ of the save folder; the reader says so when pointed at the parent.
"""
from __future__ import annotations

import os
import re
from typing import NamedTuple

import numpy as np

from minilora.adapters import LoraConfig, adapter_names, get_adapter, install_adapter, pattern_value, plan_lora
from minilora.backend import array_module, asarray, to_numpy
from minilora.errors import MiniLoraError
from minilora.io.atomic import atomic_dir, recover_if_missing, write_json
from minilora.io.destination import check_output_location
from minilora.io.hf import load_safetensors, save_safetensors
from minilora.io.jsonfile import read_json
from minilora.layers.lora import lora_scaling

PREFIX = "base_model.model."
CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
_INITS = {True: "kaiming", "kaiming": "kaiming", "default": "kaiming", "gaussian": "gaussian", False: "gaussian"}
_UNSUPPORTED = {  # field: the value that is fine (anything else is refused)
    "use_dora": False, "modules_to_save": None, "layers_to_transform": None, "layers_pattern": None,
    "lora_bias": False, "exclude_modules": None, "target_parameters": None, "use_qalora": False,
    "trainable_token_indices": None, "alora_invocation_tokens": None, "layer_replication": None,
}


def adapter_config_dict(model, base_model_name_or_path: str = "", adapter_name: str | None = None) -> dict:
    """adapter_config.json for one adapter of the model (default: the active one)."""
    st = get_adapter(model, model.adapters.active if adapter_name is None else adapter_name)
    cfg = st.config
    targets = cfg.target_modules
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": cfg.r,
        "lora_alpha": cfg.lora_alpha,
        "target_modules": targets if isinstance(targets, str) else sorted(targets),
        "lora_dropout": cfg.lora_dropout,
        "bias": "none",
        "use_rslora": cfg.use_rslora,
        "init_lora_weights": True if cfg.init_lora_weights in (True, "kaiming") else cfg.init_lora_weights,
        "base_model_name_or_path": base_model_name_or_path,
        "fan_in_fan_out": False,
        "rank_pattern": {m: lm.r for m, lm in st.lora.items() if lm.r != cfg.r},
        "alpha_pattern": {m: lm.alpha for m, lm in st.lora.items() if lm.alpha != cfg.lora_alpha},
        "modules_to_save": None,
        "use_dora": False,
        "inference_mode": True,
    }


def save_adapter(model, folder, base_model_name_or_path: str = "", adapter_name: str | None = None,
                 overwrite: bool = False):
    """Write one adapter (default: the active one) as a PEFT folder, atomically (the folder appears whole).

    An existing `folder` is replaced only if it is an adapter folder (or empty), or with overwrite=True
    (minilora.io.destination); anything else raises MiniLoraError before anything is written.
    """
    check_output_location(folder, "adapter", overwrite=overwrite)
    if not adapter_names(model):
        raise MiniLoraError("the model has no adapter to save")
    st = get_adapter(model, model.adapters.active if adapter_name is None else adapter_name)
    tensors = {PREFIX + n: to_numpy(a) for n, a in sorted(st.factors.items())}
    bad = [k for k, a in tensors.items() if not np.all(np.isfinite(a))]
    if bad:
        raise MiniLoraError(f"adapter tensor {bad[0]} holds non-finite values; nothing written")
    config = adapter_config_dict(model, base_model_name_or_path, adapter_name)
    with atomic_dir(folder, "adapter", overwrite=overwrite) as tmp:
        write_json(os.path.join(tmp, CONFIG_FILE), config)
        save_safetensors(os.path.join(tmp, WEIGHTS_FILE), tensors)


def read_adapter_config(folder) -> LoraConfig:
    """LoraConfig from a PEFT adapter_config.json; unsupported PEFT features raise, naming the field."""
    path = os.path.join(folder, CONFIG_FILE)
    d = read_json(path)
    _check_config_fields(d, path)
    init = d.get("init_lora_weights", True)
    targets = d["target_modules"]
    try:
        return LoraConfig(r=d["r"], lora_alpha=d["lora_alpha"], target_modules=targets,
                          lora_dropout=d.get("lora_dropout", 0.0) or 0.0, use_rslora=d.get("use_rslora") or False,
                          init_lora_weights=_INITS[init], rank_pattern=d.get("rank_pattern") or {},
                          alpha_pattern=d.get("alpha_pattern") or {}, bias=d.get("bias", "none") or "none")
    except MiniLoraError as e:
        raise MiniLoraError(f"{path}: {e}") from None


def _check_config_fields(d: dict, path: str):
    """One clear error for a field of adapter_config.json that is missing, mistyped or unsupported."""
    if d.get("peft_type", "LORA") != "LORA":
        raise MiniLoraError(f"{path}: peft_type {d.get('peft_type')!r} is not LORA")
    for k in ("r", "lora_alpha", "target_modules"):
        if k not in d:
            raise MiniLoraError(f"{path}: missing field {k}")
    for k, kind, what in (("use_rslora", bool, "true or false"), ("fan_in_fan_out", bool, "true or false"),
                          ("inference_mode", bool, "true or false"),
                          ("rank_pattern", dict, "an object {module: value}"),
                          ("alpha_pattern", dict, "an object {module: value}")):
        if d.get(k) is not None and not isinstance(d[k], kind):
            raise MiniLoraError(f"{path}: {k} must be {what}, got {d[k]!r}")
    if d.get("fan_in_fan_out"):
        raise MiniLoraError(f"{path}: fan_in_fan_out=true (Conv1D layouts) is not supported for Llama")
    for k, fine in _UNSUPPORTED.items():
        if d.get(k, fine) not in (fine, [], {}):
            raise MiniLoraError(f"{path}: {k}={d[k]!r} is not supported by minilora")
    init = d.get("init_lora_weights", True)
    if isinstance(init, (list, dict)) or init not in _INITS:
        raise MiniLoraError(f"{path}: init_lora_weights={init!r} is not supported (it changes the base weights "
                            "or needs data); minilora loads plain LoRA adapters")
    targets = d["target_modules"]
    if isinstance(targets, (list, tuple)) and not targets:
        raise MiniLoraError(f"{path}: target_modules is empty")


def load_adapter(model, folder, seed: int = 0, adapter_name: str = "default") -> LoraConfig:
    """Add the adapter stored in a PEFT folder to `model` under adapter_name; returns its LoraConfig.

    It becomes the active adapter if none is active (else it is stored; see adapters.set_adapter).
    read_adapter_factors(folder, model) reads and checks everything first: a missing, unexpected or
    misshapen key raises MiniLoraError naming the key (and both shapes), and the model is left as
    it was. `seed` is unused (the factors come from the file); kept for the old signature.
    """
    del seed
    if adapter_name in adapter_names(model):
        raise MiniLoraError(f"the model already has an adapter named {adapter_name!r}; "
                            "pass another adapter_name or delete it first")
    af = read_adapter_factors(folder, model)
    lora, _, _ = plan_lora(model, af.config, warn=False)
    factors = {}
    for m, (a, b, _) in af.modules.items():
        factors[m + ".lora_A.weight"] = asarray(a.astype(model.dtype), model.xp)
        factors[m + ".lora_B.weight"] = asarray(b.astype(model.dtype), model.xp)
    install_adapter(model, adapter_name, af.config, lora, factors)
    return af.config


# ---- the one reader of adapter files -------------------------------------------------------
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
    recover_if_missing(folder)                     # a save killed between its renames: finish it
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


def read_adapter_factors(folder, model=None) -> AdapterFactors:
    """The factors and scales of every adapted module of a PEFT folder (host arrays as stored).

    The one reader of PEFT adapter files: the analysis tools call it alone; load_adapter passes the
    model, and then the keys must be exactly the factors of the modules the config's targets match
    in that model, with the model's shapes.

    Raises MiniLoraError naming the problem for: a missing folder or file, an invalid config or
    safetensors file, an unsupported PEFT feature (DoRA, ...), factors of several adapters in one
    file, an A without its B (or the reverse), shapes that do not fit A (r, in) B (out, r) (or the
    model), non-float or non-finite values.
    """
    folder = os.fspath(folder)
    raw = read_json(_config_path(folder))
    config = read_adapter_config(folder)
    path = _weights_path(folder)
    factors, ignored = _group_factors(folder, path, load_safetensors(path))
    shapes = None if model is None else _model_shapes(model, config, folder, path, factors, ignored)
    modules = {}
    for module in sorted(factors, key=natural_key):
        a, b = _check_pair(folder, path, module, factors[module], shapes[module] if shapes else None)
        r = int(a.shape[0])
        alpha = pattern_value(module, config.alpha_pattern, config.lora_alpha)
        modules[module] = (a, b, lora_scaling(r, alpha, config.use_rslora))
    return AdapterFactors(folder, config, raw.get("base_model_name_or_path"), modules, ignored)


def _group_factors(folder, path, tensors: dict):
    """({module: {"A": (key, array), "B": ...}}, [keys that are not LoRA factors]) of one adapter."""
    factors, names, ignored = {}, set(), []
    for key in sorted(tensors):
        name = key[len(PREFIX):] if key.startswith(PREFIX) else key
        m = _FACTOR.fullmatch(name)
        if m is None:
            ignored.append(key)
            continue
        if m["name"]:
            names.add(m["name"])
        if m["ab"] in factors.get(m["module"], {}):
            raise MiniLoraError(f"{path}: key {key} repeats {factors[m['module']][m['ab']][0]}")
        factors.setdefault(m["module"], {})[m["ab"]] = (key, tensors[key])
    if len(names) > 1:
        raise MiniLoraError(f"{folder}: the file holds the factors of several adapters "
                            f"({', '.join(sorted(names))}); read one at a time")
    if not factors:
        raise MiniLoraError(f"{folder}: no LoRA factors (keys ending in lora_A.weight / lora_B.weight)")
    return factors, ignored


def _check_pair(folder, path, module: str, ab: dict, want):
    """(A, B) of one module once both exist, fit each other (and the model's shapes `want`), are
    floats and finite."""
    if set(ab) != {"A", "B"}:
        have = next(iter(ab.values()))[0]
        raise MiniLoraError(f"{path}: missing key {PREFIX}{module}.lora_{'B' if 'A' in ab else 'A'}.weight "
                            f"({have} has no partner)")
    (ka, a), (kb, b) = ab["A"], ab["B"]
    for k, t, w in ((ka, a, want and want[0]), (kb, b, want and want[1])):
        if w is not None and tuple(t.shape) != w:
            raise MiniLoraError(f"{path}: {k} has shape {tuple(t.shape)}, this model and adapter_config need {w}")
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
        raise MiniLoraError(f"{folder}: {module}: lora_A {tuple(a.shape)} and lora_B "
                            f"{tuple(b.shape)} do not fit A (r, in), B (out, r)")
    xp = array_module(a, b)
    for k, t in ((ka, a), (kb, b)):
        if t.dtype.kind != "f":
            raise MiniLoraError(f"{path}: {k} has dtype {t.dtype}; expected floats")
        if not bool(xp.all(xp.isfinite(t))):
            raise MiniLoraError(f"{path}: {k} holds non-finite values")
    return a, b


def _model_shapes(model, config, folder, path, factors: dict, ignored: list) -> dict:
    """{module: ((r, in), (out, r))} the model needs; unexpected and missing keys raise here."""
    try:
        lora, dims, _ = plan_lora(model, config, warn=False)
    except MiniLoraError as e:
        raise MiniLoraError(f"{folder}: {e}") from None
    unexpected = ignored + [k for m in factors if m not in lora for k, _ in factors[m].values()]
    if unexpected:
        raise MiniLoraError(f"{path}: unexpected key {sorted(unexpected)[0]} (not a LoRA factor of the modules "
                            f"target_modules={config.target_modules!r} matches in this model)")
    missing = [f"{PREFIX}{m}.lora_{ab}.weight" for m in lora for ab in "AB" if ab not in factors.get(m, {})]
    if missing:
        raise MiniLoraError(f"{path}: missing key {missing[0]}"
                            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return {m: ((lm.r, dims[m][0]), (dims[m][1], lm.r)) for m, lm in lora.items()}
