"""minilora: LoRA from scratch in NumPy (and CuPy), on a Llama-architecture transformer.

The public API is imported lazily, so `import minilora` (and the CLI's start) stays light:
    minilora.from_pretrained(dir), minilora.save_pretrained(model, dir),
    minilora.LlamaConfig, minilora.LlamaForCausalLM, minilora.LoraConfig, minilora.add_lora,
    minilora.merge_lora, minilora.unmerge_lora, minilora.save_adapter, minilora.load_adapter,
    minilora.MiniLoraError, minilora.load_tokenizer(path, config=None).
    Generation: minilora.inference.generate.generate(model, input_ids, max_new_tokens).
"""
from minilora.errors import MiniLoraError

_LAZY = {
    "from_pretrained": "io", "save_pretrained": "io",
    "LlamaConfig": "config", "LlamaForCausalLM": "model",
    "LoraConfig": "adapters", "add_lora": "adapters", "merge_lora": "adapters", "unmerge_lora": "adapters",
    "save_adapter": "io.peft", "load_adapter": "io.peft",
    "load_tokenizer": "data.hf_tokenizer",
}

__all__ = ["MiniLoraError", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'minilora' has no attribute {name!r}")
