"""Write a PEFT LoRA adapter as a GGUF LoRA adapter that llama.cpp-based tools load beside the base.

The layout is the one llama.cpp's convert_lora_to_gguf.py writes (general.type adapter,
adapter.type lora, adapter.lora.alpha; blk.N.<tensor>.weight.lora_a / .lora_b in F32, with the
base's q/k row permutation applied to lora_b): see minilora/io/gguf_adapter.py. The base GGUF
gives the architecture, the tensor names and shapes the adapter is checked against before
anything is written; OUT.gguf is written atomically.

Examples:
    minilora export-gguf out/smollm2_r8 --base ~/.cache/minilora/SmolLM2-135M-Instruct.Q4_1.gguf adapter.gguf
    minilora export-gguf ADAPTER_DIR --base model.gguf adapter.gguf --force      # replace adapter.gguf
    llama-cli -m model.gguf --lora adapter.gguf -p "Hello"                       # then, in llama.cpp
"""
from __future__ import annotations

import os

from minilora.errors import MiniLoraError

NAME = "export-gguf"
HELP = "write a PEFT LoRA adapter as a GGUF LoRA adapter for llama.cpp"


def add_arguments(p):
    p.add_argument("adapter_dir", metavar="ADAPTER_DIR", help="PEFT adapter folder (adapter_config.json + "
                                                             "adapter_model.safetensors)")
    p.add_argument("out", metavar="OUT.gguf", help="the GGUF adapter file to write")
    p.add_argument("--base", required=True, metavar="MODEL.gguf",
                   help="the base model's GGUF file (architecture, tensor names and shapes; weights not read)")
    p.add_argument("--force", action="store_true", help="replace OUT.gguf if it exists")


def run(args) -> int:
    from minilora.io.gguf_adapter import write_gguf_adapter

    if not os.path.isfile(args.base):
        raise MiniLoraError(f"--base {args.base}: file not found")
    if not os.path.isdir(args.adapter_dir):
        raise MiniLoraError(f"ADAPTER_DIR {args.adapter_dir}: not a folder")
    if os.path.abspath(args.out) == os.path.abspath(args.base):
        raise MiniLoraError("OUT.gguf must differ from the --base file")
    info = write_gguf_adapter(args.adapter_dir, args.base, args.out, force=args.force)
    print(f"wrote {info['path']}: {info['modules']} module(s), {info['tensors']} tensors, alpha {info['alpha']:g}, "
          f"{info['bytes']:,} bytes")
    return 0
