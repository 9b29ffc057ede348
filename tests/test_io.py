"""Hugging Face folders: round trips (float32/16/64, bfloat16, shards), both RoPE spellings, clear errors.

The files transformers itself writes are checked in tests/test_interop_hf.py (optional oracle).
"""
import json
import os

import numpy as np
import pytest

from minilora.config import LlamaConfig
from minilora.errors import MiniLoraError
from minilora.io import (
    bf16_bits,
    bf16_to_float32,
    folder_dtype,
    from_pretrained,
    load_safetensors,
    save_pretrained,
    save_safetensors,
)
from minilora.io.hf_config import config_from_hf
from minilora.model import LlamaForCausalLM

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8}


def small_model(tied=False, dtype="float32", seed=0, **kw):
    cfg = dict(vocab_size=23, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=32, tie_word_embeddings=tied, rope_scaling=LLAMA3,
               bos_token_id=1, eos_token_id=2)
    cfg.update(kw)
    model = LlamaForCausalLM.init(LlamaConfig(**cfg), seed=seed, dtype=dtype, initializer_range=0.3)
    rng = np.random.default_rng(seed)
    for name, arr in model.params.items():
        if name.endswith("norm.weight"):
            arr += (0.2 * rng.standard_normal(arr.shape)).astype(dtype)
    return model


IDS = np.array([[1, 5, 9, 3, 22, 0, 7], [1, 2, 3, 4, 5, 6, 7]])


@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_identical_arrays_config_and_logits(tmp_path, tied):
    model = small_model(tied)
    save_pretrained(model, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert cfg["torch_dtype"] == "float32" and cfg["rope_scaling"] == LLAMA3 and cfg["tie_word_embeddings"] == tied
    assert ("lm_head.weight" in load_safetensors(tmp_path / "m" / "model.safetensors")) == (not tied)
    back = from_pretrained(tmp_path / "m")
    assert back.config.to_dict() == model.config.to_dict() | {"hidden_act": "silu"}
    assert set(back.params) == set(model.params)
    for name, arr in model.params.items():
        assert back.params[name].dtype == arr.dtype and np.array_equal(back.params[name], arr), name
    assert np.array_equal(back.forward(IDS), model.forward(IDS))


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_round_trip_numpy_dtypes(tmp_path, dtype):
    model = small_model(dtype="float64")
    save_pretrained(model, tmp_path / "m", dtype=dtype)
    assert folder_dtype(tmp_path / "m") == dtype
    back = from_pretrained(tmp_path / "m", dtype="float64")
    for name, arr in model.params.items():
        assert np.array_equal(back.params[name], arr.astype(dtype).astype("float64")), name


def test_bf16_bits_round_to_nearest_even():
    one_and_half_ulp = 1 + 2.0 ** -8              # exactly between bf16 1.0 and 1 + 2^-7: ties to even 1.0
    three_halves_ulp = 1 + 3 * 2.0 ** -8          # between 1 + 2^-7 (odd) and 1 + 2^-6 (even): to 1 + 2^-6
    x = np.array([1.0, -2.0, one_and_half_ulp, three_halves_ulp, 1 + 2.0 ** -7 + 2.0 ** -20, np.inf, 3.4e38,
                  np.nan], dtype=np.float32)
    bits = bf16_bits(x)
    assert [int(b) for b in bits[:7]] == [0x3F80, 0xC000, 0x3F80, 0x3F82, 0x3F81, 0x7F80, 0x7F80]
    assert np.isnan(bf16_to_float32(bits[7:]))[0]
    assert bf16_to_float32(np.array([0x3F80, 0x4049, 0xC000], np.uint16)).tolist() == [1.0, 3.140625, -2.0]


def test_bf16_file_round_trip(tmp_path):
    model = small_model()
    save_pretrained(model, tmp_path / "bf", dtype="bfloat16")
    assert folder_dtype(tmp_path / "bf") == "bfloat16"
    back = from_pretrained(tmp_path / "bf")
    for name, arr in model.params.items():
        want = bf16_to_float32(bf16_bits(arr))
        assert np.array_equal(back.params[name], want), name
        assert np.abs(want - arr).max() <= np.abs(arr).max() * 2.0 ** -8          # bf16 keeps 8 bits
    save_pretrained(back, tmp_path / "bf2", dtype="bfloat16")                     # exact on the second pass
    assert (tmp_path / "bf2" / "model.safetensors").read_bytes() == (tmp_path / "bf" / "model.safetensors").read_bytes()
    mixed = {"w": np.array([1.5, -3.0], np.float32), "step": np.array([7], np.int64)}
    save_safetensors(tmp_path / "x.safetensors", {"w": mixed["w"]}, dtype="bfloat16")
    assert load_safetensors(tmp_path / "x.safetensors")["w"].tolist() == [1.5, -3.0]


def test_sharded_round_trip(tmp_path):
    model = small_model(tied=True)
    save_pretrained(model, tmp_path / "s", max_shard_bytes=3000)
    files = sorted(os.listdir(tmp_path / "s"))
    shards = [f for f in files if f.endswith(".safetensors")]
    assert "model.safetensors" not in files and len(shards) > 2
    assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((tmp_path / "s" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(model.params) and set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in model.params.values())
    back = from_pretrained(tmp_path / "s")
    assert all(np.array_equal(back.params[n], a) for n, a in model.params.items())


def hf_dict(**kw):
    d = {"model_type": "llama", "vocab_size": 23, "hidden_size": 16, "intermediate_size": 24,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    d.update(kw)
    return d


def test_both_rope_spellings_give_the_same_config():
    old = config_from_hf(hf_dict(rope_theta=500000.0, rope_scaling=LLAMA3, torch_dtype="bfloat16"))
    new = config_from_hf(hf_dict(rope_parameters={**LLAMA3, "rope_theta": 500000.0}, dtype="bfloat16"))
    assert old.rope_theta == new.rope_theta == 500000.0
    assert old.rope_scaling == new.rope_scaling == LLAMA3
    assert old.to_dict() == new.to_dict()
    default_new = config_from_hf(hf_dict(rope_parameters={"rope_type": "default", "rope_theta": 1e4}))
    assert default_new.rope_scaling is None and default_new.rope_theta == 1e4
    legacy_type = config_from_hf(hf_dict(rope_scaling={**{k: v for k, v in LLAMA3.items() if k != "rope_type"},
                                                       "type": "llama3"}))
    assert legacy_type.rope_scaling["rope_type"] == "llama3"
    assert config_from_hf(hf_dict(num_key_value_heads=None)).num_key_value_heads == 4


def test_transformers5_config_folder_loads_like_the_old_one(tmp_path):
    model = small_model()
    save_pretrained(model, tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    cfg["rope_parameters"] = {**cfg.pop("rope_scaling"), "rope_theta": cfg.pop("rope_theta")}
    cfg["dtype"] = cfg.pop("torch_dtype")
    os.makedirs(tmp_path / "new")
    (tmp_path / "new" / "config.json").write_text(json.dumps(cfg))
    os.link(tmp_path / "old" / "model.safetensors", tmp_path / "new" / "model.safetensors")
    assert np.array_equal(from_pretrained(tmp_path / "new").forward(IDS), model.forward(IDS))


@pytest.mark.parametrize("change, message", [
    (dict(model_type="mistral"), "unsupported model_type 'mistral'"),
    (dict(model_type=None), "unsupported model_type None"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "unsupported rope scaling type 'yarn'"),
    (dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}), "'linear'"),
    (dict(rope_scaling={"rope_type": "llama3", "factor": 8.0}), "llama3 rope_scaling is missing"),
    (dict(hidden_act="gelu"), "hidden_act 'gelu'"),
    (dict(attention_bias=True), "attention_bias=true"),
    (dict(hidden_size=16.5), "hidden_size must be a positive integer"),
    (dict(num_key_value_heads=3), "must divide"),
])
def test_config_errors_name_the_problem(change, message):
    with pytest.raises(MiniLoraError, match=message.replace("(", r"\(")):
        config_from_hf(hf_dict(**change))


def test_missing_vocab_size_is_named():
    d = hf_dict()
    del d["vocab_size"]
    with pytest.raises(MiniLoraError, match="missing field.*vocab_size"):
        config_from_hf(d)


def test_folder_errors(tmp_path):
    model = small_model()
    save_pretrained(model, tmp_path / "m")
    with pytest.raises(MiniLoraError, match="not a folder"):
        from_pretrained(tmp_path / "nope")
    os.makedirs(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text((tmp_path / "m" / "config.json").read_text())
    with pytest.raises(MiniLoraError, match="no model.safetensors"):
        from_pretrained(tmp_path / "empty")
    (tmp_path / "empty" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(MiniLoraError, match="only PyTorch pickle"):
        from_pretrained(tmp_path / "empty")
    with pytest.raises(MiniLoraError, match="NumPy has no bfloat16"):
        from_pretrained(tmp_path / "m", dtype="bfloat16")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(MiniLoraError, match="not a valid safetensors file"):
        from_pretrained(tmp_path / "m")


def _write_tensors(folder, model, edit):
    tensors = {n: a.copy() for n, a in model.params.items()}
    edit(tensors)
    save_safetensors(os.path.join(folder, "model.safetensors"), tensors)


def test_weight_errors_name_the_weight(tmp_path):
    model = small_model()
    save_pretrained(model, tmp_path / "m")
    q = "model.layers.1.self_attn.q_proj.weight"
    _write_tensors(tmp_path / "m", model, lambda t: t.pop(q))
    with pytest.raises(MiniLoraError, match=f"missing weight {q}$"):
        from_pretrained(tmp_path / "m")
    _write_tensors(tmp_path / "m", model, lambda t: t.update({"model.layers.0.mlp.gate_proj.bias": np.zeros(24)}))
    with pytest.raises(MiniLoraError, match="unexpected weight model.layers.0.mlp.gate_proj.bias"):
        from_pretrained(tmp_path / "m")
    _write_tensors(tmp_path / "m", model, lambda t: t.update({q: np.zeros((16, 15), np.float32)}))
    with pytest.raises(MiniLoraError, match=r"q_proj.weight has shape \(16, 15\), config needs \(16, 16\)"):
        from_pretrained(tmp_path / "m")


def test_tied_checkpoint_with_a_head_copy_loads(tmp_path):
    model = small_model(tied=True)
    save_pretrained(model, tmp_path / "m")
    _write_tensors(tmp_path / "m", model,
                   lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"].copy()}))
    assert np.array_equal(from_pretrained(tmp_path / "m").forward(IDS), model.forward(IDS))


def test_non_finite_save_writes_nothing(tmp_path):
    model = small_model()
    save_pretrained(model, tmp_path / "m")
    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    model.params["model.layers.0.mlp.up_proj.weight"][0, 0] = 1e5          # finite in float32, inf in float16
    with pytest.raises(MiniLoraError, match="up_proj.weight is not finite as float16"):
        save_pretrained(model, tmp_path / "m", dtype="float16")
    model.params["model.norm.weight"][3] = np.nan
    with pytest.raises(MiniLoraError, match="model.norm.weight is not finite as float32"):
        save_pretrained(model, tmp_path / "m")
    with pytest.raises(MiniLoraError, match="nothing written"):
        save_pretrained(model, tmp_path / "fresh")
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m"]                              # no new or temporary folder
