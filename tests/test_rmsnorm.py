"""RMSNorm: forward against a per-row formula, backward against the gradient checker."""
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from minilora.gradcheck import check_gradient
from minilora.layers.rmsnorm import rmsnorm_backward, rmsnorm_forward


@st.composite
def cases(draw):
    """(x (B, T, C), w (C,), dout, eps) in float64."""
    # C >= 2: at C = 1, y = w * x / sqrt(x^2 + eps) ~ w * sign(x) is nearly flat and dx ~ eps / x^3
    # sinks into the checker's rounding noise (1e-16 |y| / h); test_width_one covers it.
    b, t, c = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(2, 6))
    eps = draw(st.sampled_from([1e-6, 1e-5, 0.1]))
    scale = draw(st.sampled_from([1e-2, 1.0, 10.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = scale * rng.standard_normal((b, t, c))
    return x, rng.standard_normal(c), rng.standard_normal((b, t, c)), eps


def reference(x, w, eps):
    y = np.empty_like(x)
    for idx in np.ndindex(x.shape[:-1]):
        row = x[idx]
        ms = sum(float(v) ** 2 for v in row) / len(row)
        y[idx] = [w[i] * row[i] / math.sqrt(ms + eps) for i in range(len(row))]
    return y


@given(cases())
def test_forward_matches_reference(case):
    x, w, _, eps = case
    y, _ = rmsnorm_forward(x, w, eps)
    np.testing.assert_allclose(y, reference(x, w, eps), rtol=1e-12, atol=1e-12)


def test_eps_inside_sqrt_and_weight_after():
    x = np.array([[3.0, 4.0]])
    w = np.array([2.0, -1.0])
    y, _ = rmsnorm_forward(x, w, eps=0.5)
    r = 1 / math.sqrt((9 + 16) / 2 + 0.5)
    np.testing.assert_allclose(y, [[2 * 3 * r, -4 * r]], rtol=1e-15)
    y0, _ = rmsnorm_forward(np.zeros((1, 3)), np.ones(3), eps=1e-6)
    np.testing.assert_array_equal(y0, 0.0)               # a zero row stays zero (eps keeps it finite)


@given(cases())
def test_backward_matches_gradcheck(case):
    x, w, dout, eps = case
    y, cache = rmsnorm_forward(x, w, eps)
    dout_before, x_before = dout.copy(), x.copy()
    dx, dw = rmsnorm_backward(dout, cache)
    np.testing.assert_array_equal(dout, dout_before)
    np.testing.assert_array_equal(cache.x, x_before)
    assert dx.shape == x.shape and dw.shape == w.shape
    f = lambda: rmsnorm_forward(x, w, eps)[0]  # noqa: E731
    assert check_gradient(f, x, dx, dout) < 1e-6
    assert check_gradient(f, w, dw, dout) < 1e-6


@given(cases())
def test_float32_agrees_with_float64(case):
    # Each output is a C-term mean and a few products: float32 rounding (6e-8) stays below 1e-5.
    x, w, dout, eps = case
    y64, c64 = rmsnorm_forward(x, w, eps)
    y32, c32 = rmsnorm_forward(x.astype(np.float32), w.astype(np.float32), eps)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-5)
    dx32, dw32 = rmsnorm_backward(dout.astype(np.float32), c32)
    dx64, dw64 = rmsnorm_backward(dout, c64)
    assert dx32.dtype == dw32.dtype == np.float32
    tol = 1e-5 * max(1.0, float(np.abs(dx64).max()))
    np.testing.assert_allclose(dx32, dx64, rtol=1e-4, atol=tol)
    np.testing.assert_allclose(dw32, dw64, rtol=1e-4, atol=1e-5)


def test_width_one():
    x, w, dout = np.array([[[0.5]], [[-0.2]]]), np.array([1.5]), np.array([[[0.7]], [[-1.1]]])
    y, cache = rmsnorm_forward(x, w, eps=0.1)
    np.testing.assert_allclose(y, reference(x, w, 0.1), rtol=1e-14)
    dx, dw = rmsnorm_backward(dout, cache)
    f = lambda: rmsnorm_forward(x, w, 0.1)[0]  # noqa: E731
    assert check_gradient(f, x, dx, dout) < 1e-6
    assert check_gradient(f, w, dw, dout) < 1e-6


def test_frozen_weight_gets_no_gradient():
    rng = np.random.default_rng(0)
    x, w, dout = rng.standard_normal((2, 3, 4)), rng.standard_normal(4), rng.standard_normal((2, 3, 4))
    _, cache = rmsnorm_forward(x, w)
    dx, dw = rmsnorm_backward(dout, cache, frozen=True)
    assert dw is None
    np.testing.assert_array_equal(dx, rmsnorm_backward(dout, cache)[0])
