"""AdamW, the warmup + cosine schedule and clipping against hand-computed values."""
import math

import numpy as np
import pytest

from minilora.training.optim import AdamW, clip_grad_norm, cosine_schedule


def test_adamw_first_two_steps_by_hand():
    p = {"w": np.array([1.0, -2.0])}
    g1, g2 = np.array([0.5, -1.0]), np.array([0.1, 0.3])
    opt = AdamW(lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)
    opt.step(p, {"w": g1.copy()})
    # step 1: m_hat = g, v_hat = g^2 -> update = lr * sign(g) (up to eps); decay first
    w1 = np.array([1.0, -2.0]) * (1 - 0.1 * 0.01) - 0.1 * g1 / (np.abs(g1) + 1e-8)
    np.testing.assert_allclose(p["w"], w1, rtol=1e-12)
    opt.step(p, {"w": g2.copy()})
    m = 0.9 * 0.1 * g1 + 0.1 * g2
    v = 0.99 * 0.01 * g1 ** 2 + 0.01 * g2 ** 2
    m_hat, v_hat = m / (1 - 0.9 ** 2), v / (1 - 0.99 ** 2)
    w2 = w1 * (1 - 0.1 * 0.01) - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-8)
    np.testing.assert_allclose(p["w"], w2, rtol=1e-12)


def test_adamw_touches_only_names_with_gradients():
    p = {"a": np.ones(2), "frozen": np.ones(2)}
    opt = AdamW(lr=0.1, weight_decay=0.1)
    opt.step(p, {"a": np.ones(2)})
    assert np.array_equal(p["frozen"], np.ones(2)) and "frozen" not in opt.m
    assert not np.array_equal(p["a"], np.ones(2))


def test_adamw_state_round_trip():
    p = {"a": np.ones(3)}
    opt = AdamW(lr=0.01)
    opt.step(p, {"a": np.arange(3.0)})
    opt2 = AdamW(lr=0.01)
    opt2.load_state_dict({k: v.copy() for k, v in opt.state_dict().items()}, opt.step_count)
    q = {"a": p["a"].copy()}
    opt.step(p, {"a": np.ones(3)})
    opt2.step(q, {"a": np.ones(3)})
    assert np.array_equal(p["a"], q["a"])


def test_float16_parameters_update_in_float32():
    # a zero gradient (LoRA's A at step 1) must not give 0/0: eps = 1e-8 is 0 in float16
    p = {"a": np.ones(4, dtype=np.float16), "b": np.zeros(4, dtype=np.float16)}
    opt = AdamW(lr=1e-3, weight_decay=0.01)
    opt.step(p, {"a": np.zeros(4, dtype=np.float16), "b": np.full(4, 1e-4, dtype=np.float16)})
    assert all(np.isfinite(v).all() and v.dtype == np.float16 for v in p.values())
    assert opt.m["a"].dtype == np.float32 and opt.v["b"].dtype == np.float32
    # the float16 result is the float32 update rounded once
    q = {"a": np.ones(4, dtype=np.float32), "b": np.zeros(4, dtype=np.float32)}
    AdamW(lr=1e-3, weight_decay=0.01).step(q, {"a": np.zeros(4, np.float32), "b": np.full(4, 1e-4, np.float32)})
    for k in p:
        assert np.array_equal(p[k], q[k].astype(np.float16))


def test_float16_lora_trains_20_steps_without_nan():
    from minilora.adapters import LoraConfig, add_lora
    from minilora.config import LlamaConfig
    from minilora.data import ByteTokenizer, encode_example
    from minilora.model import LlamaForCausalLM
    from minilora.training import TrainConfig, fit

    tok = ByteTokenizer()
    cfg = LlamaConfig(vocab_size=259, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    ex = [encode_example(f"headline {i}", "positive" if i % 2 else "negative", tok) for i in range(40)]
    m = LlamaForCausalLM.init(cfg, seed=0, dtype="float16", initializer_range=0.2)
    add_lora(m, LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.1), seed=0)
    res = fit(m, ex, TrainConfig(learning_rate=1e-2, num_epochs=4, batch_size=8), progress=False)
    assert res.steps == 20 and all(math.isfinite(x) for x in res.losses)
    assert res.losses[-1] < 0.5 * res.losses[0]
    assert all(m.params[n].dtype == np.float16 and np.isfinite(m.params[n]).all() for n in m.trainable)


def test_cosine_schedule():
    assert cosine_schedule(0, 100, 10) == pytest.approx(0.1)
    assert cosine_schedule(9, 100, 10) == pytest.approx(1.0)
    assert cosine_schedule(10, 100, 10) == pytest.approx(1.0)
    assert cosine_schedule(55, 100, 10) == pytest.approx(0.5)
    assert cosine_schedule(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    assert cosine_schedule(100, 100, 10, min_ratio=0.1) == pytest.approx(0.1)


def test_clip_grad_norm():
    g = {"a": np.array([3.0, 0.0]), "b": np.array([4.0])}
    norm = clip_grad_norm(g, 1.0)
    assert norm == pytest.approx(5.0)
    total = math.sqrt(sum(float((x ** 2).sum()) for x in g.values()))
    assert total == pytest.approx(1.0, rel=1e-5)
    g2 = {"a": np.array([0.3])}
    clip_grad_norm(g2, 1.0)
    assert g2["a"][0] == 0.3
