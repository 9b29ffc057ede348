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
