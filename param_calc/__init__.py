"""param_calc: exact LoRA parameter counts for real architectures (pure Python, no numpy).

The public API, imported on first use so that `param-calc --help` loads only argparse:
build_architecture, count_lora, from_preset / from_config_json / from_finlora, memory_estimate,
adapter_file_bytes, preset_config, preset_names, resolve_preset, ParamCalcError.
"""
from importlib import import_module

_EXPORTS = {
    "Architecture": "architectures", "Module": "architectures", "build_architecture": "architectures",
    "LoraCount": "counting", "count_lora": "counting", "ParamCalcError": "errors",
    "from_config_json": "inputs", "from_finlora": "inputs", "from_preset": "inputs",
    "adapter_file_bytes": "memory", "memory_estimate": "memory",
    "preset_config": "presets", "preset_names": "presets", "resolve_preset": "presets",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"param_calc.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'param_calc' has no attribute {name!r}")
