"""LoRA adapters out as GGUF files for llama.cpp, in the layout of llama.cpp's convert_lora_to_gguf.py.

    write_gguf_adapter(adapter_dir, base_gguf, out, force) -> info dict
    gguf_adapter_tensors(factors, base_gguf)               -> ([(GGUF name, float32 array)], alpha, arch)

The file is a GGUF with general.type = "adapter", general.architecture = the base's,
adapter.type = "lora" and adapter.lora.alpha (float32), and two F32 tensors per adapted linear:
    blk.N.attn_q.weight.lora_a   A (r, in)   GGUF dims [in, r]
    blk.N.attn_q.weight.lora_b   B (out, r)  GGUF dims [r, out]
named like the base tensor they adapt. llama.cpp's converter permutes the base's q/k rows for its
RoPE (minilora.io.gguf.permute_qk) and applies the same permutation to lora_b, the factor whose
rows are the weight's rows, so that B A matches the permuted base; A is unchanged.
llama.cpp scales each pair by alpha / r, with r read from the tensors, so the alpha written is
s * r (the scale minilora trains with, times the rank): PEFT's lora_alpha for plain LoRA, and
lora_alpha * sqrt(r) for rsLoRA. An adapter whose modules would need different alphas under that
rule (alpha_pattern, or rsLoRA with several ranks) cannot be one GGUF adapter and is refused.
"""
from __future__ import annotations

import os

import numpy as np

from minilora.errors import MiniLoraError
from minilora.io.atomic import atomic_path
from minilora.io.gguf import gguf_name, permute_qk, read_gguf_header


def _alpha(modules: dict, folder) -> float:
    """The one alpha with alpha / r == s for every module, or MiniLoraError."""
    alphas = {m: float(np.float32(s * a.shape[0])) for m, (a, _, s) in modules.items()}
    first = next(iter(alphas.values()))
    odd = [m for m, v in alphas.items() if abs(v - first) > 1e-6 * abs(first)]
    if odd:
        raise MiniLoraError(f"{folder}: llama.cpp scales every module by one alpha / r, but {odd[0]} needs "
                            f"alpha {alphas[odd[0]]:g} and others {first:g} (alpha_pattern or rsLoRA with several "
                            "ranks); such an adapter cannot be written as one GGUF adapter")
    return first


def gguf_adapter_tensors(factors, base_gguf):
    """([(GGUF name, float32 array)], alpha, architecture) for an AdapterFactors against a base GGUF.

    Checks every module against the base first: its GGUF tensor must exist with shape (out, in)
    matching B (out, r) and A (r, in). Raises MiniLoraError naming the first mismatch.
    """
    config, shapes, meta = read_gguf_header(base_gguf)
    heads = {"q_proj": config.num_attention_heads, "k_proj": config.num_key_value_heads}
    tensors = []
    for module, (a, b, _) in factors.modules.items():
        gname = gguf_name(module + ".weight")
        if gname is None or gname not in shapes:
            raise MiniLoraError(f"{factors.path}: {module} has no tensor in {base_gguf} "
                                f"({gname or 'no GGUF name'}; a tied lm_head cannot take an adapter there)")
        out_f, in_f = shapes[gname][0]
        if a.shape[1] != in_f or b.shape[0] != out_f:
            raise MiniLoraError(f"{factors.path}: {module} factors A {tuple(a.shape)} B {tuple(b.shape)} do not fit "
                                f"the base's {gname} ({out_f} x {in_f})")
        b32 = np.asarray(b, np.float32)
        kind = module.split(".")[-1]
        if kind in heads:
            b32 = permute_qk(b32, heads[kind])               # the base's rows are permuted: so are B's
        tensors += [(gname + ".lora_a", np.ascontiguousarray(a, np.float32)),
                    (gname + ".lora_b", np.ascontiguousarray(b32))]
    return tensors, _alpha(factors.modules, factors.path), meta.get("general.architecture", "llama")


def write_gguf_adapter(adapter_dir, base_gguf, out, force: bool = False) -> dict:
    """Write the PEFT adapter in adapter_dir as a GGUF LoRA adapter for base_gguf at `out` (atomic).

    Everything is read and checked before anything is written; an existing `out` is refused unless
    force. Returns {'path', 'tensors', 'modules', 'alpha', 'bytes'}.
    """
    import gguf

    from minilora.io.peft import read_adapter_factors

    out = os.fspath(out)
    if os.path.exists(out) and not force:
        raise MiniLoraError(f"{out} exists; pass --force to replace it")
    if os.path.isdir(out):
        raise MiniLoraError(f"{out} is a folder; give a file name for the GGUF adapter")
    factors = read_adapter_factors(adapter_dir)
    if factors.ignored:
        raise MiniLoraError(f"{adapter_dir}: key {factors.ignored[0]} is not a LoRA factor; only lora_A / lora_B "
                            "of linears can go into a GGUF adapter")
    tensors, alpha, arch = gguf_adapter_tensors(factors, base_gguf)
    with atomic_path(out) as tmp:
        w = gguf.GGUFWriter(tmp, arch)
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        w.add_name(os.path.basename(os.path.normpath(os.fspath(adapter_dir))))
        for name, arr in tensors:
            w.add_tensor(name, arr)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return {"path": out, "tensors": len(tensors), "modules": len(factors.modules), "alpha": alpha,
            "bytes": os.path.getsize(out)}
