"""Hugging Face folders: config.json + model.safetensors (or sharded), read and written.

Weights travel through the `safetensors` package. Files are always host NumPy arrays; a model on
CuPy is moved explicitly on save and load. Writes are atomic (see minilora.atomic).
"""
from __future__ import annotations

import json
import os

import numpy as np

from .atomic import atomic_dir, atomic_path
from .backend import asarray, get_xp, to_numpy
from .config import LlamaConfig
from .errors import MiniLoraError

SUPPORTED_MODEL_TYPES = ("llama",)
_DTYPE_NAMES = {"float32": np.float32, "float16": np.float16, "float64": np.float64}


def read_json(path) -> dict:
    """A JSON object from a file, with one clear error for a missing, unreadable or invalid file."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise MiniLoraError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MiniLoraError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise MiniLoraError(f"{path}: cannot read ({e.strerror})") from None
    if not isinstance(obj, dict):
        raise MiniLoraError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def config_from_hf(d: dict, where: str = "config.json") -> LlamaConfig:
    """LlamaConfig from a config.json dict (old rope_theta/rope_scaling or new rope_parameters)."""
    mt = d.get("model_type")
    if mt not in SUPPORTED_MODEL_TYPES:
        raise MiniLoraError(f"{where}: unsupported model_type {mt!r}; "
                            f"minilora reads {', '.join(SUPPORTED_MODEL_TYPES)}")
    required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    missing = [k for k in required if k not in d]
    if missing:
        raise MiniLoraError(f"{where}: missing field(s) {', '.join(missing)}")
    d = dict(d)
    rp = d.pop("rope_parameters", None)
    if isinstance(rp, dict):
        d.setdefault("rope_theta", rp.get("rope_theta", 10000.0))
        if rp.get("rope_type", "default") != "default":
            d["rope_scaling"] = {k: v for k, v in rp.items() if k != "rope_theta"}
    if d.get("num_key_value_heads") is None:
        d["num_key_value_heads"] = d["num_attention_heads"]
    for k in ("attention_bias", "mlp_bias"):
        if d.get(k):
            raise MiniLoraError(f"{where}: {k}=true is not supported by minilora's Llama")
    try:
        return LlamaConfig.from_dict(d)
    except (TypeError, ValueError) as e:
        raise MiniLoraError(f"{where}: {e}") from None


def config_to_hf(config: LlamaConfig, dtype) -> dict:
    d = config.to_dict()
    d.update(architectures=["LlamaForCausalLM"], model_type="llama", torch_dtype=np.dtype(dtype).name)
    if d.get("rope_scaling") is None:
        d.pop("rope_scaling", None)
    return {k: v for k, v in d.items() if v is not None or k.endswith("token_id")}


def save_safetensors(path, tensors: dict, metadata: dict | None = None):
    """Host arrays to a .safetensors file, atomically."""
    from safetensors.numpy import save_file

    host = {k: np.ascontiguousarray(to_numpy(v)) for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(host, tmp, metadata=metadata or {"format": "pt"})


def load_safetensors(path) -> dict:
    """{name: host array} from a .safetensors file; bfloat16 is widened to float32."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not os.path.exists(path):
        raise MiniLoraError(f"{path}: file not found")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        msg = str(e)
        if "bf16" in msg.lower() or "bfloat16" in msg.lower():
            return _load_with_bf16(path)
        raise MiniLoraError(f"{path}: not a valid safetensors file ({msg.splitlines()[0] if msg else e})") from None


def _load_with_bf16(path) -> dict:
    """Read a safetensors file by its header (8-byte length + JSON), widening bf16 to float32.

    NumPy has no bfloat16: a bf16 value is the top 16 bits of a float32, so shifting its bits
    left by 16 gives the exact float32.
    """
    kinds = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
             "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
    with open(path, "rb") as f:
        raw = f.read()
    try:
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + n])
    except (ValueError, UnicodeDecodeError):
        raise MiniLoraError(f"{path}: not a valid safetensors file (bad header)") from None
    data = memoryview(raw)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        if end > len(data):
            raise MiniLoraError(f"{path}: truncated (tensor {name} ends past the file)")
        buf = data[start:end]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        elif info["dtype"] in kinds:
            arr = np.frombuffer(buf, dtype=kinds[info["dtype"]]).copy()
        else:
            raise MiniLoraError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        out[name] = arr.reshape(info["shape"])
    return out


def load_weights(folder) -> dict:
    """All tensors of a Hugging Face folder: model.safetensors or the shards of its index."""
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(single):
        return load_safetensors(single)
    if os.path.exists(index):
        wm = read_json(index).get("weight_map")
        if not isinstance(wm, dict):
            raise MiniLoraError(f"{index}: missing 'weight_map'")
        out = {}
        for shard in sorted(set(wm.values())):
            out.update(load_safetensors(os.path.join(folder, shard)))
        return out
    raise MiniLoraError(f"{folder}: no model.safetensors or model.safetensors.index.json")


def from_pretrained(folder, dtype="float32", xp=None, seed: int = 0):
    """A LlamaForCausalLM from a Hugging Face Llama folder (weights cast to dtype, placed on xp)."""
    from .model import LlamaForCausalLM

    xp = get_xp("numpy") if xp is None else xp
    cfg_path = os.path.join(folder, "config.json")
    config = config_from_hf(read_json(cfg_path), cfg_path)
    tensors = load_weights(folder)
    expected = config.param_shapes()
    if config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)     # some writers keep the tied copy
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise MiniLoraError(f"{folder}: missing weight {missing[0]} (and {len(missing) - 1} more)"
                            if len(missing) > 1 else f"{folder}: missing weight {missing[0]}")
    extra = [k for k in tensors if k not in expected and not k.endswith("rotary_emb.inv_freq")]
    if extra:
        raise MiniLoraError(f"{folder}: unexpected weight {extra[0]}")
    params = {}
    for name, shape in expected.items():
        arr = tensors[name]
        if tuple(arr.shape) != tuple(shape):
            raise MiniLoraError(f"{folder}: weight {name} has shape {tuple(arr.shape)}, config needs {shape}")
        params[name] = asarray(arr.astype(dtype, copy=False), xp)
    return LlamaForCausalLM(config, params, seed=seed)


def save_pretrained(model, folder, dtype=None):
    """Write config.json + model.safetensors (base weights only; merged if the model is merged)."""
    dtype = np.dtype(dtype or model.dtype)
    lora = set(model._lora_names()) if model.lora else set()
    tensors = {}
    for name in model.config.param_shapes():
        if name in lora:
            continue
        tensors[name] = to_numpy(model.weight(name)).astype(dtype)
    with atomic_dir(folder) as tmp:
        from .atomic import write_json

        write_json(os.path.join(tmp, "config.json"), config_to_hf(model.config, dtype))
        save_safetensors(os.path.join(tmp, "model.safetensors"), tensors)
