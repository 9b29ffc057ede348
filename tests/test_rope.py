"""RoPE: tables and rotation against explicit 2x2 rotations, llama3 scaling against its piecewise rule."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilora.errors import MiniLoraError
from minilora.gradcheck import check_gradient
from minilora.layers.rope import rope_backward, rope_forward, rope_inv_freq, rope_tables

LLAMA31 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 8192}


def ref_inv_freq(d, theta, scaling=None):
    """Per-frequency python: 1/theta^(2i/d), then Llama 3.1's three regimes."""
    out = []
    for i in range(d // 2):
        f = 1.0 / theta ** (2 * i / d)
        if scaling is not None:
            factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
            old = scaling["original_max_position_embeddings"]
            wavelen = 2 * math.pi / f
            if wavelen < old / high:
                pass
            elif wavelen > old / low:
                f = f / factor
            else:
                s = (old / wavelen - low) / (high - low)
                f = (1 - s) * f / factor + s * f
        out.append(f)
    return out


def ref_rope(x, positions, inv_freq):
    """Rotate each pair (i, i + d/2) of x (B, nh, T, d) by angle positions[t] * inv_freq[i]."""
    y = np.empty_like(x)
    h = x.shape[-1] // 2
    for b, n, t in np.ndindex(x.shape[:3]):
        for i in range(h):
            a = positions[t] * inv_freq[i]
            x1, x2 = x[b, n, t, i], x[b, n, t, i + h]
            y[b, n, t, i] = math.cos(a) * x1 - math.sin(a) * x2
            y[b, n, t, i + h] = math.sin(a) * x1 + math.cos(a) * x2
    return y


@st.composite
def cases(draw):
    """(x (B, nh, T, d), positions (T,), theta, dout) in float64; positions may start past 0."""
    b, nh, t = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    d = 2 * draw(st.integers(1, 4))
    start = draw(st.sampled_from([0, 3, 1000]))
    theta = draw(st.sampled_from([10.0, 10000.0, 500000.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return (rng.standard_normal((b, nh, t, d)), np.arange(start, start + t), theta,
            rng.standard_normal((b, nh, t, d)))


@given(cases())
def test_forward_matches_pairwise_rotation(case):
    x, pos, theta, _ = case
    d = x.shape[-1]
    cos, sin = rope_tables(pos, d, theta, np, np.float64)
    assert cos.shape == sin.shape == (len(pos), d)
    y, _ = rope_forward(x, cos, sin)
    np.testing.assert_allclose(y, ref_rope(x, pos, ref_inv_freq(d, theta)), rtol=1e-12, atol=1e-12)


@given(cases())
def test_backward_matches_gradcheck(case):
    x, pos, theta, dout = case
    cos, sin = rope_tables(pos, x.shape[-1], theta, np, np.float64)
    _, cache = rope_forward(x, cos, sin)
    dout_before = dout.copy()
    dx = rope_backward(dout, cache)
    np.testing.assert_array_equal(dout, dout_before)
    assert check_gradient(lambda: rope_forward(x, cos, sin)[0], x, dx, dout) < 1e-6


def test_offset_tables_are_a_slice_of_the_full_tables():
    full_cos, full_sin = rope_tables(np.int64(12), 8, 10000.0, np, np.float64)   # an integer is a length
    assert full_cos.shape == (12, 8)
    cos, sin = rope_tables(np.arange(5, 12), 8, 10000.0, np, np.float64)
    np.testing.assert_array_equal(cos, full_cos[5:])
    np.testing.assert_array_equal(sin, full_sin[5:])


def test_scores_depend_only_on_relative_position():
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal((1, 1, 1, 8)), rng.standard_normal((1, 1, 1, 8))

    def score(m, n):
        cq, sq = rope_tables(np.array([m]), 8, 100.0, np, np.float64)
        ck, sk = rope_tables(np.array([n]), 8, 100.0, np, np.float64)
        return float(np.sum(rope_forward(q, cq, sq)[0] * rope_forward(k, ck, sk)[0]))

    assert score(7, 3) == pytest.approx(score(104, 100), rel=1e-12)


def test_per_sequence_tables_match_shared_tables():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 6))
    pos = np.array([[0, 1, 2, 3], [5, 6, 7, 8]])
    cos, sin = rope_tables(pos, 6, 10000.0, np, np.float64)      # (B, T, d)
    y, cache = rope_forward(x, cos, sin)
    for b in range(2):
        cb, sb = rope_tables(pos[b], 6, 10000.0, np, np.float64)
        np.testing.assert_array_equal(y[b:b + 1], rope_forward(x[b:b + 1], cb, sb)[0])
    dout = rng.standard_normal(x.shape)
    assert check_gradient(lambda: rope_forward(x, cos, sin)[0], x, rope_backward(dout, cache), dout) < 1e-6


@given(d=st.sampled_from([2, 8, 64, 128]), theta=st.sampled_from([10000.0, 500000.0]),
       factor=st.sampled_from([2.0, 8.0, 32.0]), low=st.sampled_from([0.5, 1.0]),
       high=st.sampled_from([2.0, 4.0]), old=st.sampled_from([64, 2048, 8192]))
def test_llama3_inv_freq_matches_piecewise_rule(d, theta, factor, low, high, old):
    sc = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
          "original_max_position_embeddings": old}
    np.testing.assert_allclose(rope_inv_freq(d, theta, np, sc), ref_inv_freq(d, theta, sc), rtol=1e-13)


def test_llama31_settings_cover_all_three_regimes():
    got = rope_inv_freq(128, 500000.0, np, LLAMA31)
    plain = rope_inv_freq(128, 500000.0, np)
    ratio = plain / got
    assert ratio[0] == 1.0 and ratio[-1] == pytest.approx(8.0, rel=1e-14)
    assert np.any((ratio > 1.0) & (ratio < 8.0))       # the smoothed middle band is not empty
    np.testing.assert_allclose(got, ref_inv_freq(128, 500000.0, LLAMA31), rtol=1e-13)


def test_scaling_dict_spellings():
    old_style = dict(LLAMA31)
    old_style["type"] = old_style.pop("rope_type")
    a = rope_tables(6, 16, 500000.0, np, np.float64, LLAMA31)
    b = rope_tables(6, 16, 500000.0, np, np.float64, old_style)
    np.testing.assert_array_equal(a[0], b[0])
    plain = rope_tables(6, 16, 500000.0, np, np.float64)
    default = rope_tables(6, 16, 500000.0, np, np.float64, {"rope_type": "default", "rope_theta": 5e5})
    np.testing.assert_array_equal(plain[1], default[1])


@pytest.mark.parametrize("bad, match", [
    ({"rope_type": "yarn", "factor": 4.0}, "unsupported"),
    ({"type": "linear", "factor": 2.0}, "unsupported"),
    ({"factor": 2.0}, "rope_type"),
    ({"rope_type": "llama3", "factor": 8.0}, "missing"),
    (dict(LLAMA31, low_freq_factor=4.0), "high_freq_factor > low_freq_factor"),
])
def test_bad_scaling_raises(bad, match):
    with pytest.raises(MiniLoraError, match=match):
        rope_tables(4, 8, 10000.0, np, np.float64, bad)


def test_bad_shapes_raise():
    with pytest.raises(MiniLoraError, match="even"):
        rope_tables(4, 7, 10000.0, np)
    cos, sin = rope_tables(4, 8, 10000.0, np)
    with pytest.raises(MiniLoraError, match="do not fit"):
        rope_forward(np.zeros((1, 1, 5, 8)), cos, sin)


@given(cases())
def test_float32_agrees_with_float64(case):
    # Tables are computed in float64 and rounded once; y is two products and a sum: under 1e-6.
    x, pos, theta, dout = case
    d = x.shape[-1]
    c64, s64 = rope_tables(pos, d, theta, np, np.float64)
    c32, s32 = rope_tables(pos, d, theta, np, np.float32)
    assert c32.dtype == s32.dtype == np.float32
    y32, cache32 = rope_forward(x.astype(np.float32), c32, s32)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, rope_forward(x, c64, s64)[0], rtol=1e-5, atol=1e-6)
    dx32 = rope_backward(dout.astype(np.float32), cache32)
    assert dx32.dtype == np.float32
    np.testing.assert_allclose(dx32, rope_backward(dout, rope_forward(x, c64, s64)[1]), rtol=1e-5, atol=1e-6)
