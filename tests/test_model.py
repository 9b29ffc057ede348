"""The whole model: loss_and_grads against finite differences (float64), LoRA invariants on the model."""
import numpy as np
import pytest

from minilora.adapters import LoraConfig, add_lora, merge_lora, trainable_summary, unmerge_lora
from minilora.config import LlamaConfig
from minilora.gradcheck import check_gradient
from minilora.model import LlamaForCausalLM


def tiny_config(**kw):
    base = dict(vocab_size=11, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16)
    base.update(kw)
    return LlamaConfig(**base)


def batch(cfg, rng, b=2, t=5):
    ids = rng.integers(0, cfg.vocab_size, (b, t))
    labels = ids.copy()
    labels[0, :2] = -100                      # an ignored prompt
    return ids, labels


def perturb(model, rng, scale=0.3):
    """Move weights off their init so norms and biases are not trivially 1 and 0."""
    for arr in model.params.values():
        arr += scale * rng.standard_normal(arr.shape)


def check_all(model, ids, labels, names):
    loss, grads = model.loss_and_grads(ids, labels)
    assert set(grads) == set(names)
    for name in names:
        err = check_gradient(lambda: model.loss(ids, labels), model.params[name], grads[name], 1.0, h=1e-5)
        assert err < 1e-6, (name, err)
    return loss


@pytest.mark.parametrize("tied", [False, True])
def test_full_finetuning_gradients(tied):
    rng = np.random.default_rng(0)
    cfg = tiny_config(tie_word_embeddings=tied)
    model = LlamaForCausalLM.init(cfg, seed=1, dtype="float64", initializer_range=0.5)
    perturb(model, rng, 0.1)
    model.set_full_finetuning()
    ids, labels = batch(cfg, rng)
    check_all(model, ids, labels, sorted(model.params))


@pytest.mark.parametrize("targets", [["q_proj", "k_proj", "v_proj"], "all-linear"])
def test_lora_gradients_and_no_frozen_gradient(targets, monkeypatch):
    rng = np.random.default_rng(1)
    cfg = tiny_config()
    model = LlamaForCausalLM.init(cfg, seed=2, dtype="float64", initializer_range=0.5)
    add_lora(model, LoraConfig(r=2, lora_alpha=4, target_modules=targets), seed=3)
    for m in model.adapters.modules:                       # B = 0 at init would make dA = 0: move it
        model.params[m + ".lora_B.weight"][...] = 0.3 * rng.standard_normal(
            model.params[m + ".lora_B.weight"].shape)
    import minilora.model as model_mod
    import minilora.projections as proj_mod

    frozen_flags = []
    monkeypatch.setattr(proj_mod, "weight_grads",                       # a base weight's dW: never
                        lambda name, *a: frozen_flags.append(False))
    real_head = model_mod.head_cross_entropy
    monkeypatch.setattr(model_mod, "head_cross_entropy",                # the head: no dW either
                        lambda *a, **kw: frozen_flags.append(not kw.get("grad_w")) or real_head(*a, **kw))
    ids, labels = batch(cfg, rng)
    check_all(model, ids, labels, sorted(model.adapters.param_names()))
    assert frozen_flags and all(frozen_flags)  # every base linear and the head: frozen backward only


def test_adapter_is_exact_zero_at_init_and_merge_equals_unmerged():
    rng = np.random.default_rng(2)
    cfg = tiny_config(vocab_size=40, hidden_size=16, intermediate_size=24)
    model = LlamaForCausalLM.init(cfg, seed=0)
    ids = rng.integers(0, 40, (3, 7))
    base = model.forward(ids)
    add_lora(model, LoraConfig(r=4, target_modules="all-linear"))
    assert np.array_equal(model.forward(ids), base)
    for m in model.adapters.modules:
        model.params[m + ".lora_B.weight"][...] = 0.05 * rng.standard_normal(
            model.params[m + ".lora_B.weight"].shape)
    unmerged = model.forward(ids)
    assert np.max(np.abs(unmerged - base)) > 1e-4
    merge_lora(model)
    merged = model.forward(ids)
    assert np.max(np.abs(merged - unmerged)) < 1e-5 * np.max(np.abs(unmerged))
    with pytest.raises(ValueError, match="already merged"):
        merge_lora(model)
    with pytest.raises(RuntimeError, match="merged"):
        model.loss_and_grads(ids, ids)
    unmerge_lora(model)
    np.testing.assert_allclose(model.forward(ids), unmerged, rtol=0, atol=1e-5)


def test_causal_and_ignore_index():
    rng = np.random.default_rng(3)
    cfg = tiny_config()
    model = LlamaForCausalLM.init(cfg, seed=0, dtype="float64", initializer_range=0.5)
    ids = rng.integers(0, cfg.vocab_size, (1, 6))
    changed = ids.copy()
    changed[0, 4] = (ids[0, 4] + 1) % cfg.vocab_size
    a, b = model.forward(ids), model.forward(changed)
    assert np.array_equal(a[0, :4], b[0, :4]) and not np.allclose(a[0, 4:], b[0, 4:])
    labels = np.full_like(ids, -100)
    labels[0, 3] = ids[0, 3]
    logits = model.forward(ids)[0, 2]
    expected = np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[ids[0, 3]]
    assert float(model.loss(ids, labels)) == pytest.approx(expected, rel=1e-12)


def test_trainable_summary_matches_formula():
    cfg = tiny_config(vocab_size=50, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                      num_key_value_heads=1)
    model = LlamaForCausalLM.init(cfg)
    base_total = model.num_params()
    add_lora(model, LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj"]))
    # q: 32 -> 32, k and v: 32 -> 8 (one KV head of 8 dims)
    per_layer = 4 * (32 + 32) + 2 * 4 * (32 + 8)
    s = trainable_summary(model)
    assert s["trainable"] == 2 * per_layer
    assert s["all"] == base_total + 2 * per_layer


@pytest.mark.parametrize("mode", ["lora_dropout", "full"])
def test_gradient_checkpointing_gives_the_same_loss_and_grads(mode):
    cfg = tiny_config(num_hidden_layers=3)
    runs = []
    for ckpt in (False, True):
        model = LlamaForCausalLM.init(cfg, seed=2, dtype="float64", initializer_range=0.5)
        if mode == "full":
            model.set_full_finetuning()
        else:
            add_lora(model, LoraConfig(r=2, lora_alpha=4, lora_dropout=0.3, target_modules="all-linear"), seed=3)
            for m in model.adapters.modules:
                model.params[m + ".lora_B.weight"][...] = 0.3
        model.gradient_checkpointing = ckpt
        ids, labels = batch(cfg, np.random.default_rng(7))
        runs.append([model.loss_and_grads(ids, labels) for _ in range(2)])   # dropout masks advance
    assert runs[0][0][1].keys() == runs[1][0][1].keys() and runs[0][0][1]
    for (l0, g0), (l1, g1) in zip(runs[0], runs[1], strict=True):
        assert float(l0) == float(l1)
        for k in g0:
            np.testing.assert_array_equal(g0[k], g1[k], err_msg=k)
    assert float(runs[0][0][0]) != float(runs[0][1][0]) or mode == "full"  # masks really differ


def test_stacked_qkv_weight_follows_params():
    """The fused q/k/v GEMM reads params: in-place updates and replaced weights are both seen."""
    cfg = tiny_config()
    model = LlamaForCausalLM.init(cfg, seed=4, dtype="float64", initializer_range=0.5)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 5))
    ref = LlamaForCausalLM(cfg, {k: v.copy() for k, v in model.params.items()})   # independent copies
    np.testing.assert_allclose(model.forward(ids), ref.forward(ids), rtol=1e-12)
    q = "model.layers.0.self_attn.q_proj.weight"
    stack = model._stacked[tuple(f"model.layers.0.{m}" for m in
                                 ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"))][0]
    assert np.shares_memory(model.params[q], stack)           # params hold row views of the stack
    model.params[q] *= 1.5                                     # an optimizer-style in-place update
    ref.params[q] *= 1.5
    np.testing.assert_allclose(model.forward(ids), ref.forward(ids), rtol=1e-12)
    new = np.random.default_rng(1).standard_normal(model.params[q].shape)
    model.params[q] = new                                      # replaced (as merge and load do)
    ref.params[q] = new.copy()
    np.testing.assert_allclose(model.forward(ids), ref.forward(ids), rtol=1e-12)
    model.quantize_base(8)                                     # a quantized base bypasses the stack
    assert not model._stacked and q in model.quantized
    assert np.isfinite(model.forward(ids)).all()
