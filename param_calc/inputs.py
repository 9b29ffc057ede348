"""The three ways to name a model: a preset, a Hugging Face config.json, a FinLoRA run.

FinLoRA's finetune_configs.json maps run names to settings (base_model, lora_r, lora_alpha,
quant_bits, peft_use_dora, learning_rate, ...). FinLoRA's finetune.py fills in lora_r 8,
lora_alpha 16 when a run leaves them out, always targets q_proj, v_proj, k_proj, and accepts
only quant_bits 8 or 4; this loader also accepts 16 (no quantization). --targets overrides.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from param_calc.architectures import Architecture, build_architecture
from param_calc.errors import ParamCalcError
from param_calc.presets import preset_config, preset_hf_id, resolve_preset

FINLORA_DEFAULTS = {"lora_r": 8, "lora_alpha": 16}
FINLORA_TARGETS = ("q_proj", "v_proj", "k_proj")     # finetune.py's template; runs cannot change it


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


def from_config_json(path: str) -> Source:
    """A Hugging Face config.json (model_type llama, mistral, qwen2 or gpt2)."""
    cfg = _read_json(path, "config file")
    if isinstance(cfg, dict) and cfg.get("model_type") == "gpt3":
        raise ParamCalcError(f"{path}: model_type 'gpt3' exists only as the preset gpt3-175b")
    name = cfg.get("_name_or_path") if isinstance(cfg, dict) and cfg.get("_name_or_path") else path
    return Source(build_architecture(cfg, f"{path}"), hf_id=name if name != path else None)


def from_finlora(path: str, run: str | None) -> Source:
    """One run of a FinLoRA finetune_configs.json; run may be omitted when the file has one."""
    runs = _read_json(path, "FinLoRA config")
    if not isinstance(runs, dict) or not runs or not all(isinstance(v, dict) for v in runs.values()):
        raise ParamCalcError(f"{path}: expected a JSON object of runs, each an object with base_model, lora_r, ...")
    if run is None:
        if len(runs) != 1:
            names = list(runs)
            more = f", ... ({len(names)} runs)" if len(names) > 8 else ""
            raise ParamCalcError(f"{path} has several runs; choose one with --run: {', '.join(names[:8])}{more}")
        run = next(iter(runs))
    if run not in runs:
        raise ParamCalcError(f"run {run!r} not found in {path}; runs: {', '.join(list(runs)[:8])}"
                             + (" ..." if len(runs) > 8 else ""))
    rc = runs[run]
    where = f"{path} run {run!r}"
    if "base_model" not in rc:
        raise ParamCalcError(f"{where}: missing field 'base_model'")
    if not isinstance(rc["base_model"], str):
        raise ParamCalcError(f"{where}: field 'base_model' must be a model id string")
    try:
        key = resolve_preset(rc["base_model"])
    except ParamCalcError:
        raise ParamCalcError(f"{where}: field 'base_model': no preset for {rc['base_model']!r} "
                             "(see --list-models, or pass its config.json with --config)") from None
    rank = rc.get("lora_r", FINLORA_DEFAULTS["lora_r"])
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ParamCalcError(f"{where}: field 'lora_r' must be a positive integer, got {rank!r}")
    alpha = rc.get("lora_alpha", FINLORA_DEFAULTS["lora_alpha"])
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ParamCalcError(f"{where}: field 'lora_alpha' must be a positive number, got {alpha!r}")
    if "quant_bits" not in rc:
        raise ParamCalcError(f"{where}: missing field 'quant_bits' (8 or 4)")
    bits = rc["quant_bits"]
    if bits not in (16, 8, 4) or isinstance(bits, bool):
        raise ParamCalcError(f"{where}: field 'quant_bits' must be 8 or 4 (or 16), got {bits!r}")
    targets = list(FINLORA_TARGETS)
    dora = rc.get("peft_use_dora", False)
    if not isinstance(dora, bool):
        raise ParamCalcError(f"{where}: field 'peft_use_dora' must be true or false, got {dora!r}")
    info = {"name": run, "base_model": rc["base_model"], "lora_r": rank, "lora_alpha": alpha, "quant_bits": bits}
    if dora:
        info["peft_use_dora"] = True
    return Source(build_architecture(preset_config(key), key), hf_id=preset_hf_id(key), rank=rank,
                  alpha=alpha, quant_bits=bits, targets=targets, dora=dora, run=info)
