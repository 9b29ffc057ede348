"""Memory estimates for a LoRA run and the exact size of the adapter file.

Weights, gradients and optimizer states only; activations depend on batch, sequence length and
checkpointing and are left out. The assumptions are returned as text, and the CLI prints them:

- Frozen base at 16 bits: 2 bytes per parameter. At 8 or 4 bits (bitsandbytes, as transformers
  loads it): the weights of the linear layers inside the blocks are quantized; embeddings, norms,
  biases and the output head stay at 16 bits. LLM.int8 adds one fp32 scale per output row; NF4
  with double quantization (FinLoRA's setting) adds an 8-bit absmax per 64 weights and an fp32
  per 256 absmax values.
- LoRA weights in the adapter dtype (fp32 by default: PEFT upcasts adapters of a 16-bit base),
  gradients in the same dtype, AdamW's two moments in fp32 (8-bit AdamW: one byte each).
- The adapter file: PEFT's adapter_model.safetensors: an 8-byte header length, a JSON header with
  one entry per tensor (padded with spaces to a multiple of 8), then the tensors. Computed exactly.
"""
from __future__ import annotations

import json

from param_calc.counting import LoraCount

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
SAFETENSORS_DTYPE = {"fp32": "F32", "bf16": "BF16", "fp16": "F16"}
OPTIMIZER_BYTES = {"adamw": 8, "adamw-8bit": 2}   # per trainable parameter, both moments
QUANT_BITS = (16, 8, 4)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def base_weight_bytes(count: LoraCount, quant_bits: int = 16) -> int:
    """Bytes of the frozen base weights at quant_bits (see the module docstring)."""
    arch = count.arch
    if quant_bits == 16:
        return 2 * arch.base_params
    quantized = {m.name + ".weight": m for m in arch.modules
                 if m.kind != "embedding" and m.name != arch.output_head}
    total = 0
    for name, shape in arch.param_shapes.items():
        n = _numel(shape)
        m = quantized.get(name)
        if m is None:
            total += 2 * n
        elif quant_bits == 8:
            total += n + 4 * m.fan_out                      # int8 weights + fp32 row scales
        else:
            blocks = -(-n // 64)
            total += -(-n // 2) + blocks + 4 * -(-blocks // 256)   # nf4 + 8-bit absmax + fp32 2nd level
    return total


def adapter_tensors(count: LoraCount) -> list:
    """(saved name, shape) of every tensor in PEFT's adapter file."""
    out = []
    for a in count.adapted:
        m, p = a.module, "base_model.model." + a.module.name
        if m.kind == "embedding":
            out += [(p + ".lora_embedding_A", (a.rank, m.fan_in)), (p + ".lora_embedding_B", (m.fan_out, a.rank))]
        else:
            out += [(p + ".lora_A.weight", (a.rank, m.fan_in)), (p + ".lora_B.weight", (m.fan_out, a.rank))]
        if a.dora:
            out.append((p + ".lora_magnitude_vector", (m.fan_out,)))
    return out


def safetensors_size(tensors, dtype: str = "fp32", metadata: dict | None = None) -> int:
    """Exact file size safetensors writes for these (name, shape) tensors, all of one dtype."""
    size, code = DTYPE_BYTES[dtype], SAFETENSORS_DTYPE[dtype]
    header, offset = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, shape in sorted(tensors):
        nbytes = _numel(shape) * size
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    n = len(json.dumps(header, separators=(",", ":")).encode())
    return 8 + n + (-n) % 8 + offset


def adapter_file_bytes(count: LoraCount, dtype: str = "fp32") -> int:
    """Size of adapter_model.safetensors as PEFT's save_pretrained writes it."""
    return safetensors_size(adapter_tensors(count), dtype, {"format": "pt"})


def memory_estimate(count: LoraCount, quant_bits: int = 16, adapter_dtype: str = "fp32",
                    optimizer: str = "adamw") -> dict:
    """{component: bytes} for training, plus 'total' and the adapter file; see the module docstring."""
    n, b = count.lora_params, DTYPE_BYTES[adapter_dtype]
    est = {
        "base_weights": base_weight_bytes(count, quant_bits),
        "lora_weights": n * b,
        "lora_gradients": n * b,
        "optimizer_states": n * OPTIMIZER_BYTES[optimizer],
    }
    est["total"] = sum(est.values())
    est["adapter_file"] = adapter_file_bytes(count, adapter_dtype)
    return est


def memory_assumptions(count: LoraCount, quant_bits: int, adapter_dtype: str, optimizer: str) -> list:
    """One line per assumption behind memory_estimate, for printing."""
    lines = []
    if quant_bits == 16:
        lines.append("base: every parameter at 16 bits (2 bytes)"
                     + (", the tied head counted once" if count.arch.tied else ""))
    else:
        extra = ("+ one fp32 scale per output row (LLM.int8)" if quant_bits == 8 else
                 "+ NF4 double-quant constants: 8-bit absmax per 64 weights, fp32 per 256 absmax")
        lines.append(f"base: block linear weights at {quant_bits} bits {extra}; embeddings, norms, "
                     "biases and the output head at 16 bits (bitsandbytes as transformers loads it)")
    b = DTYPE_BYTES[adapter_dtype]
    lines.append(f"LoRA weights and their gradients: {adapter_dtype} ({b} bytes each per parameter)")
    lines.append({"adamw": "AdamW: two fp32 moments (8 bytes per LoRA parameter)",
                  "adamw-8bit": "8-bit AdamW: two 1-byte moments (2 bytes per LoRA parameter; "
                                "block scales ignored)"}[optimizer])
    lines.append("activations, KV cache and framework overhead: not included")
    lines.append(f"adapter file: adapter_model.safetensors as PEFT writes it, {adapter_dtype} tensors + header")
    if any(a.module.kind == "embedding" or a.module.name == count.arch.output_head for a in count.adapted):
        lines.append("note: PEFT also saves the full embedding / output layers when they are targeted; "
                     "the adapter file size leaves them out")
    return lines
