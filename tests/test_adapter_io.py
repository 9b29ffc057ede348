"""PEFT adapter files, named adapters (switch, disable, weighted combination) and `minilora merge`.

Loading in PEFT itself (and PEFT's files loading here) is checked in tests/test_interop_hf.py.
"""
import json
import os

import numpy as np
import pytest
from test_io import IDS, small_model  # tests/ is on sys.path (rootdir conftest)

from minilora.adapters import (
    LoraConfig,
    adapter_names,
    adapters_disabled,
    add_lora,
    delete_adapter,
    disable_adapters,
    enable_adapters,
    merge_lora,
    remove_lora,
    set_adapter,
    unmerge_lora,
)
from minilora.adapters.weighted import add_weighted_adapter
from minilora.cli import main
from minilora.errors import MiniLoraError
from minilora.io import from_pretrained, load_safetensors, save_pretrained, save_safetensors
from minilora.io.peft import PREFIX, load_adapter, save_adapter


def randomize_b(model, seed, scale=0.2, name=None):
    """Give B nonzero values (it starts at zero) so the adapter changes the output."""
    rng = np.random.default_rng(seed)
    factors = model.params if name in (None, model.adapters.active) else model.adapters.inactive[name].factors
    for n in sorted(factors):
        if n.endswith("lora_B.weight"):
            factors[n][...] = scale * rng.standard_normal(factors[n].shape)


def adapted(seed=0, dtype="float32", **lora_kw):
    model = small_model(dtype=dtype)
    kw = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    kw.update(lora_kw)
    add_lora(model, LoraConfig(**kw), seed=seed)
    randomize_b(model, seed + 100)
    return model


def test_save_writes_peft_files(tmp_path):
    model = adapted(rank_pattern={"down_proj": 2}, alpha_pattern={"v_proj": 3}, use_rslora=True,
                    init_lora_weights=True, lora_dropout=0.1)
    save_adapter(model, tmp_path / "a", base_model_name_or_path="some/base")
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM"
    assert (cfg["r"], cfg["lora_alpha"], cfg["lora_dropout"], cfg["bias"]) == (4, 8, 0.1, "none")
    assert cfg["target_modules"] == ["down_proj", "q_proj", "v_proj"] and cfg["use_rslora"] is True
    assert cfg["init_lora_weights"] is True and cfg["fan_in_fan_out"] is False
    assert cfg["base_model_name_or_path"] == "some/base"
    assert cfg["rank_pattern"] == {f"model.layers.{i}.mlp.down_proj": 2 for i in range(2)}
    assert cfg["alpha_pattern"] == {f"model.layers.{i}.self_attn.v_proj": 3.0 for i in range(2)}
    tensors = load_safetensors(tmp_path / "a" / "adapter_model.safetensors")
    assert len(tensors) == 2 * 3 * 2
    assert tensors[PREFIX + "model.layers.0.self_attn.q_proj.lora_A.weight"].shape == (4, 16)   # A (r, in)
    assert tensors[PREFIX + "model.layers.0.self_attn.v_proj.lora_B.weight"].shape == (8, 4)    # B (out, r)
    assert tensors[PREFIX + "model.layers.1.mlp.down_proj.lora_A.weight"].shape == (2, 24)


def test_round_trip_identical_arrays_and_logits(tmp_path):
    model = adapted(rank_pattern={"down_proj": 2}, alpha_pattern={"v_proj": 3}, use_rslora=True)
    save_adapter(model, tmp_path / "a")
    fresh = small_model()
    config = load_adapter(fresh, tmp_path / "a")
    assert config.use_rslora and fresh.adapters.active == "default"
    assert fresh.adapters.param_names() == model.adapters.param_names() and fresh.trainable == model.trainable
    assert {m: (lm.r, lm.alpha, lm.scale) for m, lm in fresh.adapters.modules.items()} == \
        {m: (lm.r, lm.alpha, lm.scale) for m, lm in model.adapters.modules.items()}
    for n in model.adapters.param_names():
        assert np.array_equal(fresh.params[n], model.params[n]), n
    assert np.array_equal(fresh.forward(IDS), model.forward(IDS))
    assert not np.allclose(fresh.forward(IDS), small_model().forward(IDS))     # the adapter does something


def test_keys_with_an_adapter_name_load(tmp_path):
    model = adapted()
    save_adapter(model, tmp_path / "a")
    path = tmp_path / "a" / "adapter_model.safetensors"
    t = load_safetensors(path)
    save_safetensors(path, {k.replace(".lora_A.weight", ".lora_A.default.weight")
                            .replace(".lora_B.weight", ".lora_B.default.weight"): v for k, v in t.items()})
    fresh = small_model()
    load_adapter(fresh, tmp_path / "a")
    assert np.array_equal(fresh.forward(IDS), model.forward(IDS))


def _rewrite(folder, edit):
    path = folder / "adapter_model.safetensors"
    t = {k: v.copy() for k, v in load_safetensors(path).items()}
    edit(t)
    save_safetensors(path, t)


def test_load_errors_name_the_key_and_leave_the_model_unchanged(tmp_path):
    save_adapter(adapted(), tmp_path / "a")
    key = PREFIX + "model.layers.1.self_attn.v_proj.lora_B.weight"
    fresh = small_model()
    base = fresh.forward(IDS)
    _rewrite(tmp_path / "a", lambda t: t.pop(key))
    with pytest.raises(MiniLoraError, match=f"missing key {key}$"):
        load_adapter(fresh, tmp_path / "a")
    save_adapter(adapted(), tmp_path / "a")
    extra = PREFIX + "model.layers.0.self_attn.k_proj.lora_A.weight"
    _rewrite(tmp_path / "a", lambda t: t.update({extra: np.zeros((4, 16), np.float32)}))
    with pytest.raises(MiniLoraError, match=f"unexpected key {extra}"):
        load_adapter(fresh, tmp_path / "a")
    save_adapter(adapted(), tmp_path / "a")
    _rewrite(tmp_path / "a", lambda t: t.update({key: np.zeros((8, 3), np.float32)}))
    with pytest.raises(MiniLoraError, match=rf"{key} has shape \(8, 3\), this model and adapter_config need \(8, 4\)"):
        load_adapter(fresh, tmp_path / "a")
    _rewrite(tmp_path / "a", lambda t: t.update({key: np.full((8, 4), np.inf, np.float32)}))
    with pytest.raises(MiniLoraError, match=f"{key} holds non-finite"):
        load_adapter(fresh, tmp_path / "a")
    assert adapter_names(fresh) == [] and not fresh.adapters.modules
    assert not fresh.adapters.param_names() & set(fresh.params)
    assert np.array_equal(fresh.forward(IDS), base)


@pytest.mark.parametrize("field, value, message", [
    ("peft_type", "IA3", "peft_type 'IA3' is not LORA"),
    ("use_dora", True, "use_dora=True is not supported"),
    ("modules_to_save", ["lm_head"], "modules_to_save"),
    ("init_lora_weights", "pissa", "init_lora_weights='pissa' is not supported"),
    ("target_modules", ["wq"], "target module\\(s\\) wq matched nothing"),
    ("r", 0, "rank r must be a positive integer"),
])
def test_config_errors_name_the_field(tmp_path, field, value, message):
    save_adapter(adapted(), tmp_path / "a")
    cfg_path = tmp_path / "a" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg[field] = value
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(MiniLoraError, match=message):
        load_adapter(small_model(), tmp_path / "a")


def test_named_adapters_switch_disable_delete(tmp_path):
    a = adapted(seed=1)
    save_adapter(a, tmp_path / "a")
    b = adapted(seed=2, r=2, target_modules="all-linear")
    save_adapter(b, tmp_path / "b")
    base_logits = small_model().forward(IDS)
    model = small_model()
    load_adapter(model, tmp_path / "a", adapter_name="first")
    load_adapter(model, tmp_path / "b", adapter_name="second")          # stored: PEFT does not activate it
    assert model.adapters.active == "first" and adapter_names(model) == ["first", "second"]
    assert np.array_equal(model.forward(IDS), a.forward(IDS))
    set_adapter(model, "second")
    assert model.trainable == b.adapters.param_names() and set(model.adapters.inactive) == {"first"}
    assert not any(k.startswith("model.layers.0.self_attn.k_proj.lora") for k in a.adapters.param_names())
    assert np.array_equal(model.forward(IDS), b.forward(IDS))
    with adapters_disabled(model):
        assert np.array_equal(model.forward(IDS), base_logits)            # the base, exactly
    assert np.array_equal(model.forward(IDS), b.forward(IDS))
    disable_adapters(model)
    assert np.array_equal(model.forward(IDS), base_logits)
    with pytest.raises(MiniLoraError, match="disabled"):
        merge_lora(model)
    enable_adapters(model)
    set_adapter(model, "first")
    assert np.array_equal(model.forward(IDS), a.forward(IDS))
    save_adapter(model, tmp_path / "b_again", adapter_name="second")    # an inactive one saves too
    assert json.loads((tmp_path / "b_again" / "adapter_config.json").read_text())["target_modules"] == "all-linear"
    merge_lora(model)
    for bad in (lambda: set_adapter(model, "second"), lambda: disable_adapters(model),
                lambda: delete_adapter(model, "first")):
        with pytest.raises(MiniLoraError, match="merged"):
            bad()
    unmerge_lora(model)
    with pytest.raises(MiniLoraError, match="already has an adapter named 'first'"):
        load_adapter(model, tmp_path / "a", adapter_name="first")
    with pytest.raises(MiniLoraError, match="no adapter named 'third'; the model has"):
        set_adapter(model, "third")
    delete_adapter(model, "first")
    assert model.adapters.active is None and adapter_names(model) == ["second"]
    assert np.allclose(model.forward(IDS), base_logits, rtol=0, atol=1e-5)   # unmerge restored W0 to rounding
    set_adapter(model, "second")
    remove_lora(model)
    assert adapter_names(model) == [] and set(model.params) == set(small_model().params)


def _delta(factors, lora, m):
    """s * B @ A of module m, in float64 (the test's own formula)."""
    a = factors[m + ".lora_A.weight"].astype(np.float64)
    b = factors[m + ".lora_B.weight"].astype(np.float64)
    return lora[m].scale * b @ a


def _two_adapters(r_b=2):
    model = small_model(dtype="float64")
    add_lora(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), seed=1, adapter_name="a")
    randomize_b(model, 10)
    add_lora(model, LoraConfig(r=r_b, lora_alpha=3, target_modules=["v_proj", "down_proj"], use_rslora=True),
             seed=2, adapter_name="b")
    randomize_b(model, 11, name="b")
    return model


def test_weighted_cat_is_exact():
    model = _two_adapters()
    a, b = (model.adapters.inactive.get(n) or _active(model) for n in ("a", "b"))
    assert add_weighted_adapter(model, ["a", "b"], [0.7, -1.3], "mix", combination_type="cat") == 6
    set_adapter(model, "mix")
    assert model.adapters.config.r == model.adapters.config.lora_alpha == 6
    for m in model.adapters.modules:
        want = np.zeros_like(_delta(model.params, model.adapters.modules, m))
        for w, st in ((0.7, a), (-1.3, b)):
            if m in st.lora:
                want += w * _delta(st.factors, st.lora, m)
        assert np.abs(_delta(model.params, model.adapters.modules, m) - want).max() < 1e-13, m
    assert set(model.adapters.modules) == set(a.lora) | set(b.lora)


def _active(model):
    from minilora.adapters import get_adapter

    return get_adapter(model, model.adapters.active)


def test_weighted_linear_follows_its_formula_and_needs_equal_ranks():
    with pytest.raises(MiniLoraError, match="'linear' needs equal ranks"):
        add_weighted_adapter(_two_adapters(r_b=2), ["a", "b"], [1.0, 1.0], "mix", combination_type="linear")
    model = _two_adapters(r_b=4)
    a, b = _active(model), model.adapters.inactive["b"]
    add_weighted_adapter(model, ["a", "b"], [0.5, -2.0], "mix", combination_type="linear")
    set_adapter(model, "mix")
    m = "model.layers.1.self_attn.v_proj"                     # adapted by both
    ca, cb = np.sqrt(0.5 * a.lora[m].scale), np.sqrt(2.0 * b.lora[m].scale)
    want_a = ca * a.factors[m + ".lora_A.weight"] - cb * b.factors[m + ".lora_A.weight"]
    want_b = ca * a.factors[m + ".lora_B.weight"] + cb * b.factors[m + ".lora_B.weight"]
    assert np.allclose(model.params[m + ".lora_A.weight"], want_a, rtol=1e-14, atol=0)
    assert np.allclose(model.params[m + ".lora_B.weight"], want_b, rtol=1e-14, atol=0)
    one = _two_adapters(r_b=4)                                # one adapter: an exact rescale
    add_weighted_adapter(one, ["b"], [0.25], "quarter", combination_type="cat")
    src = one.adapters.inactive["b"]
    set_adapter(one, "quarter")
    for m in one.adapters.modules:
        want = 0.25 * _delta(src.factors, src.lora, m)
        assert np.allclose(_delta(one.params, one.adapters.modules, m), want, rtol=1e-13)
    with pytest.raises(MiniLoraError, match="'svd' is not implemented"):
        add_weighted_adapter(one, ["b"], [1.0], "x", combination_type="svd")


# ---- minilora merge ---------------------------------------------------------------------------
def _base_and_adapter(tmp_path, big=None):
    """Base + adapter folders; big: A = 1 and B = big everywhere, so s*B@A = 2 * 4 * big."""
    base = small_model()
    save_pretrained(base, tmp_path / "base")
    (tmp_path / "base" / "tokenizer.json").write_text("{}")
    model = adapted()
    randomize_b(model, 5)
    if big is not None:
        for n in model.adapters.param_names():
            model.params[n][...] = big if n.endswith("lora_B.weight") else 1.0
    save_adapter(model, tmp_path / "adapter")
    return model


def test_merge_cli_writes_the_merged_folder(tmp_path, capsys):
    model = _base_and_adapter(tmp_path)
    assert main(["merge", str(tmp_path / "base"), str(tmp_path / "adapter"), str(tmp_path / "out")]) == 0
    assert "merged 6 module(s)" in capsys.readouterr().out
    merge_lora(model)
    out = from_pretrained(tmp_path / "out")
    for name in out.params:
        assert np.array_equal(out.params[name], model.params[name]), name
    assert np.allclose(out.forward(IDS), model.forward(IDS), atol=0, rtol=0)
    assert sorted(os.listdir(tmp_path / "out")) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert main(["merge", str(tmp_path / "base"), str(tmp_path / "adapter"), str(tmp_path / "out")]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "base"), str(tmp_path / "adapter"), str(tmp_path / "out"), "--force",
                 "--dtype", "bfloat16"]) == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["torch_dtype"] == "bfloat16"


@pytest.mark.filterwarnings("ignore:overflow encountered")
@pytest.mark.parametrize("big, extra, message", [
    (1e38, [], "merge produced non-finite values"),                 # 8e38 overflows float32
    (1e4, ["--dtype", "float16"], "is not finite as float16"),      # 8e4 is finite in float32, not in float16
])
def test_merge_cli_writes_nothing_on_non_finite(tmp_path, capsys, big, extra, message):
    _base_and_adapter(tmp_path, big)
    os.makedirs(tmp_path / "out")
    (tmp_path / "out" / "keep.txt").write_text("old")
    args = ["merge", str(tmp_path / "base"), str(tmp_path / "adapter"), str(tmp_path / "out"), "--force"]
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("minilora: error: ") and message in err and err.count("\n") == 1
    assert os.listdir(tmp_path / "out") == ["keep.txt"]                      # the old folder, untouched
    assert sorted(os.listdir(tmp_path)) == ["adapter", "base", "out"]         # no temporary left behind
