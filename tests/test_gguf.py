"""GGUF in: names, shapes, dequantization and llama.cpp's q/k row order, against files written here.

The files are written the way llama.cpp's convert_hf_to_gguf writes them: names from the `gguf`
package's own tensor-name map, q/k rows permuted (an explicit index, not minilora's permute_qk),
shapes handed to gguf.GGUFWriter in NumPy order, blocks made by gguf.quants.quantize.
"""
import json
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

gguf = pytest.importorskip("gguf")

from minilora import from_pretrained, save_pretrained  # noqa: E402
from minilora.config import LlamaConfig  # noqa: E402
from minilora.errors import MiniLoraError  # noqa: E402
from minilora.io.gguf import gguf_name, hf_name, permute_qk, read_gguf, unpermute_qk  # noqa: E402
from minilora.layers.rope import rope_forward, rope_tables  # noqa: E402
from minilora.model import LlamaForCausalLM  # noqa: E402

T = gguf.GGMLQuantizationType
REF = os.path.join(os.path.dirname(__file__), "reference", "smollm2_logits.json")


def tiny_config(tied=True, **kw):
    base = dict(vocab_size=64, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, rope_theta=10000.0, rms_norm_eps=1e-5,
                tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    return LlamaConfig(**{**base, **kw})


def llama_cpp_order(n_rows, n_head):
    """Row indices of llama.cpp's q/k layout: head h's rows h*d + (0, d/2, 1, d/2 + 1, ...)."""
    d = n_rows // n_head
    within = [j for i in range(d // 2) for j in (i, d // 2 + i)]
    return np.array([h * d + j for h in range(n_head) for j in within])


def write_gguf(path, cfg, params, qtype=T.F32, arch="llama", drop=(), raw=None, meta=None, extra=None):
    """Write a model as convert_hf_to_gguf does; raw: {HF name: (bytes array, qtype)} stored as given;
    extra: {GGUF name: float32 array} added as is."""
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers + 1)   # + 1: a stray layer
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(cfg.vocab_size)])
    w.add_bos_token_id(cfg.bos_token_id)
    w.add_eos_token_id(cfg.eos_token_id)
    w.add_pad_token_id(cfg.pad_token_id)
    for k, v in (meta or {}).items():
        w.add_key_value(k, v[0], v[1])
    for name, arr in params.items():
        if name in drop:
            continue
        gname = names.get_name(name, try_suffixes=(".weight", ".bias"))
        arr = np.asarray(arr, np.float32)
        heads = {"q_proj": cfg.num_attention_heads, "k_proj": cfg.num_key_value_heads}.get(name.split(".")[-2])
        if heads:
            arr = arr[llama_cpp_order(arr.shape[0], heads)]
        if raw and name in raw:
            w.add_tensor(gname, raw[name][0], raw_dtype=raw[name][1])
        elif arr.ndim == 1 or qtype == T.F32:                  # llama.cpp keeps norms in F32
            w.add_tensor(gname, arr)
        elif qtype == T.F16:
            w.add_tensor(gname, arr.astype(np.float16))
        else:
            w.add_tensor(gname, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
    for gname, arr in (extra or {}).items():
        w.add_tensor(gname, np.asarray(arr, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


# ---- the permutation ---------------------------------------------------------------------------
def test_permute_qk_is_llama_cpps_row_order():
    w = np.arange(3 * 8 * 5, dtype=np.float64).reshape(24, 5)     # 3 heads of 8 rows, 5 columns
    np.testing.assert_array_equal(permute_qk(w, 3), w[llama_cpp_order(24, 3)])


@given(n_head=st.integers(1, 5), half=st.integers(1, 6), tail=st.sampled_from([(), (3,), (2, 4)]))
def test_unpermute_inverts_permute(n_head, half, tail):
    w = np.random.default_rng(n_head * 7 + half).standard_normal((n_head * 2 * half, *tail))
    np.testing.assert_array_equal(unpermute_qk(permute_qk(w, n_head), n_head), w)
    np.testing.assert_array_equal(permute_qk(unpermute_qk(w, n_head), n_head), w)


def test_permute_refuses_rows_that_do_not_split_into_heads():
    with pytest.raises(MiniLoraError, match="heads"):
        permute_qk(np.zeros((10, 4)), 3)
    with pytest.raises(MiniLoraError, match="even"):
        unpermute_qk(np.zeros((9, 4)), 3)


def test_interleaved_rope_on_permuted_rows_equals_rotate_half():
    """Why the permutation exists: llama.cpp's pairs (2i, 2i+1) on permuted q = rotate_half's (i, i+d/2)."""
    rng = np.random.default_rng(0)
    nh, d, c, t = 3, 8, 12, 5
    w, x = rng.standard_normal((nh * d, c)), rng.standard_normal((t, c))
    cos, sin = rope_tables(t, d, 10000.0, np, "float64")                       # (T, d)
    q = (x @ w.T).reshape(t, nh, d).transpose(1, 0, 2)[None]                    # (1, nh, T, d)
    hf, _ = rope_forward(q, cos, sin)                                           # rotate_half layout
    qp = (x @ permute_qk(w, nh).T).reshape(t, nh, d)                            # (T, nh, d) llama.cpp rows
    a, b = qp[..., 0::2], qp[..., 1::2]                                         # (T, nh, d/2) pairs
    ang = np.arange(t)[:, None, None] * (1.0 / 10000.0 ** (np.arange(0, d, 2) / d))  # (T, 1, d/2)
    inter = np.stack([a * np.cos(ang) - b * np.sin(ang), a * np.sin(ang) + b * np.cos(ang)], -1).reshape(t, nh, d)
    hf_rows = hf[0].transpose(1, 0, 2).reshape(t, nh * d)                       # (T, nh*d)
    np.testing.assert_allclose(inter.reshape(t, nh * d), hf_rows[:, llama_cpp_order(nh * d, nh)], atol=1e-12)


def test_names_agree_with_the_gguf_packages_map():
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    for hf in tiny_config(tied=False).param_shapes():
        g = names.get_name(hf, try_suffixes=(".weight", ".bias"))
        assert hf_name(g) == hf and gguf_name(hf) == g


# ---- whole models ------------------------------------------------------------------------------
@pytest.mark.parametrize("tied", [True, False])
def test_f32_file_gives_the_original_logits(tmp_path, tied):
    cfg = tiny_config(tied=tied)
    model = LlamaForCausalLM.init(cfg, seed=1)
    path = write_gguf(tmp_path / "m.gguf", cfg, model.params)
    got = from_pretrained(path)                                   # minilora.from_pretrained dispatches on .gguf
    assert got.config.to_dict() == cfg.to_dict()
    ids = np.array([[1, 5, 9, 33, 60, 2, 7]])
    np.testing.assert_array_equal(got.forward(ids), model.forward(ids))
    save_pretrained(got, tmp_path / "hf")                         # GGUF -> Hugging Face folder
    np.testing.assert_array_equal(from_pretrained(str(tmp_path / "hf")).forward(ids), model.forward(ids))


@pytest.mark.parametrize("qtype,tol", [(T.Q8_0, 0.02), (T.Q4_0, 0.3), (T.Q4_1, 0.3), (T.F16, 1e-3), (T.BF16, 0.02)])
def test_quantized_file_gives_the_dequantized_models_logits(tmp_path, qtype, tol):
    cfg = tiny_config(tied=False)
    model = LlamaForCausalLM.init(cfg, seed=2)
    path = write_gguf(tmp_path / "m.gguf", cfg, model.params, qtype=qtype)
    # row-block quantization commutes with reordering rows, so the file holds dequant(quant(W)) per weight
    held = {k: v if v.ndim == 1 else gguf.quants.dequantize(gguf.quants.quantize(v, qtype), qtype)
            for k, v in model.params.items()}
    expect = LlamaForCausalLM(cfg, held)
    got = from_pretrained(path)
    ids = np.array([[1, 3, 8, 21, 55, 2]])
    np.testing.assert_array_equal(got.forward(ids), expect.forward(ids))
    scale = np.abs(model.forward(ids)).max()
    assert np.abs(got.forward(ids) - model.forward(ids)).max() < tol * scale   # and near the unquantized model


@pytest.mark.parametrize("qtype", [T.Q2_K, T.Q4_K, T.Q6_K])
def test_k_quant_tensors_are_dequantized_and_unpermuted(tmp_path, qtype):
    cfg = tiny_config()
    model = LlamaForCausalLM.init(cfg, seed=3)
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(0)
    raw, expect = {}, {}
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"):
        rows, cols = model.params[name].shape
        b = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
        scale_at = {T.Q2_K: (80, 82), T.Q4_K: (0, 2), T.Q6_K: (208,)}[qtype]   # the blocks' f16 scales
        for off in scale_at:
            b[:, :, off:off + 2] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
        b = b.reshape(rows, -1)
        raw[name] = (b, qtype)
        file_rows = gguf.quants.dequantize(b, qtype)                      # rows as the file holds them
        if "q_proj" in name:                                              # undo llama.cpp's row order
            file_rows = file_rows[np.argsort(llama_cpp_order(rows, cfg.num_attention_heads))]
        expect[name] = file_rows
    _, params, _ = read_gguf(write_gguf(tmp_path / "k.gguf", cfg, model.params, raw=raw))
    for name, want in expect.items():
        np.testing.assert_array_equal(params[name], want)


def test_dtype_float64_and_metadata(tmp_path):
    cfg = tiny_config()
    path = write_gguf(tmp_path / "m.gguf", cfg, LlamaForCausalLM.init(cfg).params)
    config, params, meta = read_gguf(path, dtype="float64")
    assert all(v.dtype == np.float64 for v in params.values())
    assert meta["general.architecture"] == "llama" and meta["tokenizer.ggml.tokens"][5] == "t5"
    assert (config.bos_token_id, config.eos_token_id) == (1, 2)


def llama3_rope_factors(head_dim, theta, factor=8.0, low=1.0, high=4.0, old_len=8192):
    """rope_freqs.weight as llama.cpp's converter computes it for a Llama 3.1 model."""
    out = []
    for freq in 1.0 / theta ** (np.arange(0, head_dim, 2) / head_dim):
        wavelen = 2 * np.pi / freq
        if wavelen < old_len / high:
            out.append(1.0)
        elif wavelen > old_len / low:
            out.append(factor)
        else:
            smooth = (old_len / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, np.float32)


def test_llama3_rope_freqs_become_llama3_rope_scaling(tmp_path):
    cfg = tiny_config(rope_theta=500000.0)
    params = LlamaForCausalLM.init(cfg).params
    factors = llama3_rope_factors(cfg.head_dim, cfg.rope_theta)
    assert len(set(factors.tolist())) > 2                          # all three regimes occur
    config, _, _ = read_gguf(write_gguf(tmp_path / "a.gguf", cfg, params, extra={"rope_freqs.weight": factors}))
    assert config.rope_scaling == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    odd = np.linspace(1, 3, cfg.head_dim // 2)
    with pytest.raises(MiniLoraError, match="not Llama 3's"):
        read_gguf(write_gguf(tmp_path / "b.gguf", cfg, params, extra={"rope_freqs.weight": odd}))


# ---- refusals ----------------------------------------------------------------------------------
def test_other_architecture_is_refused_naming_llama(tmp_path):
    cfg = tiny_config()
    path = write_gguf(tmp_path / "g.gguf", cfg, {}, arch="gpt2")
    with pytest.raises(MiniLoraError, match="'gpt2' is not supported.*'llama'"):
        read_gguf(path)


def test_missing_unexpected_and_misshapen_tensors_are_refused(tmp_path):
    cfg = tiny_config()
    params = LlamaForCausalLM.init(cfg).params
    with pytest.raises(MiniLoraError, match="missing tensor blk.1.ffn_up.weight"):
        read_gguf(write_gguf(tmp_path / "a.gguf", cfg, params, drop=("model.layers.1.mlp.up_proj.weight",)))
    more = {**params, "model.layers.2.mlp.up_proj.weight": np.zeros((512, 256), np.float32)}
    with pytest.raises(MiniLoraError, match="unexpected tensor blk.2.ffn_up.weight"):
        read_gguf(write_gguf(tmp_path / "b.gguf", cfg, more))
    bad = {**params, "model.layers.0.mlp.up_proj.weight": np.zeros((256, 256), np.float32)}
    with pytest.raises(MiniLoraError, match="blk.0.ffn_up.weight has shape"):
        read_gguf(write_gguf(tmp_path / "c.gguf", cfg, bad))


def test_not_a_gguf_file(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(MiniLoraError, match="not a valid GGUF file"):
        from_pretrained(str(tmp_path / "x.gguf"))
    with pytest.raises(MiniLoraError, match="file not found"):
        from_pretrained(str(tmp_path / "absent.gguf"))


# ---- the real model (skips unless `minilora fetch smollm2-135m-instruct` has run) ---------------
@pytest.fixture(scope="module")
def smollm2():
    from conftest import smollm2_gguf

    return from_pretrained(smollm2_gguf())


def test_smollm2_config_is_the_published_one(smollm2):
    c = smollm2.config
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size) == (30, 576, 1536)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (9, 3, 64)
    assert (c.vocab_size, c.rope_theta, c.tie_word_embeddings) == (49152, 100000.0, True)


def test_smollm2_matches_transformers_reference(smollm2):
    """Logits and greedy tokens against transformers reading the same GGUF (scripts/smollm2_reference.py)."""
    from minilora.inference.generate import generate

    if not os.path.exists(REF):
        pytest.skip("no tests/reference/smollm2_logits.json")
    with open(REF) as f:
        ref = json.load(f)
    ids = np.array(ref["input_ids"])
    logits = smollm2.forward(ids[None])[0]                                         # (T, V)
    last, scale = logits[-1], ref["last_logits_max_abs"]
    assert abs(float(np.abs(logits).max()) - ref["all_logits_max_abs"]) <= 1e-4 * ref["all_logits_max_abs"]
    np.testing.assert_allclose(last[:len(ref["last_logits_head"])], ref["last_logits_head"], rtol=0,
                               atol=1e-4 * scale)
    assert abs(float(np.abs(last).max()) - scale) <= 1e-4 * scale
    assert int(last.argmax()) == ref["last_argmax"]
    out = generate(smollm2, ids, len(ref["greedy_ids"]))
    assert [int(i) for i in out[len(ids):]] == ref["greedy_ids"]
