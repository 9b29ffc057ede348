"""Linear layer: forward against a naive loop, backward against finite differences."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from minilora.gradcheck import check_gradient
from minilora.layers.linear import linear_backward, linear_forward

dims = st.integers(1, 6)


def naive_linear(x, w, b):
    out = np.zeros(x.shape[:-1] + (w.shape[0],))
    for idx in np.ndindex(*x.shape[:-1]):
        for o in range(w.shape[0]):
            out[idx + (o,)] = sum(x[idx + (i,)] * w[o, i] for i in range(w.shape[1]))
            if b is not None:
                out[idx + (o,)] += b[o]
    return out


@given(B=dims, T=dims, fin=dims, fout=dims, bias=st.booleans(), seed=st.integers(0, 2**16))
def test_linear_forward_and_backward(B, T, fin, fout, bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, fin))
    w = rng.standard_normal((fout, fin))
    b = rng.standard_normal(fout) if bias else None
    y, cache = linear_forward(x, w, b)
    np.testing.assert_allclose(y, naive_linear(x, w, b), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(y.shape)
    dx, dw, db = linear_backward(dout, cache)
    f = lambda: linear_forward(x, w, b)[0]  # noqa: E731
    assert check_gradient(f, x, dx, dout) < 1e-6
    assert check_gradient(f, w, dw, dout) < 1e-6
    if bias:
        assert check_gradient(f, b, db, dout) < 1e-6
    else:
        assert db is None


def test_frozen_linear_computes_no_weight_gradient():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    y, cache = linear_forward(x, w, b)
    dout = rng.standard_normal(y.shape)
    dx, dw, db = linear_backward(dout, cache, frozen=True)
    assert dw is None and db is None
    np.testing.assert_allclose(dx, linear_backward(dout, cache)[0])
