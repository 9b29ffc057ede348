"""`minilora export-gguf`: a PEFT adapter as a GGUF LoRA adapter in llama.cpp's layout, read back
with the gguf package's own reader and undone with an independent index to the exact factors."""
import os

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from test_gguf import llama_cpp_order, tiny_config, write_gguf  # noqa: E402  (tests/ is on sys.path)

from minilora import from_pretrained  # noqa: E402
from minilora.adapters import LoraConfig, add_lora  # noqa: E402
from minilora.cli.main import main  # noqa: E402
from minilora.errors import MiniLoraError  # noqa: E402
from minilora.io.gguf_adapter import write_gguf_adapter  # noqa: E402
from minilora.io.peft import read_adapter_factors, save_adapter  # noqa: E402
from minilora.model import LlamaForCausalLM  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]


def _adapter(tmp_path, cfg, base, name="adapter", **lora):
    model = from_pretrained(base)
    add_lora(model, LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": TARGETS, **lora}), seed=1)
    rng = np.random.default_rng(2)
    for k in sorted(model.trainable):
        model.params[k][...] = rng.standard_normal(model.params[k].shape)      # B nonzero, A redrawn
    save_adapter(model, tmp_path / name)
    return str(tmp_path / name)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    cfg = tiny_config(tied=False)
    path = write_gguf(tmp_path_factory.mktemp("base") / "m.gguf", cfg, LlamaForCausalLM.init(cfg, seed=0).params)
    return cfg, path


def _field(reader, key):
    f = reader.fields[key]
    return bytes(f.parts[-1]).decode() if f.types[0] == gguf.GGUFValueType.STRING else f.parts[-1][0]


def test_exported_adapter_reads_back_to_the_exact_factors(tmp_path, base):
    cfg, path = base
    adapter = _adapter(tmp_path, cfg, path)
    info = write_gguf_adapter(adapter, path, tmp_path / "a.gguf")
    reader = gguf.GGUFReader(str(tmp_path / "a.gguf"))
    assert _field(reader, "general.type") == "adapter" and _field(reader, "adapter.type") == "lora"
    assert _field(reader, "general.architecture") == "llama" and _field(reader, "adapter.lora.alpha") == 8.0
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    factors = read_adapter_factors(adapter).modules
    got = {t.name: t for t in reader.tensors}
    assert len(got) == 2 * len(factors) == info["tensors"] == 2 * 5 * cfg.num_hidden_layers
    for module, (a, b, _) in factors.items():
        gname = names.get_name(module + ".weight", try_suffixes=(".weight",))
        ta, tb = got[gname + ".lora_a"], got[gname + ".lora_b"]
        assert ta.tensor_type == tb.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(ta.shape) == [a.shape[1], a.shape[0]] and list(tb.shape) == [b.shape[1], b.shape[0]]  # ne
        a_back = np.array(ta.data).reshape(a.shape)
        b_file = np.array(tb.data).reshape(b.shape)
        heads = {"q_proj": cfg.num_attention_heads, "k_proj": cfg.num_key_value_heads}.get(module.split(".")[-1])
        b_back = b_file
        if heads:                                                   # undo llama.cpp's row order
            b_back = np.empty_like(b_file)
            b_back[llama_cpp_order(b.shape[0], heads)] = b_file
            assert not np.array_equal(b_file, b)
        assert a_back.tobytes() == a.astype(np.float32).tobytes()   # bit for bit
        assert b_back.tobytes() == b.astype(np.float32).tobytes()


def test_the_update_matches_the_permuted_base(tmp_path, base):
    """B_file @ A_file is the update in the base file's own (permuted) row order."""
    cfg, path = base
    adapter = _adapter(tmp_path, cfg, path)
    write_gguf_adapter(adapter, path, tmp_path / "a.gguf")
    reader = gguf.GGUFReader(str(tmp_path / "a.gguf"))
    t = {x.name: np.array(x.data) for x in reader.tensors}
    a, b, _ = read_adapter_factors(adapter).modules["model.layers.1.self_attn.k_proj"]
    order = llama_cpp_order(b.shape[0], cfg.num_key_value_heads)
    np.testing.assert_array_equal(t["blk.1.attn_k.weight.lora_b"] @ t["blk.1.attn_k.weight.lora_a"], (b @ a)[order])


def test_rslora_writes_alpha_times_sqrt_r_and_mixed_alphas_are_refused(tmp_path, base):
    cfg, path = base
    rs = _adapter(tmp_path, cfg, path, "rs", use_rslora=True)
    write_gguf_adapter(rs, path, tmp_path / "rs.gguf")
    alpha = _field(gguf.GGUFReader(str(tmp_path / "rs.gguf")), "adapter.lora.alpha")
    assert alpha == np.float32(8 / np.sqrt(4) * 4)                  # llama.cpp's alpha / r == 8 / sqrt(4)
    mixed = _adapter(tmp_path, cfg, path, "mixed", alpha_pattern={"v_proj": 2})
    with pytest.raises(MiniLoraError, match="one alpha"):
        write_gguf_adapter(mixed, path, tmp_path / "m.gguf")
    assert not os.path.exists(tmp_path / "m.gguf")


def test_refuses_an_adapter_of_another_shape_and_an_existing_file(tmp_path, base):
    cfg, path = base
    other_cfg = tiny_config(tied=False, intermediate_size=384)
    other = write_gguf(tmp_path / "other.gguf", other_cfg, LlamaForCausalLM.init(other_cfg, seed=0).params)
    adapter = _adapter(tmp_path, other_cfg, other)
    with pytest.raises(MiniLoraError, match="do not fit"):
        write_gguf_adapter(adapter, path, tmp_path / "a.gguf")
    assert not os.path.exists(tmp_path / "a.gguf")
    (tmp_path / "x.gguf").write_bytes(b"keep")
    with pytest.raises(MiniLoraError, match="--force"):
        write_gguf_adapter(adapter, other, tmp_path / "x.gguf")
    assert (tmp_path / "x.gguf").read_bytes() == b"keep"
    write_gguf_adapter(adapter, other, tmp_path / "x.gguf", force=True)
    assert gguf.GGUFReader(str(tmp_path / "x.gguf")).tensors


def test_cli(tmp_path, base, capsys):
    cfg, path = base
    adapter = _adapter(tmp_path, cfg, path)
    out = str(tmp_path / "cli.gguf")
    assert main(["export-gguf", adapter, "--base", path, out]) == 0
    assert "10 module(s), 20 tensors, alpha 8" in capsys.readouterr().out
    assert main(["export-gguf", adapter, "--base", path, out]) == 2
    assert main(["export-gguf", adapter, "--base", str(tmp_path / "none.gguf"), out, "--force"]) == 2
    assert main(["export-gguf", str(tmp_path / "nope"), "--base", path, out, "--force"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("minilora: error:") for line in err)
    assert "exists" in err[0] and "not found" in err[1] and "not a folder" in err[2]


def test_smollm2_adapter_size_as_docs_quote(tmp_path):
    """docs/gguf.md: an r=8 q, k, v, o adapter of SmolLM2-135M (cached GGUF) exports to 3,702,944 bytes,
    and the file's Q4_1 layer weights kept packed take 63.3 MiB (20 bytes per 32 weights)."""
    from conftest import smollm2_gguf

    path = smollm2_gguf()
    from minilora.quant import nbytes

    model = from_pretrained(path, quant="gguf")
    n_lin = sum(q.shape[0] * q.shape[1] for q in model.quantized.values())
    assert len(model.quantized) == 7 * 30 and sum(nbytes(q) for q in model.quantized.values()) == n_lin // 32 * 20
    assert round(n_lin // 32 * 20 / 2**20, 1) == 63.3
    add_lora(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]), seed=0)
    save_adapter(model, tmp_path / "peft")                      # the folder name is the adapter's general.name
    info = write_gguf_adapter(tmp_path / "peft", path, tmp_path / "adapter.gguf")
    assert info["bytes"] == 3_702_944 and info["tensors"] == 240
    assert os.path.getsize(tmp_path / "peft" / "adapter_model.safetensors") == 3_717_656
