"""LoRA linear: gradients by finite differences, and the LoRA invariants as named property tests.

Tolerances (stated per dtype, relative to the output's scale):
- merged vs unmerged forward: float64 1e-12, float32 1e-5 (a few float32 ulps times the
  accumulation length of the two matrix products, for in/out <= 64).
- unmerge(merge(W0)) vs W0: float64 1e-13 * (1 + |s B A|max), float32 4 ulps of W0's scale;
  after 100 cycles: float64 1e-11, float32 1e-4 (rounding errors accumulate like a random walk,
  bound taken as 100 single-cycle bounds).
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilora.gradcheck import check_gradient
from minilora.layers.linear import linear_forward
from minilora.layers.lora import (
    LoraLinear,
    init_lora_weights,
    lora_backward,
    lora_forward,
    lora_merge,
    lora_scaling,
    lora_unmerge,
)

dims = st.integers(1, 12)
ranks = st.integers(1, 6)
alphas = st.sampled_from([1.0, 8.0, 16.0, 32.0])


def naive_lora(x, w0, a, b, s, bias):
    """h = W0 x + s B A x for each row vector x, written as column-vector algebra."""
    out = np.zeros(x.shape[:-1] + (w0.shape[0],))
    for idx in np.ndindex(*x.shape[:-1]):
        col = x[idx]
        out[idx] = w0 @ col + s * (b @ (a @ col)) + (0 if bias is None else bias)
    return out


def random_lora(rng, fin, fout, r, dtype=np.float64):
    w0 = rng.standard_normal((fout, fin)).astype(dtype)
    a = rng.standard_normal((r, fin)).astype(dtype)
    b = rng.standard_normal((fout, r)).astype(dtype)   # nonzero B, so every path is exercised
    return w0, a, b


@given(B=st.integers(1, 3), T=st.integers(1, 4), fin=dims, fout=dims, r=ranks, alpha=alphas,
       bias=st.booleans(), rslora=st.booleans(), seed=st.integers(0, 2**16))
def test_lora_forward_matches_formula_and_gradients(B, T, fin, fout, r, alpha, bias, rslora, seed):
    rng = np.random.default_rng(seed)
    w0, a, b = random_lora(rng, fin, fout, r)
    bvec = rng.standard_normal(fout) if bias else None
    s = lora_scaling(r, alpha, rslora)
    x = rng.standard_normal((B, T, fin))
    h, cache = lora_forward(x, w0, a, b, s, bvec)
    np.testing.assert_allclose(h, naive_lora(x, w0, a, b, s, bvec), rtol=1e-10, atol=1e-10)
    dout = rng.standard_normal(h.shape)
    dx, da, db = lora_backward(dout, cache)
    f = lambda: lora_forward(x, w0, a, b, s, bvec)[0]  # noqa: E731
    assert check_gradient(f, x, dx, dout) < 1e-6
    assert check_gradient(f, a, da, dout) < 1e-6
    assert check_gradient(f, b, db, dout) < 1e-6


@given(fin=dims, fout=dims, r=ranks, p=st.sampled_from([0.1, 0.5]), seed=st.integers(0, 2**16))
def test_lora_dropout_gradients_with_fixed_mask(fin, fout, r, p, seed):
    rng = np.random.default_rng(seed)
    w0, a, b = random_lora(rng, fin, fout, r)
    x = rng.standard_normal((2, 3, fin))
    # the same generator state gives the same mask, so f is a deterministic function of x, A, B
    f = lambda: lora_forward(x, w0, a, b, 2.0, None, p, np.random.default_rng(7))[0]  # noqa: E731
    h, cache = lora_forward(x, w0, a, b, 2.0, None, p, np.random.default_rng(7))
    dout = rng.standard_normal(h.shape)
    dx, da, db = lora_backward(dout, cache)
    for arr, g in ((x, dx), (a, da), (b, db)):
        assert check_gradient(f, arr, g, dout) < 1e-6


def test_lora_dropout_is_reproducible_and_needs_a_generator():
    rng = np.random.default_rng(0)
    w0, a, b = random_lora(rng, 8, 8, 2)
    x = rng.standard_normal((4, 8))
    h1, _ = lora_forward(x, w0, a, b, 1.0, None, 0.5, np.random.default_rng(3))
    h2, _ = lora_forward(x, w0, a, b, 1.0, None, 0.5, np.random.default_rng(3))
    h3, _ = lora_forward(x, w0, a, b, 1.0, None, 0.5, np.random.default_rng(4))
    assert np.array_equal(h1, h2) and not np.array_equal(h1, h3)
    with pytest.raises(ValueError, match="generator"):
        lora_forward(x, w0, a, b, 1.0, None, 0.5, None)


# (a) the update is exactly zero at init: bit-for-bit equal to the frozen layer
@given(fin=dims, fout=dims, r=ranks, alpha=alphas, init=st.sampled_from(["gaussian", "kaiming"]),
       dtype=st.sampled_from([np.float32, np.float64]), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_update_is_zero_at_init(fin, fout, r, alpha, init, dtype, bias, seed):
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal((fout, fin)).astype(dtype)
    bvec = rng.standard_normal(fout).astype(dtype) if bias else None
    layer = LoraLinear(w0, r, alpha, rng, bias=bvec, init=init)
    assert not np.any(layer.lora_B) and np.any(layer.lora_A)
    x = rng.standard_normal((3, fin)).astype(dtype)
    h, _ = layer.forward(x)
    base, _ = linear_forward(x, w0, bvec)
    assert h.dtype == base.dtype and np.array_equal(h, base)


# (b) merged forward equals unmerged forward, per dtype
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@given(fin=st.integers(1, 64), fout=st.integers(1, 64), r=ranks, alpha=alphas, seed=st.integers(0, 2**16))
def test_merged_equals_unmerged(dtype, tol, fin, fout, r, alpha, seed):
    rng = np.random.default_rng(seed)
    w0, a, b = random_lora(rng, fin, fout, r, dtype)
    s = lora_scaling(r, alpha)
    x = rng.standard_normal((5, fin)).astype(dtype)
    unmerged, _ = lora_forward(x, w0, a, b, s)
    merged, _ = linear_forward(x, lora_merge(w0, a, b, s), None)
    assert merged.dtype == dtype
    scale = np.max(np.abs(unmerged)) + 1e-30
    assert np.max(np.abs(merged - unmerged)) / scale < tol


# (c) unmerge(merge(W0)) restores W0; 100 cycles stay bounded
@pytest.mark.parametrize("dtype,one,hundred", [(np.float64, 1e-13, 1e-11), (np.float32, 4e-7, 1e-4)])
@given(fin=st.integers(1, 32), fout=st.integers(1, 32), r=ranks, seed=st.integers(0, 2**16))
def test_unmerge_restores_weight(dtype, one, hundred, fin, fout, r, seed):
    rng = np.random.default_rng(seed)
    w0, a, b = random_lora(rng, fin, fout, r, dtype)
    s = lora_scaling(r, 16.0)
    scale = np.max(np.abs(w0)) + np.max(np.abs(lora_merge(w0, a, b, s) - w0))
    w = lora_unmerge(lora_merge(w0, a, b, s), a, b, s)
    assert w.dtype == dtype
    assert np.max(np.abs(w - w0)) / scale < one * 8
    for _ in range(100):
        w = lora_unmerge(lora_merge(w, a, b, s), a, b, s)
    assert np.max(np.abs(w - w0)) / scale < hundred


def test_merge_twice_is_refused_and_unmerge_restores_layer():
    rng = np.random.default_rng(1)
    layer = LoraLinear(rng.standard_normal((6, 5)), 2, 4.0, rng)
    layer.lora_B[...] = rng.standard_normal(layer.lora_B.shape)
    w0 = layer.weight.copy()
    x = rng.standard_normal((3, 5))
    before, _ = layer.forward(x)
    layer.merge()
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()
    with pytest.raises(RuntimeError, match="cannot train"):
        layer.forward(x, train=True)
    merged, _ = layer.forward(x)
    np.testing.assert_allclose(merged, before, rtol=1e-12, atol=1e-12)
    layer.unmerge()
    np.testing.assert_allclose(layer.weight, w0, rtol=0, atol=1e-14)
    with pytest.warns(UserWarning, match="not merged"):
        layer.unmerge()


# (d) no gradient is produced for W0: the frozen path is asked for dx only, never for dW0
def test_no_gradient_for_frozen_weight(monkeypatch):
    import minilora.layers.lora as lora_mod

    calls = []
    real = lora_mod.linear_backward

    def recording(dout, cache, frozen=False):
        calls.append(frozen)
        return real(dout, cache, frozen)

    monkeypatch.setattr(lora_mod, "linear_backward", recording)
    rng = np.random.default_rng(2)
    w0, a, b = random_lora(rng, 7, 3, 2)
    x = rng.standard_normal((4, 7))
    h, cache = lora_forward(x, w0, a, b, 0.5)
    grads = lora_backward(np.ones_like(h), cache)
    assert calls == [True]
    assert [g.shape for g in grads] == [x.shape, a.shape, b.shape]


# (e) trainable count r * (in + out), non-square included
@given(fin=st.integers(1, 64), fout=st.integers(1, 64), r=ranks)
def test_trainable_count(fin, fout, r):
    layer = LoraLinear(np.zeros((fout, fin)), r, 8.0, np.random.default_rng(0))
    assert layer.num_trainable() == r * (fin + fout)


def test_trainable_count_gqa_k_proj():
    # Llama-3.1-70B k_proj: in 8192, out 8 KV heads x 128 = 1024; r = 4
    a, b = init_lora_weights(8192, 1024, 4, np.random.default_rng(0), np, "gaussian")
    assert a.shape == (4, 8192) and b.shape == (1024, 4)
    assert a.size + b.size == 36_864


def test_init_distributions():
    rng = np.random.default_rng(0)
    a, b = init_lora_weights(1024, 16, 8, rng, np, "gaussian")
    assert abs(a.std() - 1 / 8) < 0.01 and not b.any()
    a, _ = init_lora_weights(1024, 16, 8, rng, np, "kaiming")
    bound = 1 / math.sqrt(1024)
    assert a.max() <= bound and a.min() >= -bound and a.max() > 0.95 * bound
    with pytest.raises(ValueError, match="unknown LoRA init"):
        init_lora_weights(4, 4, 2, rng, np, "orthogonal")


def test_scaling():
    assert lora_scaling(8, 16) == 2.0
    assert lora_scaling(16, 16, use_rslora=True) == 4.0
