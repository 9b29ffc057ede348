"""Causal GQA attention: forward against repeated heads and a loop over positions, backward
against the gradient checker, the causal mask and KV-cache decoding."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilora.errors import MiniLoraError
from minilora.gradcheck import check_gradient
from minilora.layers.attention import attention_backward, attention_forward


def reference(q, k, v):
    """Repeat each kv head nh/nkv times, then loop: query i (position Tk-Tq+i) sees keys j <= it."""
    b_, nh, tq, hd = q.shape
    nkv, tk = k.shape[1], k.shape[2]
    kr, vr = np.repeat(k, nh // nkv, axis=1), np.repeat(v, nh // nkv, axis=1)   # (B, nh, Tk, hd)
    out = np.zeros_like(q)
    for b in range(b_):
        for h in range(nh):
            for i in range(tq):
                last = tk - tq + i
                scores = [float(q[b, h, i] @ kr[b, h, j]) / math.sqrt(hd) for j in range(last + 1)]
                top = max(scores)
                w = [math.exp(s - top) for s in scores]
                total = sum(w)
                for j in range(last + 1):
                    out[b, h, i] += w[j] / total * vr[b, h, j]
    return out


def draw_qkv(rng, b, nh, nkv, tq, tk, hd):
    return (rng.standard_normal((b, nh, tq, hd)), rng.standard_normal((b, nkv, tk, hd)),
            rng.standard_normal((b, nkv, tk, hd)), rng.standard_normal((b, nh, tq, hd)))


@st.composite
def cases(draw):
    """(q, k, v, dout) in float64: nkv in 1..2, group 1..3, Tq <= Tk <= 4, hd 1..4."""
    nkv, group = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    tk = draw(st.integers(1, 4))
    tq = draw(st.integers(1, tk))
    b, hd = draw(st.integers(1, 2)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return draw_qkv(rng, b, nkv * group, nkv, tq, tk, hd)


@given(cases())
def test_forward_matches_reference(case):
    q, k, v, _ = case
    out, _ = attention_forward(q, k, v)
    assert out.shape == q.shape
    np.testing.assert_allclose(out, reference(q, k, v), rtol=1e-12, atol=1e-12)


def check_backward(q, k, v, dout):
    _, cache = attention_forward(q, k, v)
    before = [a.copy() for a in (dout, *cache[:4])]
    dq, dk, dv = attention_backward(dout, cache)
    for a, b in zip((dout, *cache[:4]), before, strict=True):
        np.testing.assert_array_equal(a, b)              # dout and the cache are left alone
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
    f = lambda: attention_forward(q, k, v)[0]  # noqa: E731
    for x, grad in ((q, dq), (k, dk), (v, dv)):
        assert check_gradient(f, x, grad, dout) < 1e-6


@given(cases())
def test_backward_matches_gradcheck(case):
    check_backward(*case)


@pytest.mark.parametrize("nh, nkv", [(4, 4), (4, 1), (6, 2)])
def test_gqa_head_counts(nh, nkv):
    rng = np.random.default_rng(nh * 10 + nkv)
    q, k, v, dout = draw_qkv(rng, 2, nh, nkv, 3, 3, 4)
    np.testing.assert_allclose(attention_forward(q, k, v)[0], reference(q, k, v), rtol=1e-12, atol=1e-12)
    check_backward(q, k, v, dout)


def test_future_tokens_do_not_change_earlier_outputs():
    rng = np.random.default_rng(3)
    q, k, v, _ = draw_qkv(rng, 1, 4, 2, 5, 5, 4)
    out, _ = attention_forward(q, k, v)
    q2, k2, v2 = q.copy(), k.copy(), v.copy()
    q2[:, :, 3:] += 5.0
    k2[:, :, 3:] -= 3.0
    v2[:, :, 3:] *= -2.0
    out2, _ = attention_forward(q2, k2, v2)
    np.testing.assert_array_equal(out2[:, :, :3], out[:, :, :3])
    assert not np.allclose(out2[:, :, 3:], out[:, :, 3:])


def test_first_query_returns_first_value():
    rng = np.random.default_rng(4)
    q, k, v, _ = draw_qkv(rng, 1, 2, 1, 3, 3, 2)
    out, _ = attention_forward(q, k, v)
    np.testing.assert_allclose(out[:, :, 0], np.repeat(v[:, :, 0], 2, axis=1), rtol=1e-15)


def test_kv_cache_decoding_matches_full_sequence():
    # Queries for the last 2 positions against all 6 keys equal the last 2 rows of the full pass.
    rng = np.random.default_rng(5)
    q, k, v, _ = draw_qkv(rng, 2, 4, 2, 6, 6, 4)
    full, _ = attention_forward(q, k, v)
    tail, _ = attention_forward(q[:, :, 4:], k, v)
    np.testing.assert_allclose(tail, full[:, :, 4:], rtol=1e-13, atol=1e-14)


def test_large_scores_stay_finite():
    rng = np.random.default_rng(6)
    q, k, v, dout = draw_qkv(rng, 1, 2, 1, 4, 4, 4)
    out, cache = attention_forward(1e3 * q, 1e3 * k, v)
    grads = attention_backward(dout, cache)
    assert np.all(np.isfinite(out)) and all(np.all(np.isfinite(g)) for g in grads)


@pytest.mark.parametrize("qs, ks, match", [
    ((1, 4, 3, 2), (1, 3, 3, 2), "nkv dividing nh"),
    ((1, 4, 3, 2), (1, 2, 3, 4), "head_dim"),
    ((1, 2, 4, 2), (1, 2, 3, 2), "more queries"),
])
def test_bad_shapes_raise(qs, ks, match):
    with pytest.raises(MiniLoraError, match=match):
        attention_forward(np.zeros(qs), np.zeros(ks), np.zeros(ks))


@given(cases())
def test_float32_agrees_with_float64(case):
    # Scores are hd-term dot products, the softmax and P V sum <= 4 terms: float32 error ~1e-6.
    q, k, v, dout = case
    out64, cache64 = attention_forward(q, k, v)
    c32 = [a.astype(np.float32) for a in (q, k, v)]
    out32, cache32 = attention_forward(*c32)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-5, atol=1e-5)
    for g32, g64 in zip(attention_backward(dout.astype(np.float32), cache32),
                        attention_backward(dout, cache64), strict=True):
        assert g32.dtype == np.float32
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-5)
