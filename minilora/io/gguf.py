"""GGUF files in: llama-architecture models from llama.cpp's format, as Hugging Face names and layouts.

    read_gguf(path, dtype, keep_quantized)  -> (LlamaConfig, {HF name: array or GGUFBlocks}, metadata)
    from_gguf(path, dtype, xp, keep_quantized) -> LlamaForCausalLM
    read_gguf_header(path)       -> (LlamaConfig, {GGUF name: (shape, type name)}, metadata), no data read
    gguf_metadata(path)          -> {key: value} (no tensor data read)
    permute_qk / unpermute_qk    llama.cpp's q/k row order <-> transformers' (see docs/gguf.md)

A GGUF file is a header of typed key/values (the config, the tokenizer) and a table of tensors,
each stored in a ggml type: F32, F16, BF16, or a block format (Q8_0, Q4_0, Q4_1, the K-quants ...).
The `gguf` package (llama.cpp's Python reader) parses the file through a memory map and
dequantizes the blocks; this module only maps names, shapes and the RoPE row order.

Shapes: GGUF lists dimensions fastest first (ne[0] is the row length), so a torch (out, in)
weight is listed as [in, out]; the reader's arrays are already in NumPy (row-major) order, which
is torch's (out, in).
RoPE: llama.cpp rotates interleaved pairs (2i, 2i+1); transformers rotates (i, i + d/2). To keep
one kernel, llama.cpp's converter permutes the rows of q_proj and k_proj per head; reading undoes
it with unpermute_qk. docs/gguf.md derives both layouts and holds the name table.
"""
from __future__ import annotations

import os
import re

import numpy as np

from minilora.config import LlamaConfig
from minilora.errors import MiniLoraError

__all__ = ["read_gguf", "from_gguf", "gguf_metadata", "read_gguf_header", "permute_qk", "unpermute_qk", "hf_name",
           "gguf_name"]

SUPPORTED_ARCHS = ("llama",)
_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
_BLOCK = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
          "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
          "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)$")
_HF_RE = re.compile(r"model\.layers\.(\d+)\.([\w.]+)\.(weight|bias)$")


# ---- names ---------------------------------------------------------------------------------
def hf_name(name: str) -> str | None:
    """GGUF tensor name -> Hugging Face state-dict name ('blk.0.attn_q.weight' -> '...q_proj.weight')."""
    if name in _GLOBAL:
        return _GLOBAL[name]
    m = _BLOCK_RE.match(name)
    if m and m.group(2) in _BLOCK:
        return f"model.layers.{m.group(1)}.{_BLOCK[m.group(2)]}.{m.group(3)}"
    return None


def gguf_name(name: str) -> str | None:
    """Hugging Face state-dict name -> GGUF tensor name (the inverse of hf_name)."""
    inv = {v: k for k, v in _GLOBAL.items()}
    if name in inv:
        return inv[name]
    m = _HF_RE.match(name)
    back = {v: k for k, v in _BLOCK.items()}
    if m and m.group(2) in back:
        return f"blk.{m.group(1)}.{back[m.group(2)]}.{m.group(3)}"
    return None


# ---- the q/k row permutation ----------------------------------------------------------------
def permute_qk(w, n_head: int):
    """transformers' q/k row order -> llama.cpp's (what convert_hf_to_gguf writes).

    w: (n_head * d, ...) rows of n_head heads of d rows each (a weight (out, in), a bias, a LoRA B).
    Within a head, rows [0..d/2) and [d/2..d) (the rotate_half halves) are interleaved:
    new row order 0, d/2, 1, d/2 + 1, ... so that pair (i, i + d/2) lands on rows (2i, 2i + 1).
    """
    d = _head_rows(w, n_head)
    x = w.reshape(n_head, 2, d // 2, *w.shape[1:])            # (nh, 2, d/2, ...) halves
    return x.swapaxes(1, 2).reshape(w.shape)                    # (nh, d/2, 2, ...) interleaved


def unpermute_qk(w, n_head: int):
    """llama.cpp's q/k row order -> transformers' (the inverse of permute_qk)."""
    d = _head_rows(w, n_head)
    x = w.reshape(n_head, d // 2, 2, *w.shape[1:])              # (nh, d/2, 2, ...) interleaved
    return x.swapaxes(1, 2).reshape(w.shape)                    # (nh, 2, d/2, ...) halves


def _head_rows(w, n_head: int) -> int:
    if n_head < 1 or w.shape[0] % n_head or (w.shape[0] // n_head) % 2:
        raise MiniLoraError(f"cannot split {w.shape[0]} rows into {n_head} heads of an even size")
    return w.shape[0] // n_head


# ---- metadata ----------------------------------------------------------------------------------
def _open(path):
    import gguf

    if not os.path.isfile(path):
        raise MiniLoraError(f"{path}: file not found")
    try:
        return gguf.GGUFReader(path, "r")
    except (ValueError, OSError, KeyError, IndexError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MiniLoraError(f"{path}: not a valid GGUF file ({first})") from None


def _value(field):
    """A reader field as a Python value (str, int, float, bool or a list of them)."""
    from gguf import GGUFValueType

    def text(part):
        return bytes(part).decode("utf-8", errors="replace")

    if not field.types:
        return None
    if field.types[0] == GGUFValueType.ARRAY:
        if field.types[-1] == GGUFValueType.STRING:
            return [text(field.parts[i]) for i in field.data]
        return [v for i in field.data for v in field.parts[i].tolist()]
    if field.types[0] == GGUFValueType.STRING:
        return text(field.parts[-1])
    if field.types[0] == GGUFValueType.FLOAT32:        # the shortest decimal of the float32: 1e-05, not 9.9999997e-06
        return float(str(field.parts[-1][0]))
    return field.parts[-1].tolist()[0]


def _metadata(reader) -> dict:
    return {k: _value(f) for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def gguf_metadata(path) -> dict:
    """{key: value} of a GGUF file's header (config, tokenizer vocabulary, chat template)."""
    return _metadata(_open(path))


def _config(meta: dict, tensor_names: set, reader, path) -> LlamaConfig:
    """LlamaConfig from the llama.* and tokenizer.ggml.* keys."""
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise MiniLoraError(f"{path}: architecture {arch!r} is not supported; minilora reads GGUF files "
                            f"with general.architecture = {' or '.join(map(repr, SUPPORTED_ARCHS))}")

    def need(key):
        if f"{arch}.{key}" not in meta:
            raise MiniLoraError(f"{path}: missing metadata key {arch}.{key}")
        return meta[f"{arch}.{key}"]

    n_head = int(need("attention.head_count"))
    hidden = int(need("embedding_length"))
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = len(tokens) if tokens else meta.get(f"{arch}.vocab_size")
    if vocab is None:
        raise MiniLoraError(f"{path}: no tokenizer.ggml.tokens and no {arch}.vocab_size: vocabulary size unknown")
    head_dim = int(meta.get(f"{arch}.attention.key_length", hidden // n_head))
    rot = meta.get(f"{arch}.rope.dimension_count", head_dim)
    if rot != head_dim:
        raise MiniLoraError(f"{path}: RoPE over {rot} of {head_dim} head dims (partial rotary) is not supported")
    return LlamaConfig(
        vocab_size=int(vocab), hidden_size=hidden, intermediate_size=int(need("feed_forward_length")),
        num_hidden_layers=int(need("block_count")), num_attention_heads=n_head,
        num_key_value_heads=int(meta.get(f"{arch}.attention.head_count_kv", n_head)),
        max_position_embeddings=int(meta.get(f"{arch}.context_length", 2048)),
        rope_theta=float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        rms_norm_eps=float(need("attention.layer_norm_rms_epsilon")),
        tie_word_embeddings="output.weight" not in tensor_names, head_dim=head_dim,
        rope_scaling=_rope_scaling(meta, arch, reader, head_dim, path),
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"), eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
        pad_token_id=meta.get("tokenizer.ggml.padding_token_id"))


def _rope_scaling(meta, arch, reader, head_dim, path):
    """rope_scaling from rope.scaling.* keys, or llama 3's rope_freqs tensor (checked to be llama3's)."""
    from minilora.layers.rope import rope_inv_freq

    kind = meta.get(f"{arch}.rope.scaling.type", "none")
    factor = meta.get(f"{arch}.rope.scaling.factor", meta.get(f"{arch}.rope.scale_linear"))
    freqs = next((t for t in reader.tensors if t.name == "rope_freqs.weight"), None)
    if freqs is not None:
        return _llama3_from_factors(np.asarray(freqs.data, np.float64), meta, arch, head_dim, path)
    if kind == "none" and factor in (None, 1.0):
        return None
    scaling = {"rope_type": "linear" if kind == "none" else kind, "factor": float(factor or 1.0)}
    if f"{arch}.rope.scaling.original_context_length" in meta:
        scaling["original_max_position_embeddings"] = int(meta[f"{arch}.rope.scaling.original_context_length"])
    try:
        rope_inv_freq(head_dim, 10000.0, np, scaling)
    except MiniLoraError as e:
        raise MiniLoraError(f"{path}: {e}") from None
    return scaling


def _llama3_from_factors(factors, meta, arch, head_dim, path):
    """Llama 3.x stores its frequency factors as a tensor; find the llama3 settings that give them."""
    from minilora.layers.rope import rope_inv_freq

    theta = float(meta.get(f"{arch}.rope.freq_base", 10000.0))
    base = rope_inv_freq(head_dim, theta, np)
    scaling = {"rope_type": "llama3", "factor": float(factors.max()), "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    if factors.shape == base.shape and np.allclose(base / rope_inv_freq(head_dim, theta, np, scaling), factors,
                                                   rtol=1e-5):
        return scaling
    raise MiniLoraError(f"{path}: rope_freqs.weight holds frequency factors that are not Llama 3's "
                        "(factor, low 1, high 4, original 8192); such files are not supported")


# ---- tensors -----------------------------------------------------------------------------------
def _dequantize(t, path) -> np.ndarray:
    """One reader tensor as float32 (or float64 for F64) in NumPy order, a fresh array (not the memmap)."""
    import gguf

    code = t.tensor_type
    shape = tuple(int(n) for n in reversed(t.shape.tolist()))
    if code in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F64):
        return np.array(t.data).reshape(shape)
    try:
        arr = gguf.quants.dequantize(t.data, code)
    except NotImplementedError:
        raise MiniLoraError(f"{path}: tensor {t.name} is stored as {code.name}, which the installed gguf "
                            "package cannot dequantize (F32, F16, BF16, Q4_0..Q8_0 and Q2_K..Q6_K work)") from None
    return arr.reshape(shape)


def read_gguf_header(path):
    """(LlamaConfig, {GGUF tensor name: (NumPy-order shape, ggml type name)}, metadata); no tensor data read."""
    path = os.fspath(path)
    reader = _open(path)
    meta = _metadata(reader)
    config = _config(meta, {t.name for t in reader.tensors}, reader, path)
    shapes = {t.name: (tuple(int(n) for n in reversed(t.shape.tolist())), t.tensor_type.name) for t in reader.tensors}
    return config, shapes, meta


def _kept(t, name, dtype):
    """A decoder-layer linear weight in a block type kept packed -> GGUFBlocks (a copy), else None."""
    from minilora.quant.gguf_blocks import QTYPES, from_packed

    if t.tensor_type.name not in QTYPES or ".layers." not in name or not name.endswith("_proj.weight"):
        return None
    shape = tuple(int(n) for n in reversed(t.shape.tolist()))
    return from_packed(np.array(t.data), t.tensor_type.name, shape, dtype)


def read_gguf(path, dtype="float32", keep_quantized: bool = False):
    """(LlamaConfig, {Hugging Face name: host array of `dtype`}, metadata dict) from a llama GGUF file.

    Every tensor is dequantized to float32 through the `gguf` package and cast to `dtype`;
    q_proj / k_proj rows are put back in transformers' order (unpermute_qk). A file without
    output.weight has tied embeddings. keep_quantized=True keeps the decoder-layer linear weights
    stored as Q8_0, Q4_0 or Q4_1 packed (minilora.quant.GGUFBlocks, the rows of q/k blocks
    unpermuted: a block lies within a row); other tensors are dequantized as usual.
    Raises MiniLoraError for another architecture, a missing or unexpected tensor, a shape that
    disagrees with the metadata, or a type it cannot read.
    """
    path = os.fspath(path)
    reader = _open(path)
    meta = _metadata(reader)
    names = {t.name for t in reader.tensors}
    config = _config(meta, names, reader, path)
    expected = config.param_shapes()
    heads = {"q_proj": config.num_attention_heads, "k_proj": config.num_key_value_heads}
    params = {}
    for t in reader.tensors:
        if t.name == "rope_freqs.weight":                       # folded into config.rope_scaling
            continue
        name = hf_name(t.name)
        if name is None or name not in expected:
            raise MiniLoraError(f"{path}: unexpected tensor {t.name} (not part of a llama model with this config)")
        kept = _kept(t, name, dtype) if keep_quantized else None
        arr = kept.data if kept is not None else _dequantize(t, path)
        if (kept.shape if kept is not None else arr.shape) != tuple(expected[name]):
            raise MiniLoraError(f"{path}: tensor {t.name} has shape {arr.shape}, the metadata needs "
                                f"{tuple(expected[name])}")
        module = name.split(".")[-2]
        if module in heads:
            arr = unpermute_qk(arr, heads[module])
        if kept is not None:
            params[name] = kept._replace(data=np.ascontiguousarray(arr))
        else:
            params[name] = np.ascontiguousarray(arr, dtype=dtype)
    missing = [k for k in expected if k not in params]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MiniLoraError(f"{path}: missing tensor {gguf_name(missing[0]) or missing[0]}{more}")
    return config, params, meta


def from_gguf(path, dtype="float32", xp=None, seed: int = 0, keep_quantized: bool = False):
    """A LlamaForCausalLM from a llama GGUF file (read_gguf), its arrays placed on xp (default numpy).

    keep_quantized=True: the decoder-layer linear weights stored as Q8_0 / Q4_0 / Q4_1 stay packed
    in model.quantized (a frozen base, dequantized a layer at a time, as quantize_base does).
    """
    from minilora.backend import asarray, check_finite_weight, get_xp
    from minilora.model import LlamaForCausalLM

    try:
        dtype = np.dtype(dtype).name
    except TypeError:
        dtype = str(dtype)
    if dtype not in ("float32", "float64", "float16"):
        raise MiniLoraError(f"dtype must be float32, float64 or float16, got {dtype!r}")
    from minilora.quant import GGUFBlocks, to_backend

    config, params, _ = read_gguf(path, dtype=dtype, keep_quantized=keep_quantized)
    for name, arr in params.items():                 # NaN or inf in a float weight: refused, named
        if not isinstance(arr, GGUFBlocks):
            check_finite_weight(arr, name, path)
    xp = get_xp("numpy") if xp is None else xp
    kept = {k: to_backend(params.pop(k), xp) for k in [k for k, v in params.items() if isinstance(v, GGUFBlocks)]}
    model = LlamaForCausalLM(config, {k: asarray(v, xp) for k, v in params.items()}, seed=seed)
    model.quantized.update(kept)
    return model
