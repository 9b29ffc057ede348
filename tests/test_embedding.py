"""Embedding lookup: forward against a loop, backward against the gradient checker, id guards."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilora.backend import scatter_add_rows
from minilora.errors import MiniLoraError
from minilora.gradcheck import check_gradient
from minilora.layers.embedding import embedding_backward, embedding_forward


@st.composite
def cases(draw):
    """(ids (B, T), w (V, C), dout (B, T, C)) in float64, small shapes."""
    v, c = draw(st.integers(1, 8)), draw(st.integers(1, 5))
    b, t = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ids = rng.integers(0, v, size=(b, t))
    return ids, rng.standard_normal((v, c)), rng.standard_normal((b, t, c))


@given(cases())
def test_forward_matches_loop(case):
    ids, w, _ = case
    out, _ = embedding_forward(ids, w)
    ref = np.empty(ids.shape + (w.shape[1],))
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            ref[b, t] = w[ids[b, t]]
    np.testing.assert_array_equal(out, ref)


@given(cases())
def test_backward_matches_gradcheck(case):
    ids, w, dout = case
    out, cache = embedding_forward(ids, w)
    dout_before = dout.copy()
    dw = embedding_backward(dout, cache)
    np.testing.assert_array_equal(dout, dout_before)     # backward leaves dout alone
    assert dw.shape == w.shape
    assert check_gradient(lambda: embedding_forward(ids, w)[0], w, dw, dout) < 1e-6


def test_duplicate_ids_accumulate():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 3))
    ids = np.array([[2, 2, 4], [2, 0, 4]])
    dout = rng.standard_normal((2, 3, 3))
    _, cache = embedding_forward(ids, w)
    dw = embedding_backward(dout, cache)
    np.testing.assert_allclose(dw[2], dout[0, 0] + dout[0, 1] + dout[1, 0], rtol=1e-15)
    np.testing.assert_allclose(dw[4], dout[0, 2] + dout[1, 2], rtol=1e-15)
    np.testing.assert_array_equal(dw[0], dout[1, 1])
    np.testing.assert_array_equal(dw[[1, 3]], 0.0)       # absent tokens get no gradient


def test_scatter_add_rows_accumulates_duplicates():
    target = np.ones((4, 2))
    idx = np.array([1, 3, 1, 1])
    values = np.arange(8.0).reshape(4, 2)
    out = scatter_add_rows(target, idx, values)
    assert out is target                                 # in place
    ref = np.ones((4, 2))
    for n, i in enumerate(idx):
        ref[i] += values[n]
    np.testing.assert_array_equal(target, ref)


@pytest.mark.parametrize("bad", [5, 17, -1])
def test_out_of_range_id_raises_naming_id_and_vocab(bad):
    w = np.zeros((5, 2))
    with pytest.raises(MiniLoraError, match=rf"token id {bad} .*vocab size 5"):
        embedding_forward(np.array([[0, bad, 1]]), w)


def test_float_ids_raise():
    with pytest.raises(MiniLoraError, match="integers"):
        embedding_forward(np.array([[0.0, 1.0]]), np.zeros((3, 2)))


@given(cases())
def test_float32_agrees_with_float64(case):
    # The lookup is a copy, so it is exact; the scatter-add rounds once per duplicate: 1e-6 relative.
    ids, w, dout = case
    out32, cache32 = embedding_forward(ids, w.astype(np.float32))
    assert out32.dtype == np.float32
    np.testing.assert_array_equal(out32, w.astype(np.float32)[ids])
    dw32 = embedding_backward(dout.astype(np.float32), cache32)
    dw64 = embedding_backward(dout, embedding_forward(ids, w)[1])
    assert dw32.dtype == np.float32
    np.testing.assert_allclose(dw32, dw64, rtol=1e-6, atol=1e-6)
