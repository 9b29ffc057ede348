"""PEFT's adapter files: adapter_config.json + adapter_model.safetensors.

Keys are PEFT's: ``base_model.model.<module>.lora_A.weight`` (r, in) and ``...lora_B.weight``
(out, r), with no adapter name inside the key, as PEFT writes them. Files written here load with
``PeftModel.from_pretrained``; files PEFT wrote load here.
"""
from __future__ import annotations

import os
import re

import numpy as np

from .adapters import LoraConfig, add_lora
from .atomic import atomic_dir, write_json
from .backend import asarray, to_numpy
from .errors import MiniLoraError
from .io import load_safetensors, read_json, save_safetensors

PREFIX = "base_model.model."


def adapter_config_dict(model, base_model_name_or_path: str = "") -> dict:
    cfg = model.lora_config
    rs = {m: lm.r for m, lm in model.lora.items()}
    al = {m: lm.alpha for m, lm in model.lora.items()}
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
        "rank_pattern": {m: r for m, r in rs.items() if r != cfg.r},
        "alpha_pattern": {m: a for m, a in al.items() if a != cfg.lora_alpha},
        "modules_to_save": None,
        "inference_mode": True,
    }


def save_adapter(model, folder, base_model_name_or_path: str = ""):
    """Write the model's adapter as a PEFT folder (atomically: the whole folder appears at once)."""
    if not model.lora:
        raise MiniLoraError("the model has no adapter to save")
    tensors = {PREFIX + n: to_numpy(model.params[n]) for n in sorted(model._lora_names())}
    with atomic_dir(folder) as tmp:
        write_json(os.path.join(tmp, "adapter_config.json"), adapter_config_dict(model, base_model_name_or_path))
        save_safetensors(os.path.join(tmp, "adapter_model.safetensors"), tensors)


def read_adapter_config(folder) -> LoraConfig:
    path = os.path.join(folder, "adapter_config.json")
    d = read_json(path)
    if d.get("peft_type", "LORA") != "LORA":
        raise MiniLoraError(f"{path}: peft_type {d.get('peft_type')!r} is not LORA")
    for k in ("r", "lora_alpha", "target_modules"):
        if k not in d:
            raise MiniLoraError(f"{path}: missing field {k}")
    if d.get("fan_in_fan_out"):
        raise MiniLoraError(f"{path}: fan_in_fan_out=true (Conv1D layouts) is not supported for Llama")
    init = d.get("init_lora_weights", True)
    return LoraConfig(r=d["r"], lora_alpha=d["lora_alpha"], target_modules=d["target_modules"],
                      lora_dropout=d.get("lora_dropout", 0.0) or 0.0, use_rslora=bool(d.get("use_rslora")),
                      init_lora_weights="gaussian" if init == "gaussian" else "kaiming",
                      rank_pattern=d.get("rank_pattern") or {}, alpha_pattern=d.get("alpha_pattern") or {},
                      bias=d.get("bias", "none") or "none")


def _strip(key: str) -> str:
    """PEFT key -> minilora name: drop the prefix and an adapter name like '.default'."""
    name = key[len(PREFIX):] if key.startswith(PREFIX) else key
    return re.sub(r"\.lora_([AB])\.[^.]+\.weight$", r".lora_\1.weight", name)


def load_adapter(model, folder, seed: int = 0):
    """Add the adapter stored in a PEFT folder to model; errors name any bad key and both shapes."""
    config = read_adapter_config(folder)
    tensors = load_safetensors(os.path.join(folder, "adapter_model.safetensors"))
    tensors = {_strip(k): v for k, v in tensors.items()}
    add_lora(model, config, seed=seed)
    expected = model._lora_names()
    try:
        missing = sorted(expected - set(tensors))
        if missing:
            raise MiniLoraError(f"{folder}: adapter is missing key {PREFIX + missing[0]}")
        unexpected = sorted(set(tensors) - expected)
        if unexpected:
            raise MiniLoraError(f"{folder}: unexpected key {PREFIX + unexpected[0]} "
                                f"(not a LoRA factor of this model's targets)")
        for name in expected:
            have, want = tuple(tensors[name].shape), tuple(model.params[name].shape)
            if have != want:
                raise MiniLoraError(f"{folder}: {PREFIX + name} has shape {have}, this model needs {want}")
            if not np.all(np.isfinite(tensors[name])):
                raise MiniLoraError(f"{folder}: {PREFIX + name} holds non-finite values")
    except MiniLoraError:
        from .adapters import remove_lora

        remove_lora(model)
        raise
    for name in expected:
        model.params[name] = asarray(tensors[name].astype(model.dtype), model.xp)
    return config
