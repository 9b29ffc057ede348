"""Files: atomic writes (the one writer), safetensors, Hugging Face folders and config.json, PEFT
adapter files (the one reader).

Imported lazily, so that `param-calc` (pure Python) can use the atomic writer without numpy."""
_LAZY = {
    "atomic_path": "atomic", "atomic_dir": "atomic", "write_text": "atomic", "write_json": "atomic",
    "read_json": "jsonfile", "save_safetensors": "hf", "load_safetensors": "hf", "load_weights": "hf",
    "from_pretrained": "hf", "save_pretrained": "hf", "folder_dtype": "hf", "bf16_bits": "hf",
    "bf16_to_float32": "hf", "FILE_DTYPES": "hf",
    "config_from_hf": "hf_config", "config_to_hf": "hf_config", "config_dtype": "hf_config",
    "save_adapter": "peft", "load_adapter": "peft", "read_adapter_config": "peft",
    "adapter_config_dict": "peft", "read_adapter_factors": "peft", "AdapterFactors": "peft",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
