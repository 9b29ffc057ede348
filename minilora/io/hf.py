"""Hugging Face folders: config.json + model.safetensors (or sharded), read and written.

    from_pretrained(folder, dtype)   config.json + model.safetensors | model.safetensors.index.json
    save_pretrained(model, folder)   the same layout, atomically, optionally sharded

Weights travel through the `safetensors` package; files hold host NumPy arrays and a model on CuPy
is moved explicitly. float32, float16 and float64 map to NumPy dtypes. NumPy has no bfloat16, and
safetensors' NumPy loader refuses BF16 tensors, so bfloat16 is converted here, bit for bit:
    read:   a bf16 value is the top 16 bits of a float32, so (bits << 16) viewed as float32 is exact
    write:  float32 -> bf16 rounds to nearest, ties to even (as torch's .to(torch.bfloat16))
A BF16 file is opened with safetensors (which validates the header) and its tensors are then read
through a memory map at the offsets of the header: no second copy of a multi-GB file.
Config handling (both RoPE spellings, refusals) lives in minilora.io.hf_config.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np

from minilora.backend import asarray, check_allocation, check_finite_weight, get_xp, to_numpy
from minilora.errors import MiniLoraError
from minilora.io.atomic import atomic_dir, atomic_path, recover_if_missing, write_json
from minilora.io.destination import check_output_location
from minilora.io.hf_config import config_dtype, config_from_hf, config_to_hf
from minilora.io.jsonfile import check_regular_file, read_json

__all__ = ["read_json", "config_from_hf", "config_to_hf", "save_safetensors", "load_safetensors",
           "load_weights", "from_pretrained", "save_pretrained", "bf16_bits", "bf16_to_float32"]

FILE_DTYPES = ("float32", "float16", "bfloat16", "float64")
CONFIG_MAX_BYTES = 1 << 20          # a config.json is a few KB; more is not a config
_NP_KINDS = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
             "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


# ---- bfloat16 <-> float32 (bit patterns as uint16) ------------------------------------------
def bf16_bits(x) -> np.ndarray:
    """float array -> uint16 bfloat16 bit patterns, rounding to nearest even; NaN stays NaN."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> 16) & 1))) >> 16       # round half to even
    return np.where(np.isnan(x), np.uint32(0x7FC0), rounded).astype(np.uint16)


def bf16_to_float32(bits) -> np.ndarray:
    """uint16 bfloat16 bit patterns -> the exact float32 values."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


# ---- safetensors files ---------------------------------------------------------------------
def save_safetensors(path, tensors: dict, metadata: dict | None = None, dtype=None):
    """Host arrays to a .safetensors file, atomically; dtype='bfloat16' stores BF16 tensors."""
    import safetensors
    from safetensors.numpy import save_file

    host = {k: np.ascontiguousarray(to_numpy(v)) for k, v in tensors.items()}
    metadata = metadata or {"format": "pt"}
    with atomic_path(path) as tmp:
        if dtype != "bfloat16":
            save_file({k: v if dtype is None else v.astype(dtype) for k, v in host.items()}, tmp,
                      metadata=metadata)
            return
        bits = {k: bf16_bits(v) for k, v in host.items()}             # kept alive during the write
        spec = getattr(safetensors, "TensorSpec", None)              # safetensors >= 0.8
        flat = {k: (spec(dtype="bfloat16", shape=b.shape, data_ptr=b.ctypes.data, data_len=b.nbytes)
                    if spec else {"dtype": "bfloat16", "shape": list(b.shape), "data": b.tobytes()})
                for k, b in bits.items()}
        safetensors.serialize_file(flat, tmp, metadata=metadata)


def _open_header(path):
    """{name: (dtype code, shape)} through safetensors (which validates the file)."""
    from safetensors import SafetensorError, safe_open

    check_regular_file(path, None, "file")
    try:                                  # safetensors reports a permission error as "No such file"
        open(path, "rb").close()
    except OSError as e:
        raise MiniLoraError(f"{path}: cannot read ({e.strerror})") from None
    try:
        with safe_open(path, framework="np") as f:
            return {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MiniLoraError(f"{path}: not a valid safetensors file ({first})") from None


def load_safetensors(path) -> dict:
    """{name: host array} from a .safetensors file; BF16 tensors are widened exactly to float32."""
    from safetensors.numpy import load_file

    header = _open_header(path)
    bad = {k: d for k, (d, _) in header.items() if d not in _NP_KINDS and d != "BF16"}
    if bad:
        name, code = next(iter(bad.items()))
        raise MiniLoraError(f"{path}: tensor {name} has unsupported dtype {code}")
    if all(d != "BF16" for d, _ in header.values()):
        return load_file(path)
    with open(path, "rb") as f:                       # offsets: the 8-byte length, then the JSON
        n = int.from_bytes(f.read(8), "little")
        offsets = {k: v["data_offsets"] for k, v in json.loads(f.read(n)).items() if k != "__metadata__"}
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, (code, shape) in header.items():
        start, end = offsets[name]
        buf = raw[start:end]
        arr = bf16_to_float32(buf.view("<u2")) if code == "BF16" else buf.view(_NP_KINDS[code]).copy()
        out[name] = arr.reshape(shape)
    del raw
    return out


def _file_dtypes(path) -> set:
    return {d for d, _ in _open_header(path).values()}


def _weight_files(folder) -> list:
    """The safetensors files of a folder: model.safetensors or the shards its index names."""
    if not os.path.isdir(folder):
        raise MiniLoraError(f"{folder}: not a folder")
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(single):
        return [single]
    if os.path.exists(index):
        wm = read_json(index).get("weight_map")
        if not isinstance(wm, dict) or not wm:
            raise MiniLoraError(f"{index}: missing 'weight_map'")
        return [os.path.join(folder, s) for s in sorted(set(wm.values()))]
    if any(f.endswith((".bin", ".pt", ".pth")) for f in os.listdir(folder)):
        raise MiniLoraError(f"{folder}: only PyTorch pickle weights (.bin); minilora reads safetensors "
                            "(convert with transformers: model.save_pretrained(dir, safe_serialization=True))")
    raise MiniLoraError(f"{folder}: no model.safetensors or model.safetensors.index.json")


def load_weights(folder) -> dict:
    """All tensors of a Hugging Face folder: model.safetensors or the shards of its index."""
    out = {}
    for path in _weight_files(folder):
        out.update(load_safetensors(path))
    return out


# ---- whole models ----------------------------------------------------------------------------
def from_pretrained(folder, dtype="float32", xp=None, seed: int = 0, quant: str | None = None):
    """A LlamaForCausalLM from a Hugging Face Llama folder (or a llama GGUF file: minilora.io.gguf.from_gguf).

    Weights of any file dtype (F32, F16, BF16, F64) are cast once to `dtype` (float32, float64 or
    float16; NumPy has no bfloat16 to compute in) and placed on `xp` (numpy default, or cupy).
    A tied checkpoint that still stores lm_head.weight has that copy dropped.
    quant="gguf" (GGUF files only) keeps the file's Q8_0 / Q4_0 / Q4_1 layer weights packed as the
    frozen base (QLoRA-style); other formats come from model.quantize_base(bits, fmt=...).
    """
    from minilora.model import LlamaForCausalLM

    try:
        dtype = np.dtype(dtype).name
    except TypeError:
        dtype = str(dtype)
    if dtype not in ("float32", "float64", "float16"):
        raise MiniLoraError(f"dtype must be float32, float64 or float16, got {dtype!r}"
                            + (" (NumPy has no bfloat16: load bf16 files as float32)" if "bf" in dtype else ""))
    if quant not in (None, "gguf"):
        raise MiniLoraError(f"quant must be None or 'gguf' (keep a GGUF file's blocks), got {quant!r}; "
                            "other formats: model.quantize_base(bits, fmt=...)")
    if os.fspath(folder).lower().endswith(".gguf"):          # llama.cpp's format: minilora.io.gguf
        from minilora.io.gguf import from_gguf
        return from_gguf(folder, dtype=dtype, xp=xp, seed=seed, keep_quantized=quant == "gguf")
    if quant == "gguf":
        raise MiniLoraError(f"{folder}: quant='gguf' keeps the blocks of a .gguf file; this is not one "
                            "(use model.quantize_base(bits, fmt='q4_1') to store a base in GGUF blocks)")
    xp = get_xp("numpy") if xp is None else xp
    recover_if_missing(folder)
    if not os.path.isdir(folder):
        raise MiniLoraError(f"{folder}: not a folder")
    cfg_path = os.path.join(folder, "config.json")
    config = config_from_hf(read_json(cfg_path, max_bytes=CONFIG_MAX_BYTES), cfg_path)
    _check_size(config, folder, dtype, xp)
    tensors = load_weights(folder)
    expected = config.param_shapes()
    _check_names(config, folder, tensors, expected)
    params = {}
    for name, shape in expected.items():
        arr = tensors.pop(name)
        if tuple(arr.shape) != tuple(shape):
            raise MiniLoraError(f"{folder}: weight {name} has shape {tuple(arr.shape)}, config needs {tuple(shape)}")
        if arr.dtype.kind != "f":
            raise MiniLoraError(f"{folder}: weight {name} has dtype {arr.dtype}, expected a float type")
        check_finite_weight(arr, name, folder)
        params[name] = asarray(np.asarray(arr).astype(dtype), xp)
    return LlamaForCausalLM(config, params, seed=seed)


def _check_names(config, folder, tensors: dict, expected: dict):
    """The files hold exactly the config's weights (a tied checkpoint's lm_head copy is dropped)."""
    if config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)     # some writers keep the tied copy
    missing = [k for k in expected if k not in tensors]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MiniLoraError(f"{folder}: missing weight {missing[0]}{more}")
    extra = [k for k in tensors if k not in expected and not k.endswith("rotary_emb.inv_freq")]
    if extra:
        raise MiniLoraError(f"{folder}: unexpected weight {extra[0]} (not part of a LlamaForCausalLM "
                            f"with this config)")


def _check_size(config, folder, dtype, xp):
    """Before anything is allocated: the config's parameter count must fit in memory and in the files."""
    n = config.num_parameters()
    check_allocation(n * np.dtype(dtype).itemsize, f"{folder}: the model config.json describes ({n:,} parameters)",
                     xp)
    held = sum(len(_open_header(path)) for path in _weight_files(folder))
    layers = config.num_hidden_layers
    if layers > held:                                  # every layer has 9 tensors: no need to list them
        raise MiniLoraError(f"{folder}: config.json describes {layers:,} layers, but the weight files hold only "
                            f"{held:,} tensors")


def folder_dtype(folder) -> str:
    """The dtype a folder's weights are stored in: config.json's torch_dtype/dtype, else the files'."""
    named = config_dtype(read_json(os.path.join(folder, "config.json")))
    if named in FILE_DTYPES:
        return named
    codes = set().union(*(_file_dtypes(p) for p in _weight_files(folder)))
    for code, name in (("BF16", "bfloat16"), ("F16", "float16"), ("F64", "float64")):
        if codes == {code}:
            return name
    return "float32"


def save_pretrained(model, folder, dtype=None, max_shard_bytes: int | None = None, extra_files=(),
                    overwrite: bool = False):
    """Write config.json + model.safetensors (or shards + index) for `model`, atomically.

    Saves the base weights (the merged ones if the adapter is merged; LoRA factors never: those go
    to save_adapter). dtype: one of float32, float16, bfloat16, float64 (default: the model's).
    max_shard_bytes: split into model-0000i-of-0000n.safetensors with model.safetensors.index.json.
    extra_files: paths copied into the folder as well (e.g. a tokenizer.json).
    Raises MiniLoraError, writing nothing, if a weight is not finite after the cast, or if `folder`
    exists and is not a model folder (unless overwrite=True; see minilora.io.destination).
    """
    check_output_location(folder, "model", overwrite=overwrite, inputs=extra_files)
    dtype = str(dtype or np.dtype(model.dtype).name)
    if dtype not in FILE_DTYPES:
        raise MiniLoraError(f"cannot save as {dtype!r}; choose one of {', '.join(FILE_DTYPES)}")
    lora = model.adapters.param_names()
    tensors, sizes = {}, {}
    width = 2 if dtype in ("float16", "bfloat16") else np.dtype(dtype).itemsize
    for name in model.config.param_shapes():
        if name in lora:
            continue
        host = to_numpy(model.weight(name))
        with np.errstate(over="ignore"):                    # overflow becomes inf, refused just below
            stored = bf16_to_float32(bf16_bits(host)) if dtype == "bfloat16" else host.astype(dtype)
        if not np.all(np.isfinite(stored)):
            raise MiniLoraError(f"weight {name} is not finite as {dtype} (overflow or NaN); nothing written")
        tensors[name] = host if dtype == "bfloat16" else stored
        sizes[name] = host.size * width
    shards = _plan_shards(list(tensors), sizes, max_shard_bytes)
    for path in extra_files:
        if not os.path.isfile(path):
            raise MiniLoraError(f"{path}: file not found")
    with atomic_dir(folder, "model", overwrite=overwrite) as tmp:
        write_json(os.path.join(tmp, "config.json"), config_to_hf(model.config, dtype))
        for fname, names in shards.items():
            save_safetensors(os.path.join(tmp, fname), {n: tensors[n] for n in names},
                             dtype="bfloat16" if dtype == "bfloat16" else None)
        if len(shards) > 1:
            write_json(os.path.join(tmp, "model.safetensors.index.json"), {
                "metadata": {"total_size": sum(sizes.values())},
                "weight_map": {n: f for f, names in shards.items() for n in names}})
        for path in extra_files:
            with atomic_path(os.path.join(tmp, os.path.basename(path))) as t:
                shutil.copyfile(path, t)


def _plan_shards(names: list, sizes: dict, max_bytes) -> dict:
    """{file name: [tensor names]}: one model.safetensors, or greedy shards of <= max_bytes each."""
    if not max_bytes:
        return {"model.safetensors": names}
    groups, cur, cur_size = [], [], 0
    for n in names:
        if cur and cur_size + sizes[n] > max_bytes:
            groups.append(cur)
            cur, cur_size = [], 0
        cur.append(n)
        cur_size += sizes[n]
    groups.append(cur)
    if len(groups) == 1:
        return {"model.safetensors": names}
    k = len(groups)
    return {f"model-{i + 1:05d}-of-{k:05d}.safetensors": g for i, g in enumerate(groups)}
