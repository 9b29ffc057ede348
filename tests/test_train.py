"""The training loop and the quantized base on a tiny model: loss falls, accumulation averages,
only trainable names move, 8-bit/4-bit bases stay close to the float model."""
import numpy as np
import pytest

from minilora.adapters import LoraConfig, add_lora, merge_lora
from minilora.config import LlamaConfig
from minilora.data import ByteTokenizer, encode_example
from minilora.errors import MiniLoraError
from minilora.model import LlamaForCausalLM
from minilora.training import TrainConfig, fit, total_steps

CFG = LlamaConfig(vocab_size=259, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2)


def examples(n=24):
    tok = ByteTokenizer()
    rows = [(f"headline {i}", ("negative", "neutral", "positive")[i % 3]) for i in range(n)]
    return [encode_example(c, t, tok) for c, t in rows]


def test_lora_training_lowers_loss_and_moves_only_lora():
    model = LlamaForCausalLM.init(CFG, seed=0, initializer_range=0.2)
    add_lora(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    frozen = {k: v.copy() for k, v in model.params.items() if "lora_" not in k}
    res = fit(model, examples(), TrainConfig(learning_rate=2e-2, num_epochs=6, batch_size=4,
                                             gradient_accumulation_steps=2), progress=False)
    assert res.steps == total_steps(24, TrainConfig(num_epochs=6, batch_size=4, gradient_accumulation_steps=2))
    assert np.mean(res.losses[-3:]) < 0.5 * np.mean(res.losses[:3])
    for k, v in frozen.items():
        assert np.array_equal(model.params[k], v), k


def test_accumulation_averages_micro_batch_gradients(monkeypatch):
    """One optimizer step with accumulation 2 sees the mean of the two micro-batch gradients."""
    import minilora.training.loop as train_mod

    seen = []
    real_step = train_mod.AdamW.step

    def recording(self, params, grads, lr=None):
        seen.append({k: g.copy() for k, g in grads.items()})
        return real_step(self, params, grads, lr)

    monkeypatch.setattr(train_mod.AdamW, "step", recording)
    model = LlamaForCausalLM.init(CFG, seed=1, dtype="float64")
    add_lora(model, LoraConfig(r=2, target_modules=["q_proj"]))
    for m in model.adapters.modules:
        model.params[m + ".lora_B.weight"][...] = 0.1
    ex = examples(8)
    ref = LlamaForCausalLM(CFG, {k: v.copy() for k, v in model.params.items()})
    ref.adapters.modules, ref.trainable = model.adapters.modules, set(model.trainable)
    from minilora.data import iterate_batches

    grads = [ref.loss_and_grads(*b)[1] for b in iterate_batches(ex, 4, 0, 0)]
    fit(model, ex, TrainConfig(num_epochs=1, batch_size=4, gradient_accumulation_steps=2, max_grad_norm=0),
        progress=False)
    assert len(seen) == 1
    for k in grads[0]:
        np.testing.assert_allclose(seen[0][k], (grads[0][k] + grads[1][k]) / 2, rtol=1e-12)


def test_training_refuses_bad_states():
    model = LlamaForCausalLM.init(CFG)
    with pytest.raises(MiniLoraError, match="nothing to train"):
        fit(model, examples(4), TrainConfig(), progress=False)
    add_lora(model, LoraConfig(r=2))
    with pytest.raises(MiniLoraError, match="empty"):
        fit(model, [], TrainConfig(), progress=False)
    for m in model.adapters.modules:
        model.params[m + ".lora_B.weight"][...] = 0.1
    merge_lora(model)
    with pytest.raises(MiniLoraError, match="merged"):
        fit(model, examples(4), TrainConfig(), progress=False)


def test_non_finite_loss_stops_the_run():
    model = LlamaForCausalLM.init(CFG)
    add_lora(model, LoraConfig(r=2))
    model.params["model.norm.weight"][0] = np.nan
    with pytest.raises(MiniLoraError, match="non-finite"):
        fit(model, examples(4), TrainConfig(batch_size=2), progress=False)


@pytest.mark.parametrize("bits,tol", [(8, 0.02), (4, 0.35)])
def test_quantized_base_is_close_and_adapter_still_exact_at_init(bits, tol):
    model = LlamaForCausalLM.init(CFG, seed=3, initializer_range=0.1)
    ids = np.random.default_rng(0).integers(0, 259, (2, 9))
    ref = model.forward(ids)
    model.quantize_base(bits)
    assert len(model.quantized) == 7 * CFG.num_hidden_layers
    q = model.forward(ids)
    assert 0 < np.max(np.abs(q - ref)) < tol * np.max(np.abs(ref))
    add_lora(model, LoraConfig(r=4, target_modules="all-linear"))
    assert np.array_equal(model.forward(ids), q)
    for m in model.adapters.modules:
        model.params[m + ".lora_B.weight"][...] = 0.01
    unmerged = model.forward(ids)
    report = merge_lora(model)                       # requantizes: an error is introduced and reported
    merged = model.forward(ids)
    assert set(report) == {m + ".weight" for m in model.adapters.modules if m != "lm_head"} | (
        {"lm_head.weight"} if "lm_head" in model.adapters.modules else set())
    assert all(v >= 0 for v in report.values())
    assert np.max(np.abs(merged - unmerged)) < tol * np.max(np.abs(unmerged))


def test_full_finetuning_refuses_a_quantized_base():
    model = LlamaForCausalLM.init(CFG)
    model.quantize_base(8)
    with pytest.raises(RuntimeError, match="quantized"):
        model.set_full_finetuning()
