"""param_calc library: the seed's figures exactly, PEFT's matching rules, presets, inputs, memory.

The counts were also checked against transformers + PEFT (tests/test_param_calc_peft_oracle.py,
optional); the preset totals pinned below are the ones that check confirmed.
"""
import math
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilora.config import LlamaConfig
from param_calc.architectures import build_architecture
from param_calc.counting import count_lora, name_matches, pattern_key
from param_calc.errors import ParamCalcError
from param_calc.explain import explain_text
from param_calc.inputs import from_config_json, from_finlora, from_preset
from param_calc.memory import adapter_file_bytes, base_weight_bytes, memory_estimate, safetensors_size
from param_calc.presets import PRESETS, preset_config, resolve_preset
from param_calc.shapes import llama_layer_linears, llama_linear_modules, llama_param_shapes
from param_calc.shortcuts import rounded_ratio, square_formula

DATA = os.path.join(os.path.dirname(__file__), "data", "param_calc")
QKV = ["q_proj", "k_proj", "v_proj"]


def arch(name):
    return build_architecture(preset_config(name), name)


# --- the seed document ---------------------------------------------------------------------------

def test_seed_llama_70b_numbers_exactly():
    c = count_lora(arch("llama-3.1-70b"), 4, QKV)
    assert c.base_params == 70_553_706_496
    per = {r["module"]: r["params_per_module"] for r in c.rows()}
    assert per == {"self_attn.q_proj": 65_536, "self_attn.k_proj": 36_864, "self_attn.v_proj": 36_864}
    assert sum(per.values()) == 139_264
    assert c.lora_params == 139_264 * 80 == 11_141_120
    assert f"{c.ratio:,.1f}" == "6,332.7"
    assert c.peft_all_params == 70_553_706_496 + 11_141_120


def test_seed_rounded_ratio_and_square_formula():
    c = count_lora(arch("llama-3.1-70b"), 4, QKV)
    rr = rounded_ratio(c)
    assert (rr["base_rounded"], rr["lora_rounded"]) == ("70.6B", "11.14M")
    assert int(rr["rounded_ratio"]) == 6337 and round(rr["rounded_ratio"], -1) == 6340
    sq = square_formula(c)
    assert sq["formula_params"] == 2 * 240 * 8192 * 4 == 15_728_640
    assert sq["difference"] == 15_728_640 - 11_141_120
    assert [ns["module"] for ns in sq["non_square"]] == ["self_attn.k_proj", "self_attn.v_proj"]


def test_square_formula_is_exact_for_gpt3_as_the_paper_counts():
    c = count_lora(arch("gpt3-175b"), 4, ["q_proj", "v_proj"])
    assert c.lora_params == 2 * 192 * 12288 * 4 == square_formula(c)["formula_params"] == 18_874_368
    assert square_formula(c)["non_square"] == []


def test_explain_shows_seed_and_gpt3_figures():
    text = explain_text()
    for s in ["70,553,706,496", "11,141,120", "139,264", "6,332.7", "6,337", "~6,340", "15,728,640",
              "4,718,592", "37,748,736", "18,874,368", "35MB", "350GB", "10,000x"]:
        assert s in text, s


# --- presets and shapes --------------------------------------------------------------------------

# Totals that transformers' models report for these configs (checked by the PEFT oracle test).
BASE = {
    "llama-3.1-8b": 8_030_261_248, "llama-3.1-70b": 70_553_706_496, "llama-3.1-405b": 405_853_388_800,
    "llama-3.2-1b": 1_235_814_400, "llama-3.2-3b": 3_212_749_824, "mistral-7b": 7_241_732_096,
    "mistral-7b-v0.3": 7_248_023_552, "qwen2.5-7b": 7_615_616_512, "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200,
    "gpt3-175b": 174_604_259_328, "smollm2-135m": 134_515_008,
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_base_totals(name):
    assert arch(name).base_params == BASE[name]


def test_tied_embeddings_counted_once():
    a = arch("llama-3.2-1b")
    assert a.tied and "lm_head.weight" not in a.param_shapes
    untied = build_architecture({**preset_config("llama-3.2-1b"), "tie_word_embeddings": False})
    assert untied.base_params - a.base_params == 128256 * 2048


def test_qwen2_has_qkv_bias_but_no_o_proj_bias():
    shapes = arch("qwen2.5-7b").param_shapes
    p = "model.layers.0.self_attn."
    assert shapes[p + "q_proj.bias"] == (3584,) and shapes[p + "k_proj.bias"] == (512,)
    assert p + "v_proj.bias" in shapes and p + "o_proj.bias" not in shapes
    assert "model.layers.0.mlp.up_proj.bias" not in shapes


def test_llama_shape_contract_unchanged():
    cfg = LlamaConfig()
    assert llama_layer_linears(cfg)["self_attn.k_proj"] == (64, 32, False)
    assert list(llama_linear_modules(cfg))[-1] == "lm_head"
    assert llama_param_shapes(cfg)["lm_head.weight"] == (259, 64)


@pytest.mark.parametrize("given_name,expected", [
    ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"),
    ("NousResearch/Meta-Llama-3.1-8B-Instruct", "llama-3.1-8b"),
    ("LLAMA-3.1-70B", "llama-3.1-70b"), ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b"),
    ("mistralai/Mistral-7B-Instruct-v0.3", "mistral-7b-v0.3"), ("openai-community/gpt2", "gpt2"),
    ("gpt2-small", "gpt2"), ("GPT-3", "gpt3-175b"), ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m"),
    ("smollm2-135m-instruct", "smollm2-135m"),
])
def test_resolve_preset(given_name, expected):
    assert resolve_preset(given_name) == expected


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ParamCalcError, match="unknown model 'llama-9b'.*llama-3.1-8b"):
        resolve_preset("llama-9b")


# --- PEFT's matching rules -----------------------------------------------------------------------

def test_suffix_matching_like_peft():
    assert name_matches("transformer.h.0.attn.c_proj", ["c_proj"])
    assert name_matches("transformer.h.0.mlp.c_proj", ["c_proj"])
    assert name_matches("transformer.h.0.attn.c_proj", ["attn.c_proj"])
    assert not name_matches("transformer.h.0.mlp.c_proj", ["attn.c_proj"])
    assert not name_matches("model.layers.0.self_attn.q_proj", ["proj"])        # whole components only
    assert name_matches("lm_head", ["lm_head"])
    assert name_matches("model.layers.3.self_attn.q_proj", r".*\.3\.self_attn\.q_proj")
    assert not name_matches("model.layers.13.self_attn.q_proj", r".*\.3\.self_attn\.q_proj")


def test_gpt2_c_proj_adapts_attention_and_mlp():
    c = count_lora(arch("gpt2"), 4, ["c_proj"])
    rows = {r["module"]: r for r in c.rows()}
    assert set(rows) == {"attn.c_proj", "mlp.c_proj"}
    assert rows["attn.c_proj"]["params_per_module"] == 4 * (768 + 768)
    assert rows["mlp.c_proj"]["params_per_module"] == 4 * (3072 + 768)
    assert len(c.adapted) == 24


def test_all_linear_leaves_out_the_head_and_embeddings():
    c = count_lora(arch("llama-3.1-8b"), 8, "all-linear")
    names = {a.module.group for a in c.adapted}
    assert names == {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
    assert len(c.adapted) == 7 * 32
    assert count_lora(arch("gpt2"), 8, "all-linear").lora_params == 12 * 8 * (
        (768 + 2304) + (768 + 768) + (768 + 3072) + (3072 + 768))


def test_default_targets_are_peft_defaults():
    assert {a.module.group for a in count_lora(arch("mistral-7b"), 8).adapted} == {"self_attn.q_proj",
                                                                                   "self_attn.v_proj"}
    assert {a.module.group for a in count_lora(arch("gpt2"), 8).adapted} == {"attn.c_attn"}


def test_full_path_target_adapts_one_module():
    c = count_lora(arch("llama-3.1-8b"), 4, ["model.layers.5.self_attn.q_proj"])
    assert [a.module.name for a in c.adapted] == ["model.layers.5.self_attn.q_proj"]


def test_rank_pattern_first_matching_key_wins():
    keys = ["layers.0.self_attn.q_proj", "q_proj"]
    assert pattern_key(keys, "model.layers.0.self_attn.q_proj") == "layers.0.self_attn.q_proj"
    assert pattern_key(keys, "model.layers.10.self_attn.q_proj") == "q_proj"
    assert pattern_key(keys, "model.layers.1.mlp.up_proj") == "model.layers.1.mlp.up_proj"
    c = count_lora(arch("llama-3.2-1b"), 8, ["q_proj", "v_proj"], {"layers.0.self_attn.q_proj": 2, "q_proj": 16})
    ranks = {a.module.name: a.rank for a in c.adapted}
    assert ranks["model.layers.0.self_attn.q_proj"] == 2
    assert ranks["model.layers.1.self_attn.q_proj"] == 16
    assert ranks["model.layers.0.self_attn.v_proj"] == 8


def test_exclude_and_dora():
    base = count_lora(arch("llama-3.1-8b"), 4, "all-linear")
    ex = count_lora(arch("llama-3.1-8b"), 4, "all-linear", exclude=["down_proj"])
    assert base.lora_params - ex.lora_params == 32 * 4 * (14336 + 4096)
    dora = count_lora(arch("llama-3.1-8b"), 4, ["q_proj", "k_proj"], dora=True)
    plain = count_lora(arch("llama-3.1-8b"), 4, ["q_proj", "k_proj"])
    assert dora.lora_params - plain.lora_params == 32 * (4096 + 1024)


def test_embedding_target_counts_r_times_vocab_plus_dim():
    c = count_lora(arch("llama-3.2-1b"), 4, ["embed_tokens"])
    assert c.lora_params == 4 * (128256 + 2048)


@pytest.mark.parametrize("targets", [["q_proj", "nope"], ["mlp"], ["input_layernorm"], ["c_attn"]])
def test_unknown_target_is_an_error(targets):
    with pytest.raises(ParamCalcError, match="matches no linear or embedding module"):
        count_lora(arch("llama-3.1-8b"), 4, targets)


@pytest.mark.parametrize("rank", [0, -1, 2.5, True])
def test_bad_rank_is_an_error(rank):
    with pytest.raises(ParamCalcError, match="positive integer"):
        count_lora(arch("gpt2"), rank, ["c_attn"])


def test_trainable_percent_is_peft_formula():
    c = count_lora(arch("gpt2"), 8, ["c_attn"])
    assert c.trainable_percent == 100 * c.lora_params / (c.base_params + c.lora_params)


@given(h_mult=st.integers(1, 4), heads=st.sampled_from([2, 4]), kv_div=st.sampled_from([1, 2]),
       inter=st.integers(8, 40), layers=st.integers(1, 3), vocab=st.integers(10, 60), tied=st.booleans(),
       r=st.integers(1, 6), targets=st.sampled_from([["q_proj"], ["k_proj", "v_proj"], "all-linear",
                                                     ["mlp.down_proj", "o_proj"], ["lm_head"]]))
def test_counts_equal_minilora_config_shapes(h_mult, heads, kv_div, inter, layers, vocab, tied, r, targets):
    """For random small Llama configs: the base count is the sum of the sizes of the arrays the
    minilora model allocates (LlamaConfig.param_shapes), and LoRA is r*(in+out) per matched linear."""
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=heads * 4 * h_mult, intermediate_size=inter,
                      num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=heads // kv_div, tie_word_embeddings=tied)
    d = {k: getattr(cfg, k) for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                      "num_attention_heads", "num_key_value_heads", "tie_word_embeddings",
                                      "head_dim")}
    a = build_architecture({"model_type": "llama", **d})
    sizes = 0
    for shape in cfg.param_shapes().values():
        n = 1
        for s in shape:
            n *= s
        sizes += n
    assert a.base_params == sizes
    chosen = {name: dims for name, dims in cfg.linear_modules().items()
              if (name != "lm_head" if targets == "all-linear" else name_matches(name, targets))}
    if r > min(min(dims) for dims in chosen.values()):          # both sides refuse such a rank
        with pytest.raises(ParamCalcError, match="exceeds min"):
            count_lora(a, r, targets)
        return
    want = sum(r * (fin + fout) for fin, fout in chosen.values())
    assert count_lora(a, r, targets).lora_params == want


# --- inputs --------------------------------------------------------------------------------------

def test_config_json_inputs_match_presets():
    pairs = [("llama_3_2_1b_config.json", "llama-3.2-1b"), ("gpt2_config.json", "gpt2"),
             ("qwen2_config.json", "qwen2.5-7b"), ("mistral_config.json", "mistral-7b")]
    for fname, preset in pairs:
        src = from_config_json(os.path.join(DATA, fname))
        assert src.arch.base_params == BASE[preset], fname
        assert src.arch.param_shapes == arch(preset).param_shapes


@pytest.mark.parametrize("cfg,field", [
    ({"model_type": "falcon"}, "model_type"), ({"hidden_size": 8}, "model_type"),
    ({"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
      "vocab_size": 10}, "intermediate_size"),
    ({"model_type": "gpt2", "n_embd": 8, "n_layer": 1, "n_head": 2, "vocab_size": 10}, "n_positions"),
    ({"model_type": "llama", "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 0,
      "num_attention_heads": 2, "vocab_size": 10}, "num_hidden_layers"),
    ({"model_type": "llama", "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
      "num_attention_heads": 4, "num_key_value_heads": 3, "vocab_size": 10}, "num_key_value_heads"),
    ({"model_type": "qwen2", "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
      "num_attention_heads": 2, "vocab_size": "10"}, "vocab_size"),
])
def test_config_errors_name_the_field(cfg, field):
    with pytest.raises(ParamCalcError, match=repr(field)):
        build_architecture(cfg)


def test_finlora_run_maps_to_preset_and_settings():
    src = from_finlora(os.path.join(DATA, "finetune_configs.json"), "sentiment_llama_3_1_8b_8bits_r8")
    assert src.arch.name == "llama-3.1-8b"
    assert (src.rank, src.alpha, src.quant_bits) == (8, 16, 8)
    c = count_lora(src.arch, src.rank, src.targets)
    assert c.lora_params == 32 * 8 * ((4096 + 4096) + 2 * (4096 + 1024)) == 4_718_592


@pytest.mark.parametrize("run,field", [("broken_unknown_base", "base_model"),
                                       ("broken_quant_bits", "quant_bits"), ("broken_rank", "lora_r")])
def test_finlora_errors_name_the_field(run, field):
    with pytest.raises(ParamCalcError, match=field):
        from_finlora(os.path.join(DATA, "finetune_configs.json"), run)


def test_finlora_needs_a_run_when_several():
    with pytest.raises(ParamCalcError, match="choose one with --run"):
        from_finlora(os.path.join(DATA, "finetune_configs.json"), None)


# --- memory and the adapter file -----------------------------------------------------------------

def test_safetensors_size_matches_recorded_files():
    """Sizes safetensors 0.8 wrote for these tensors (recorded from real files)."""
    meta = {"format": "pt"}
    assert safetensors_size([("x.lora_A.weight", (2, 3))], "fp32", meta) == 136
    assert safetensors_size([("b.lora_B.weight", (10, 4)), ("a.lora_A.weight", (4, 300))], "fp32", meta) == 5152
    assert safetensors_size([("m.lora_A.weight", (8, 4096)), ("m.lora_B.weight", (1024, 8))], "bf16", meta) == 82120
    assert safetensors_size([("x", (3,))]) == 76


def test_memory_estimate_components():
    c = count_lora(arch("llama-3.1-70b"), 4, QKV)
    m = memory_estimate(c, 16, "fp32", "adamw")
    assert m["base_weights"] == 2 * 70_553_706_496
    assert m["lora_weights"] == m["lora_gradients"] == 4 * 11_141_120
    assert m["optimizer_states"] == 8 * 11_141_120
    assert m["total"] == m["base_weights"] + 16 * 11_141_120
    assert m["adapter_file"] == adapter_file_bytes(c) > 4 * 11_141_120
    b16, b8, b4 = (base_weight_bytes(c, q) for q in (16, 8, 4))
    assert b16 > b8 > b4 > b16 / 4
    assert memory_estimate(c, 16, "bf16", "adamw-8bit")["optimizer_states"] == 2 * 11_141_120


def test_from_preset_carries_hf_id():
    assert from_preset("llama-3.1-70b").hf_id == "meta-llama/Llama-3.1-70B"


def test_smollm2_preset_equals_the_gguf_model():
    """The preset's shapes and counts are those of the model minilora loads from the cached GGUF
    (its header: config and tensor shapes, no data read); skips unless the model was fetched."""
    pytest.importorskip("gguf")
    from conftest import smollm2_gguf

    from minilora.io.gguf import hf_name, read_gguf_header

    path = smollm2_gguf()
    config, shapes, _ = read_gguf_header(path)
    a = arch("smollm2-135m")
    gguf_shapes = {hf_name(n): s for n, (s, _) in shapes.items() if n != "rope_freqs.weight"}
    assert gguf_shapes == a.param_shapes and "lm_head.weight" not in gguf_shapes       # tied
    assert sum(math.prod(s) for s in gguf_shapes.values()) == a.base_params == 134_515_008
    for key, value in preset_config("smollm2-135m").items():
        if key != "model_type":
            assert getattr(config, key) == value, key
    adapted = config.linear_modules()           # minilora's {module: (in, out)}: LoRA r=8 on q and v
    ours = sum(8 * (i + o) for m, (i, o) in adapted.items() if m.endswith(("q_proj", "v_proj")))
    assert count_lora(a, 8, ["q_proj", "v_proj"]).lora_params == ours == 30 * 8 * (576 + 576 + 576 + 192)
