"""Cross-entropy: forward against per-row log-softmax sums, backward against the gradient checker,
ignore_index and the all-ignored batch."""
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from minilora.errors import MiniLoraError
from minilora.gradcheck import check_gradient
from minilora.layers.loss import cross_entropy_backward, cross_entropy_forward


@st.composite
def cases(draw):
    """(logits (N, V) or (B, T, V), targets with some -100, dloss) in float64; at least one kept."""
    lead = draw(st.sampled_from([(3,), (1,), (2, 3), (1, 4)]))
    v = draw(st.integers(1, 7))
    # Up to 3: beyond it a confident row's gradient (~exp(-margin)) sinks into the checker's
    # rounding noise; saturated logits are covered by test_huge_logits_are_stable.
    scale = draw(st.sampled_from([0.1, 1.0, 3.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    logits = scale * rng.standard_normal(lead + (v,))
    targets = rng.integers(0, v, size=lead)
    targets[rng.random(lead) < 0.3] = -100
    targets.reshape(-1)[0] = rng.integers(0, v)
    return logits, targets, float(rng.uniform(0.5, 2.0))


def reference(logits, targets, ignore_index=-100):
    z, t = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    losses = []
    for n in range(len(t)):
        if t[n] == ignore_index:
            continue
        total = sum(math.exp(float(x)) for x in z[n])
        losses.append(-math.log(math.exp(float(z[n, t[n]])) / total))
    return sum(losses) / len(losses)


@given(cases())
def test_forward_matches_reference(case):
    logits, targets, _ = case
    loss, _ = cross_entropy_forward(logits, targets)
    assert loss.shape == ()
    assert float(loss) == pytest.approx(reference(logits, targets), rel=1e-12, abs=1e-12)


@given(cases())
def test_backward_matches_gradcheck(case):
    logits, targets, dloss = case
    _, cache = cross_entropy_forward(logits, targets)
    logits_before = logits.copy()
    dlogits = cross_entropy_backward(cache, dloss)
    np.testing.assert_array_equal(cache.logits, logits_before)   # the cache is left alone
    assert dlogits.shape == logits.shape
    # Rows predicted with a margin of ~15 have gradients ~exp(-15), below the checker's
    # rounding noise (1e-16 |logits| / h); skip the rare case where every kept row is like that.
    assume(np.abs(dlogits).max() > 1e-3 or logits.shape[-1] == 1)
    f = lambda: cross_entropy_forward(logits, targets)[0]  # noqa: E731
    assert check_gradient(f, logits, dlogits, np.array(dloss)) < 1e-6


def test_ignored_rows_have_no_loss_and_no_gradient():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 3, 5))
    targets = np.array([[1, -100, 4], [-100, 0, 2]])
    loss, cache = cross_entropy_forward(logits, targets)
    keep = targets != -100
    kept_loss, _ = cross_entropy_forward(logits[keep], targets[keep])
    assert float(loss) == pytest.approx(float(kept_loss), rel=1e-15)   # mean over the 4 kept rows
    dlogits = cross_entropy_backward(cache)
    np.testing.assert_array_equal(dlogits[~keep], 0.0)
    np.testing.assert_allclose(dlogits[keep].sum(axis=-1), 0.0, atol=1e-15)


def test_custom_ignore_index():
    logits = np.random.default_rng(1).standard_normal((4, 3))
    a, _ = cross_entropy_forward(logits, np.array([0, 2, 1, 2]), ignore_index=2)
    b, _ = cross_entropy_forward(logits[[0, 2]], np.array([0, 1]))
    assert float(a) == pytest.approx(float(b), rel=1e-15)


def test_all_ignored_gives_zero_loss_and_zero_gradient():
    logits = np.random.default_rng(2).standard_normal((2, 3, 4))
    loss, cache = cross_entropy_forward(logits, np.full((2, 3), -100))
    assert float(loss) == 0.0                          # torch gives nan; see the module docstring
    np.testing.assert_array_equal(cross_entropy_backward(cache, 3.0), 0.0)


@pytest.mark.parametrize("bad", [5, 9, -1, -101])
def test_out_of_range_target_raises(bad):
    with pytest.raises(MiniLoraError, match=rf"target {bad} .*5 classes"):
        cross_entropy_forward(np.zeros((3, 5)), np.array([0, bad, -100]))


def test_ignore_index_value_is_out_of_range_when_not_ignored():
    with pytest.raises(MiniLoraError, match="target -100"):
        cross_entropy_forward(np.zeros((2, 5)), np.array([0, -100]), ignore_index=-1)


def test_bad_inputs_raise():
    with pytest.raises(MiniLoraError, match="do not fit"):
        cross_entropy_forward(np.zeros((2, 3, 5)), np.zeros((3, 2), dtype=int))
    with pytest.raises(MiniLoraError, match="integers"):
        cross_entropy_forward(np.zeros((2, 5)), np.zeros(2))


def test_huge_logits_are_stable():
    logits = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1e4, -999.0]])
    targets = np.array([1, 2])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, cache = cross_entropy_forward(logits, targets)
        dlogits = cross_entropy_backward(cache)
    shifted, c2 = cross_entropy_forward(logits - logits.max(axis=1, keepdims=True), targets)
    assert float(loss) == pytest.approx(float(shifted), rel=1e-12)
    np.testing.assert_allclose(dlogits, cross_entropy_backward(c2), atol=1e-15)


@given(cases())
def test_float32_agrees_with_float64(case):
    # log-sum-exp over <= 7 terms and a mean over <= 12 rows; logits up to ~10 in size, so the
    # float32 loss is within about 1e-6 of it relative: tolerance 1e-5.
    logits, targets, dloss = case
    l64, c64 = cross_entropy_forward(logits, targets)
    l32, c32 = cross_entropy_forward(logits.astype(np.float32), targets)
    assert l32.dtype == np.float32
    assert float(l32) == pytest.approx(float(l64), rel=1e-5, abs=1e-5)
    d32 = cross_entropy_backward(c32, dloss)
    assert d32.dtype == np.float32
    np.testing.assert_allclose(d32, cross_entropy_backward(c64, dloss), rtol=1e-5, atol=1e-6)


# ---- the head fused with the loss, in row chunks ------------------------------------------------
@pytest.mark.parametrize("chunk_rows", [1, 2, 100])
def test_head_cross_entropy_equals_logits_then_loss_and_gradchecks(chunk_rows):
    from minilora.layers.loss import cross_entropy_fused, head_cross_entropy

    rng = np.random.default_rng(chunk_rows)
    h, w = rng.standard_normal((2, 5, 4)), rng.standard_normal((9, 4))
    targets = rng.integers(0, 9, (2, 5))
    targets[0, :3] = -100
    targets[1, -1] = -100
    loss, dh, dw = head_cross_entropy(h, w, targets, grad_w=True, chunk_rows=chunk_rows)
    ref_loss, dz = cross_entropy_fused(h @ w.T, targets)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-13)
    np.testing.assert_allclose(dh, dz @ w, rtol=1e-12, atol=1e-14)
    assert not dh[0, :3].any() and not dh[1, -1].any()          # ignored rows: zero gradient
    f = lambda: head_cross_entropy(h, w, targets, grad=False)[0]  # noqa: E731
    assert check_gradient(f, h, dh, 1.0) < 1e-7
    assert check_gradient(f, w, dw, 1.0) < 1e-7
    assert head_cross_entropy(h, w, targets, chunk_rows=chunk_rows)[2] is None   # frozen: no dW


def test_head_cross_entropy_all_ignored_and_bad_targets():
    from minilora.layers.loss import head_cross_entropy

    h, w = np.ones((2, 3, 4)), np.ones((5, 4))
    loss, dh, dw = head_cross_entropy(h, w, np.full((2, 3), -100), grad_w=True)
    assert float(loss) == 0.0 and dh.shape == h.shape and not dh.any() and not dw.any()
    with pytest.raises(MiniLoraError, match="target 5 is out of range for 5 classes"):
        head_cross_entropy(h, w, np.array([[0, 5, 1], [0, 0, 0]]))
    with pytest.raises(MiniLoraError, match="do not fit"):
        head_cross_entropy(h, w, np.zeros((2, 4), dtype=int))
