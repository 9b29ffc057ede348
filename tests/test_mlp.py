"""SwiGLU gating: forward against the plain formula, backward against the gradient checker."""
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from minilora.gradcheck import check_gradient
from minilora.layers.mlp import sigmoid, swiglu_backward, swiglu_forward


@st.composite
def cases(draw):
    """(g, u, dout) of shape (B, T, I) in float64; g spans small and saturated values."""
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 6)))
    scale = draw(st.sampled_from([0.1, 1.0, 8.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return (scale * rng.standard_normal(shape), rng.standard_normal(shape), rng.standard_normal(shape))


def reference(g, u):
    out = np.empty_like(g)
    for idx in np.ndindex(g.shape):
        x = float(g[idx])
        out[idx] = x / (1.0 + math.exp(-x)) * u[idx]
    return out


@given(cases())
def test_forward_matches_formula(case):
    g, u, _ = case
    h, _ = swiglu_forward(g, u)
    np.testing.assert_allclose(h, reference(g, u), rtol=1e-13, atol=1e-15)


@given(cases())
def test_backward_matches_gradcheck(case):
    g, u, dout = case
    _, cache = swiglu_forward(g, u)
    before = [a.copy() for a in (dout, g, u)]
    dg, du = swiglu_backward(dout, cache)
    for a, b in zip((dout, g, u), before, strict=True):
        np.testing.assert_array_equal(a, b)
    f = lambda: swiglu_forward(g, u)[0]  # noqa: E731
    assert check_gradient(f, g, dg, dout) < 1e-6
    assert check_gradient(f, u, du, dout) < 1e-6


def test_extreme_gates_are_finite_and_silent():
    g = np.array([-1e4, -800.0, -50.0, 0.0, 50.0, 800.0, 1e4])
    u = np.ones_like(g)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        s = sigmoid(g, np)
        h, cache = swiglu_forward(g, u)
        dg, du = swiglu_backward(np.ones_like(g), cache)
    assert s[0] == 0.0 and s[3] == 0.5 and s[-1] == 1.0
    np.testing.assert_array_equal(h[[0, 1, 3]], 0.0)
    np.testing.assert_array_equal(h[[5, 6]], g[[5, 6]])  # silu(g) = g once sigmoid(g) rounds to 1
    np.testing.assert_array_equal(dg[[5, 6]], 1.0)
    np.testing.assert_array_equal(dg[[0, 1]], 0.0)
    assert np.all(np.isfinite(du))


@given(cases())
def test_float32_agrees_with_float64(case):
    # A few elementwise operations: float32 error is a few ulps (~1e-7 relative), tolerance 1e-5.
    g, u, dout = case
    h64, c64 = swiglu_forward(g, u)
    h32, c32 = swiglu_forward(g.astype(np.float32), u.astype(np.float32))
    assert h32.dtype == np.float32
    np.testing.assert_allclose(h32, h64, rtol=1e-5, atol=1e-6)
    for a32, a64 in zip(swiglu_backward(dout.astype(np.float32), c32), swiglu_backward(dout, c64),
                        strict=True):
        assert a32.dtype == np.float32
        np.testing.assert_allclose(a32, a64, rtol=1e-5, atol=1e-6)
