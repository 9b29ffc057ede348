"""Fold a PEFT LoRA adapter into its base model and write a plain Hugging Face folder.

W = W0 + s * B @ A for every adapted linear, computed in float32 (float64 for a float64 base) and
cast once to the output dtype. Safe: every merged weight is checked finite after that cast before
anything is written, and the folder is written atomically (temporary folder + rename), so OUT_DIR
is either complete or untouched. tokenizer files of the base are copied along.

Examples:
    minilora merge minilora/assets/tiny-sentiment-base out/sentiment_tiny_8bits_r8 merged/
    minilora merge BASE_DIR ADAPTER_DIR OUT_DIR --dtype bfloat16     # default: the base's dtype
    minilora merge BASE_DIR ADAPTER_DIR OUT_DIR --force              # replace an existing OUT_DIR
The result loads with transformers' LlamaForCausalLM.from_pretrained(OUT_DIR) and with
`minilora generate OUT_DIR --prompt ...`.
"""
from __future__ import annotations

import os

from minilora.errors import MiniLoraError

NAME = "merge"
HELP = "merge a PEFT LoRA adapter into its base and write a Hugging Face folder"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "generation_config.json")


def add_arguments(p):
    p.add_argument("base_dir", metavar="BASE_DIR", help="Hugging Face Llama folder (config.json + safetensors)")
    p.add_argument("adapter_dir", metavar="ADAPTER_DIR", help="PEFT adapter folder (adapter_config.json + "
                                                             "adapter_model.safetensors)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write the merged model to")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16", "float64"),
                   help="dtype of the written weights (default auto: the base's)")
    p.add_argument("--max-shard-size", type=int, default=None, metavar="BYTES",
                   help="split the weights into shards of at most this many bytes (default: one file)")
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")


def merge_folder(base_dir, adapter_dir, out_dir, dtype="auto", max_shard_bytes=None, overwrite=False) -> dict:
    """Load, merge, check and write; returns {'modules': n merged, 'dtype': written dtype}."""
    from minilora.adapters import merge_lora
    from minilora.io import folder_dtype, from_pretrained, save_pretrained
    from minilora.io.peft import load_adapter

    stored = folder_dtype(base_dir)
    out_dtype = stored if dtype == "auto" else dtype
    model = from_pretrained(base_dir, dtype="float64" if stored == "float64" else "float32")
    load_adapter(model, adapter_dir)
    report = merge_lora(model)                   # raises, changing nothing, on non-finite merges
    extra = [os.path.join(base_dir, f) for f in TOKENIZER_FILES if os.path.isfile(os.path.join(base_dir, f))]
    save_pretrained(model, out_dir, dtype=out_dtype, max_shard_bytes=max_shard_bytes, extra_files=extra,
                    overwrite=overwrite)
    return {"modules": len(report), "dtype": out_dtype}


def run(args) -> int:
    from minilora.io.destination import check_output_location

    out = os.path.realpath(args.out_dir)
    for what, d in (("BASE_DIR", args.base_dir), ("ADAPTER_DIR", args.adapter_dir)):
        if not os.path.isdir(d):
            raise MiniLoraError(f"{what} {d}: not a folder")
        if os.path.realpath(d) == out:                   # symlinks resolved: a link to the base is the base
            raise MiniLoraError(f"OUT_DIR must differ from {what} ({d}; symlinks resolved)")
    if os.path.lexists(args.out_dir) and not args.force:
        raise MiniLoraError(f"OUT_DIR {args.out_dir} exists; pass --force to replace it")
    if args.max_shard_size is not None and args.max_shard_size <= 0:
        raise MiniLoraError(f"--max-shard-size must be positive, got {args.max_shard_size}")
    check_output_location(args.out_dir, "model", overwrite=args.force, inputs=(args.base_dir, args.adapter_dir),
                          what=f"OUT_DIR {args.out_dir}")
    info = merge_folder(args.base_dir, args.adapter_dir, args.out_dir, args.dtype, args.max_shard_size,
                        overwrite=args.force)
    print(f"merged {info['modules']} module(s) of {args.adapter_dir} into {args.base_dir} -> "
          f"{args.out_dir} ({info['dtype']})")
    return 0
