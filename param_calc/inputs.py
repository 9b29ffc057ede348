"""The three ways to name a model: a preset, a Hugging Face config.json, a FinLoRA run.

FinLoRA's finetune_configs.json maps run names to settings (base_model, lora_r, lora_alpha,
quant_bits, peft_use_dora, learning_rate, ...). Runs are read by minilora's one parser
(minilora.runs.finlora): lora_r 8 and lora_alpha 16 when a run leaves them out (as FinLoRA's
finetune.py does), target_modules q_proj, k_proj, v_proj unless the run sets them, quant_bits
8, 4 or 16 (no quantization). --targets overrides.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from param_calc.architectures import Architecture, build_architecture
from param_calc.errors import ParamCalcError
from param_calc.presets import preset_config, preset_hf_id, resolve_preset

MAX_CONFIG_BYTES = 1 << 20      # a config.json is a few KB


@dataclass
class Source:
    """A resolved model plus the LoRA settings its input carried (FinLoRA runs carry some)."""
    arch: Architecture
    hf_id: str | None = None
    rank: int | None = None
    alpha: float | None = None
    quant_bits: int | None = None
    targets: list | None = None
    dora: bool = False
    run: dict | None = field(default=None)


def from_preset(name: str) -> Source:
    """A preset by name, alias or Hugging Face id."""
    key = resolve_preset(name)
    return Source(build_architecture(preset_config(key), key), hf_id=preset_hf_id(key))


def _read_json(path: str, what: str):
    from minilora.errors import MiniLoraError
    from minilora.io.jsonfile import check_regular_file

    try:
        check_regular_file(path, MAX_CONFIG_BYTES, what)
    except MiniLoraError as e:
        raise ParamCalcError(str(e)) from None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ParamCalcError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ParamCalcError(f"{what} is a directory, not a file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ParamCalcError(f"cannot read {what} {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise ParamCalcError(f"{what} {path} is not valid JSON: line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise ParamCalcError(f"{what} {path} is not valid JSON: nested too deeply") from None


def from_config_json(path: str) -> Source:
    """A Hugging Face config.json (model_type llama, mistral, qwen2 or gpt2)."""
    cfg = _read_json(path, "config file")
    if not isinstance(cfg, dict):
        raise ParamCalcError(f"config file {path}: expected a JSON object, got {type(cfg).__name__}")
    if cfg.get("model_type") == "gpt3":
        raise ParamCalcError(f"{path}: model_type 'gpt3' exists only as the preset gpt3-175b")
    name = cfg.get("_name_or_path") if isinstance(cfg.get("_name_or_path"), str) and cfg["_name_or_path"] else path
    return Source(build_architecture(cfg, f"{path}"), hf_id=name if name != path else None)


def from_finlora(path: str, run: str | None) -> Source:
    """One run of a FinLoRA finetune_configs.json; run may be omitted when the file has one.

    The run is read by minilora's one FinLoRA parser (minilora.runs.finlora, training keys not
    required), so its target_modules apply here as they do in `minilora train`. Its base_model is
    a preset's Hugging Face id, or a name or folder minilora's registry knows (its config.json).
    """
    from minilora.errors import MiniLoraError
    from minilora.runs.finlora import get_run, run_names
    from minilora.runs.registry import resolve_base

    try:
        if run is None:
            names = run_names(path)
            if len(names) != 1:
                more = f", ... ({len(names)} runs)" if len(names) > 8 else ""
                raise ParamCalcError(f"{path} has several runs; choose one with --run: {', '.join(names[:8])}{more}")
            run = names[0]
        rc = get_run(path, run, training=False)
    except MiniLoraError as e:
        raise ParamCalcError(str(e)) from None
    where = f"{path} run {run!r}"
    arch, hf_id = _finlora_base(rc.base_model, where, resolve_base)
    info = {"name": run, "base_model": rc.base_model, "lora_r": rc.lora_r, "lora_alpha": rc.lora_alpha,
            "quant_bits": rc.quant_bits}
    if rc.peft_use_dora:
        info["peft_use_dora"] = True
    targets = rc.target_modules if isinstance(rc.target_modules, str) else list(rc.target_modules)
    return Source(arch, hf_id=hf_id, rank=rc.lora_r, alpha=rc.lora_alpha, quant_bits=rc.quant_bits,
                  targets=targets, dora=rc.peft_use_dora, run=info)


def _finlora_base(base_model: str, where: str, resolve_base):
    """(Architecture, hf_id) of a run's base_model: a preset, else a registered name or folder."""
    try:
        key = resolve_preset(base_model)
        return build_architecture(preset_config(key), key), preset_hf_id(key)
    except ParamCalcError:
        pass
    try:
        folder = resolve_base(base_model, fetch_missing=False)      # counting never downloads a model
    except Exception:  # noqa: BLE001 - any failure here means "not a known base"
        folder = None
    if folder and os.path.isfile(os.path.join(folder, "config.json")):
        return from_config_json(os.path.join(folder, "config.json")).arch, None
    raise ParamCalcError(f"{where}: field 'base_model': no preset for {base_model!r} "
                         "(see --list-models, or pass its config.json with --config)")
