"""PEFT's adapter files: adapter_config.json + adapter_model.safetensors.

Keys are PEFT's: ``base_model.model.<module>.lora_A.weight`` (r, in) and ``...lora_B.weight``
(out, r), with no adapter name inside the key, as PEFT writes them (a ``.default`` or other
adapter name inside a key, as in an in-memory PEFT state dict, is accepted on load). Files written
here load with ``PeftModel.from_pretrained``; files PEFT wrote load here
(tests/test_interop_hf.py checks both ways). PEFT features minilora does not compute (DoRA,
modules_to_save, layers_to_transform, LoRA biases, PiSSA-style inits that change the base) are
refused with a message naming the field, not ignored.
"""
from __future__ import annotations

import os
import re

import numpy as np

from minilora.adapters import LoraConfig, adapter_names, get_adapter, install_adapter, plan_lora
from minilora.backend import asarray, to_numpy
from minilora.errors import MiniLoraError
from minilora.io import load_safetensors, read_json, save_safetensors
from minilora.io.atomic import atomic_dir, write_json

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
    st = get_adapter(model, model.active_adapter if adapter_name is None else adapter_name)
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


def save_adapter(model, folder, base_model_name_or_path: str = "", adapter_name: str | None = None):
    """Write one adapter (default: the active one) as a PEFT folder, atomically (the folder appears whole)."""
    if not adapter_names(model):
        raise MiniLoraError("the model has no adapter to save")
    st = get_adapter(model, model.active_adapter if adapter_name is None else adapter_name)
    tensors = {PREFIX + n: to_numpy(a) for n, a in sorted(st.factors.items())}
    bad = [k for k, a in tensors.items() if not np.all(np.isfinite(a))]
    if bad:
        raise MiniLoraError(f"adapter tensor {bad[0]} holds non-finite values; nothing written")
    config = adapter_config_dict(model, base_model_name_or_path, adapter_name)
    with atomic_dir(folder) as tmp:
        write_json(os.path.join(tmp, CONFIG_FILE), config)
        save_safetensors(os.path.join(tmp, WEIGHTS_FILE), tensors)


def read_adapter_config(folder) -> LoraConfig:
    """LoraConfig from a PEFT adapter_config.json; unsupported PEFT features raise, naming the field."""
    path = os.path.join(folder, CONFIG_FILE)
    d = read_json(path)
    if d.get("peft_type", "LORA") != "LORA":
        raise MiniLoraError(f"{path}: peft_type {d.get('peft_type')!r} is not LORA")
    for k in ("r", "lora_alpha", "target_modules"):
        if k not in d:
            raise MiniLoraError(f"{path}: missing field {k}")
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
    try:
        return LoraConfig(r=d["r"], lora_alpha=d["lora_alpha"], target_modules=targets,
                          lora_dropout=d.get("lora_dropout", 0.0) or 0.0, use_rslora=bool(d.get("use_rslora")),
                          init_lora_weights=_INITS[init], rank_pattern=d.get("rank_pattern") or {},
                          alpha_pattern=d.get("alpha_pattern") or {}, bias=d.get("bias", "none") or "none")
    except MiniLoraError as e:
        raise MiniLoraError(f"{path}: {e}") from None


def _strip(key: str) -> str:
    """PEFT key -> minilora name: drop the prefix and an adapter name like '.default'."""
    name = key[len(PREFIX):] if key.startswith(PREFIX) else key
    return re.sub(r"\.lora_([AB])\.[^.]+\.weight$", r".lora_\1.weight", name)


def load_adapter(model, folder, seed: int = 0, adapter_name: str = "default") -> LoraConfig:
    """Add the adapter stored in a PEFT folder to `model` under adapter_name; returns its LoraConfig.

    It becomes the active adapter if none is active (else it is stored; see adapters.set_adapter).
    Every check runs before anything changes: a missing, unexpected or misshapen key raises
    MiniLoraError naming the key (and both shapes), and the model is left as it was.
    `seed` is unused (the factors come from the file); kept for the old signature.
    """
    del seed
    if adapter_name in adapter_names(model):
        raise MiniLoraError(f"the model already has an adapter named {adapter_name!r}; "
                            "pass another adapter_name or delete it first")
    config = read_adapter_config(folder)
    path = os.path.join(folder, WEIGHTS_FILE)
    if not os.path.isfile(path) and os.path.isfile(os.path.join(folder, "adapter_model.bin")):
        raise MiniLoraError(f"{folder}: only adapter_model.bin (a PyTorch pickle); minilora reads "
                            f"{WEIGHTS_FILE} (save with PEFT's safe_serialization=True)")
    raw = load_safetensors(path)
    tensors = {}
    for key, arr in raw.items():
        name = _strip(key)
        if name in tensors:
            raise MiniLoraError(f"{path}: key {key} repeats {PREFIX + name}")
        tensors[name] = arr
    try:
        lora, dims, _ = plan_lora(model, config, warn=False)
    except MiniLoraError as e:
        raise MiniLoraError(f"{folder}: {e}") from None
    expected = {}
    for m, lm in lora.items():
        fin, fout = dims[m]
        expected[m + ".lora_A.weight"] = (lm.r, fin)                  # A (r, in)
        expected[m + ".lora_B.weight"] = (fout, lm.r)                 # B (out, r)
    missing = [n for n in expected if n not in tensors]
    if missing:
        raise MiniLoraError(f"{path}: missing key {PREFIX + missing[0]}"
                            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise MiniLoraError(f"{path}: unexpected key {PREFIX + unexpected[0]} (not a LoRA factor of the "
                            f"modules target_modules={config.target_modules!r} matches in this model)")
    for name, want in expected.items():
        have = tuple(tensors[name].shape)
        if have != want:
            raise MiniLoraError(f"{path}: {PREFIX + name} has shape {have}, this model and adapter_config "
                                f"need {want}")
        if tensors[name].dtype.kind != "f" or not np.all(np.isfinite(tensors[name])):
            raise MiniLoraError(f"{path}: {PREFIX + name} holds non-finite or non-float values")
    factors = {n: asarray(tensors[n].astype(model.dtype), model.xp) for n in expected}
    install_adapter(model, adapter_name, config, lora, factors)
    return config
