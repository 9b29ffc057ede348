"""GGUF block formats kept packed as a frozen base: dequantization against the `gguf` package, a
tiny GGUF file read with keep_quantized, gradients through the per-layer path, merges, formats."""
import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from test_gguf import T, tiny_config, write_gguf  # noqa: E402  (tests/ is on sys.path)

from minilora import from_pretrained  # noqa: E402
from minilora.adapters import LoraConfig, add_lora, merge_lora  # noqa: E402
from minilora.errors import MiniLoraError  # noqa: E402
from minilora.io.gguf import read_gguf  # noqa: E402
from minilora.model import LlamaForCausalLM  # noqa: E402
from minilora.projections import group_backward, group_forward  # noqa: E402
from minilora.quant import GGUFBlocks, NF4Tensor, dequantize, format_of, nbytes, quantize_as  # noqa: E402
from minilora.quant.gguf_blocks import BLOCK_BYTES, from_packed, quantize  # noqa: E402

QTYPES = ["Q8_0", "Q4_0", "Q4_1"]


@pytest.mark.parametrize("qtype", QTYPES)
def test_dequantize_is_bit_identical_to_the_gguf_package(qtype):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((48, 96)) * 0.1).astype(np.float32)
    data = gguf.quants.quantize(w, gguf.GGMLQuantizationType[qtype])               # the reference blocks
    qt = from_packed(data, qtype, w.shape)
    oracle = gguf.quants.dequantize(data, gguf.GGMLQuantizationType[qtype]).reshape(w.shape)
    np.testing.assert_array_equal(dequantize(qt), oracle)
    np.testing.assert_array_equal(dequantize(qt, "float64").astype(np.float32), oracle)
    assert nbytes(qt) == data.nbytes == 48 * 96 // 32 * BLOCK_BYTES[qtype]
    np.testing.assert_array_equal(quantize(w, qtype).data, data)


@pytest.mark.parametrize("qtype", QTYPES)
def test_random_bytes_decode_as_the_gguf_package_decodes_them(qtype):
    """Every byte pattern (any nibble, any sign; scales kept finite) decodes as gguf.quants does."""
    rng = np.random.default_rng(1)
    nb = 6
    data = rng.integers(0, 256, (4, nb, BLOCK_BYTES[qtype]), dtype=np.uint8)
    n_scales = 2 if qtype == "Q4_1" else 1                                        # d (and m) as float16
    scales = rng.uniform(-2, 2, (4, nb, n_scales)).astype(np.float16)             # finite, either sign
    data[..., :2 * n_scales] = scales.view(np.uint8)
    data = data.reshape(4, -1)
    oracle = gguf.quants.dequantize(data, gguf.GGMLQuantizationType[qtype]).reshape(4, nb * 32)
    np.testing.assert_array_equal(dequantize(from_packed(data, qtype, (4, nb * 32))), oracle)


def test_from_packed_and_quantize_refuse_bad_input():
    with pytest.raises(MiniLoraError, match="uint8 array"):
        from_packed(np.zeros((2, 30), np.uint8), "Q4_1", (2, 64))
    with pytest.raises(MiniLoraError, match="not kept packed"):
        from_packed(np.zeros((2, 30), np.uint8), "Q5_K", (2, 64))
    with pytest.raises(MiniLoraError, match="multiple of 32"):
        quantize(np.zeros((2, 40), np.float32), "Q8_0")
    with pytest.raises(MiniLoraError, match="stores 4 bits"):
        quantize_as(np.zeros((2, 64), np.float32), "q4_1", 8)
    with pytest.raises(MiniLoraError, match="unknown quantization format"):
        quantize_as(np.zeros((2, 64), np.float32), "q3", 4)


@pytest.fixture(scope="module")
def q4_file(tmp_path_factory):
    cfg = tiny_config(tied=False)
    model = LlamaForCausalLM.init(cfg, seed=4)
    path = write_gguf(tmp_path_factory.mktemp("g") / "m.gguf", cfg, model.params, qtype=T.Q4_1)
    return path


def test_keep_quantized_holds_the_files_blocks_with_q_k_rows_unpermuted(q4_file):
    cfg, floats, _ = read_gguf(q4_file)
    _, kept, _ = read_gguf(q4_file, keep_quantized=True)
    layer_weights = [k for k in floats if ".layers." in k and k.endswith("_proj.weight")]
    assert len(layer_weights) == 7 * cfg.num_hidden_layers
    for k, v in kept.items():
        if k in layer_weights:
            assert isinstance(v, GGUFBlocks) and v.qtype == "Q4_1"
            np.testing.assert_array_equal(dequantize(v), floats[k])     # unpermuted exactly as the floats
        else:
            np.testing.assert_array_equal(v, floats[k])


def test_training_over_kept_blocks_equals_training_over_the_dequantized_base(q4_file):
    """Loss and every LoRA gradient through the per-layer dequantize path equal those through a
    base dequantized once to float32; the backward dequantizes again, keeping no float copy."""
    ids = np.random.default_rng(5).integers(0, 64, (2, 12))
    models = [from_pretrained(q4_file), from_pretrained(q4_file, quant="gguf")]
    assert not models[0].quantized and len(models[1].quantized) == 14
    out = []
    for m in models:
        add_lora(m, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]), seed=0)
        for name in sorted(m.trainable):
            if name.endswith("lora_B.weight"):
                m.params[name][...] = np.random.default_rng(len(name)).standard_normal(m.params[name].shape) * 0.05
        out.append(m.loss_and_grads(ids, ids, train=False))
    (l0, g0), (l1, g1) = out
    assert set(g0) == set(g1) == models[0].trainable
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], rtol=1e-5, atol=1e-7 * np.abs(g0[k]).max())


def test_caches_of_a_quantized_projection_hold_no_weight(q4_file):
    m = from_pretrained(q4_file, quant="gguf")
    add_lora(m, LoraConfig(r=2, target_modules=["q_proj"]))
    p = "model.layers.0."
    x = np.ones((1, 3, m.config.hidden_size), np.float32)
    qkv = [p + "self_attn.q_proj", p + "self_attn.k_proj", p + "self_attn.v_proj"]
    _, c = group_forward(m, x, qkv)
    assert c.w is None and c.loras[0] is not None                 # LoRA on q_proj, no dequantized base kept
    m_in = np.ones((1, 3, m.config.intermediate_size), np.float32)
    y, c = group_forward(m, m_in, [p + "mlp.down_proj"])
    assert c.w is None
    dx = group_backward(m, np.ones_like(y), c, {})                 # the backward dequantizes again
    w = m.weight(p + "mlp.down_proj.weight")
    assert np.allclose(dx, np.ones_like(y) @ w, rtol=1e-6, atol=1e-6)
    f = from_pretrained(q4_file)                                   # a float base keeps its stack
    assert group_forward(f, x, qkv)[1].w is not None


def test_quant_gguf_refuses_a_folder(tmp_path):
    with pytest.raises(MiniLoraError, match="not one"):
        from_pretrained(str(tmp_path), quant="gguf")
    with pytest.raises(MiniLoraError, match="quant must be"):
        from_pretrained(str(tmp_path), quant="nf4")


@pytest.mark.parametrize("fmt,bits", [("absmax", 4), ("nf4", 4), ("q8_0", 8), ("q4_0", 4), ("q4_1", 4)])
def test_every_format_quantizes_a_base_and_merges_by_requantizing(fmt, bits):
    cfg = tiny_config()
    m = LlamaForCausalLM.init(cfg, seed=6)
    ref = LlamaForCausalLM.init(cfg, seed=6)
    m.quantize_base(bits, fmt=fmt)
    assert {format_of(qt) for qt in m.quantized.values()} == {fmt}
    w_float = sum(ref.params[k].nbytes for k in m.quantized)
    w_quant = sum(nbytes(qt) for qt in m.quantized.values())
    assert w_quant < (0.3 if bits == 8 else 0.17) * w_float
    add_lora(m, LoraConfig(r=2, target_modules=["q_proj"]))
    report = merge_lora(m)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert format_of(m.quantized[name]) == fmt and set(report) == {n for n in m.quantized if "q_proj" in n}
    if fmt == "nf4":
        assert isinstance(m.quantized[name], NF4Tensor)


def test_finlora_quant_format_key(tmp_path, q4_file):
    from minilora.quant import FORMATS
    from minilora.runs.finlora import QUANT_FORMATS, parse_run
    from minilora.runs.recipes import load_model

    assert set(QUANT_FORMATS) == set(FORMATS) | {"gguf"}
    run = parse_run("r", {"base_model": q4_file, "quant_bits": 4, "quant_format": "nf4"}, training=False)
    assert {format_of(qt) for qt in load_model(run).quantized.values()} == {"nf4"}
    run = parse_run("r", {"base_model": q4_file, "quant_bits": 4, "quant_format": "gguf"}, training=False)
    assert {format_of(qt) for qt in load_model(run).quantized.values()} == {"q4_1"}
    assert parse_run("r", {"base_model": "b", "quant_bits": 4}, training=False).quant_format == "absmax"
    with pytest.raises(MiniLoraError, match="quant_format must be one of"):
        parse_run("r", {"base_model": "b", "quant_bits": 4, "quant_format": "int3"}, training=False)
    with pytest.raises(MiniLoraError, match="stores 8 bits, but quant_bits is 4"):
        parse_run("r", {"base_model": "b", "quant_bits": 4, "quant_format": "q8_0"}, training=False)


def test_resume_refuses_a_base_stored_in_another_format(tmp_path):
    from test_resume import CFG, EX, LCFG, TCFG

    from minilora.training import fit

    def model_in(fmt):
        m = LlamaForCausalLM.init(CFG, seed=3)
        m.quantize_base(4, fmt=fmt)
        add_lora(m, LCFG, seed=5)
        return m

    fit(model_in("absmax"), EX, TCFG, progress=False, checkpoint_dir=tmp_path / "ckpt")
    with pytest.raises(MiniLoraError, match=r"stored as \['absmax'\], this one is stored as \['nf4'\]"):
        fit(model_in("nf4"), EX, TCFG, progress=False, resume_from=tmp_path / "ckpt")
