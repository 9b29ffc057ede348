"""Frozen-base quantization: exact round-trip bound, packing, zero rows, merge report by hand."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilora.errors import MiniLoraError
from minilora.quant import QuantizedTensor, codes, dequantize, error_bound, merge_into_quantized, nbytes, quantize

EPS64 = np.finfo(np.float64).eps


def _weight(seed, out_f, in_f, zero_rows=(), dtype=np.float32, spread=3.0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((out_f, in_f)) * np.exp(rng.uniform(-spread, spread, (out_f, 1)))
    w[list(zero_rows)] = 0.0
    return w.astype(dtype)


def _n_groups(in_f, group_size):
    return 1 if group_size is None else -(-in_f // group_size)


@given(seed=st.integers(0, 2**31 - 1), out_f=st.integers(1, 9), in_f=st.integers(1, 17),
       bits=st.sampled_from([4, 8]), group_size=st.sampled_from([None, 1, 2, 3, 5, 8, 64]),
       dtype=st.sampled_from([np.float16, np.float32, np.float64]), zero_first=st.booleans())
def test_round_trip_within_half_a_step(seed, out_f, in_f, bits, group_size, dtype, zero_first):
    w = _weight(seed, out_f, in_f, (0,) if zero_first else (), dtype)
    qt = quantize(w, bits, group_size)
    assert qt.shape == (out_f, in_f) and qt.dtype == w.dtype and qt.bits == bits
    assert qt.scales.dtype == np.float32 and qt.scales.shape == (out_f, _n_groups(in_f, group_size))
    q = codes(qt)
    qmax = 2 ** (bits - 1) - 1
    assert q.dtype == np.int8 and q.shape == (out_f, in_f) and np.abs(q).max() <= qmax
    # exact bound: q * scale is exact in float64, the rounding is to the nearest integer code
    err = np.abs(dequantize(qt, np.float64) - w.astype(np.float64))
    assert np.all(err <= error_bound(qt) * (1 + 4 * EPS64))
    # the absmax of each group is hit (within the float32 rounding of its scale)
    assert np.all((np.abs(q).max(axis=1) == qmax) | (np.abs(w).max(axis=1) == 0))


@given(seed=st.integers(0, 2**31 - 1), out_f=st.integers(1, 6), in_f=st.integers(1, 13))
def test_four_bit_packs_two_per_byte(seed, out_f, in_f):
    w = _weight(seed, out_f, in_f)
    q4, q8 = quantize(w, 4), quantize(w, 8)
    assert q4.q.dtype == np.uint8 and q4.q.shape == (out_f, (in_f + 1) // 2)
    assert nbytes(q4) == out_f * ((in_f + 1) // 2) + 4 * out_f
    assert nbytes(q8) == out_f * in_f + 4 * out_f
    # low nibble = even column, high nibble = odd column, each stored as q + 8
    q = codes(q4).astype(np.int16)
    assert np.array_equal(q4.q[:, : in_f // 2] & 15, q[:, 0 : 2 * (in_f // 2) : 2] + 8)
    assert np.array_equal(q4.q[:, : in_f // 2] >> 4, q[:, 1 : 2 * (in_f // 2) : 2] + 8)


def test_zero_rows_and_groups_dequantize_to_exact_zero():
    w = np.zeros((3, 8), np.float32)
    w[1, :4] = [1.0, -2.0, 0.5, 0.25]                  # second group of row 1 stays zero
    for bits in (4, 8):
        qt = quantize(w, bits, group_size=4)
        assert qt.scales[0, 0] == 0 and qt.scales[1, 1] == 0 and qt.scales[2].max() == 0
        back = dequantize(qt)
        assert np.all(back[0] == 0) and np.all(back[2] == 0) and np.all(back[1, 4:] == 0)
        assert np.all(np.isfinite(back))


def test_known_codes_eight_bit():
    w = np.array([[127.0, 32.3, -0.4, -127.0]], np.float32)
    qt = quantize(w, 8)
    assert qt.scales[0, 0] == 1.0
    assert codes(qt).tolist() == [[127, 32, 0, -127]]
    w4 = np.array([[7.0, 3.5, -2.4, 0.49]], np.float32)   # scale 1: 3.5 rounds to even (4)
    assert codes(quantize(w4, 4)).tolist() == [[7, 4, -2, 0]]


def test_dtype_preserved_and_dequantize_dtype():
    w = _weight(0, 4, 6, dtype=np.float16)
    qt = quantize(w, 8, 2)
    assert qt.dtype == np.float16
    assert dequantize(qt).dtype == np.float32
    assert dequantize(qt, np.float16).dtype == np.float16
    assert dequantize(qt, qt.dtype).dtype == np.float16


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 16, "8"])
def test_bad_bits_raise(bits):
    with pytest.raises(MiniLoraError):
        quantize(np.ones((2, 2), np.float32), bits)


@pytest.mark.parametrize("bad", [np.ones(3, np.float32), np.ones((2, 2), np.int32),
                                 np.array([[1.0, np.nan]], np.float32)])
def test_bad_weights_raise(bad):
    with pytest.raises(MiniLoraError):
        quantize(bad, 8)


@pytest.mark.parametrize("g", [0, -2, 1.5, True, "4"])
def test_bad_group_size_raises(g):
    with pytest.raises(MiniLoraError):
        quantize(np.ones((2, 2), np.float32), 8, group_size=g)


def test_numpy_integer_group_size_is_accepted():
    qt = quantize(np.ones((2, 4), np.float32), 8, group_size=np.int64(2))
    assert qt.group_size == 2 and type(qt.group_size) is int and qt.scales.shape == (2, 2)


def test_merge_report_by_hand():
    # W row 0: absmax 127 -> scale 1, codes [127, 32]; row 1 is zero (scale 0).
    w = np.array([[127.0, 32.3], [0.0, 0.0]], np.float32)
    qt = quantize(w, 8)
    # update s * B @ A with A = [[1, 0]], B = [[0.5], [2]], s = 1: [[0.5, 0], [2, 0]]
    a = np.array([[1.0, 0.0]], np.float32)
    b = np.array([[0.5], [2.0]], np.float32)
    new, rep = merge_into_quantized(qt, a, b, 1.0, w=w)
    assert isinstance(new, QuantizedTensor) and new.dtype == np.float32
    # merged dequantized base: [[127.5, 32], [2, 0]]. Row 0: scale 127.5/127, codes [127, 32]
    # (32 / 1.003937 = 31.875 -> 32), so it requantizes to [127.5, 32 * 127.5/127 = 32.125984].
    # Row 1: scale 2/127, codes [127, 0] -> [2, 0].
    assert codes(new).tolist() == [[127, 32], [127, 0]]
    s0 = np.float64(np.float32(127.5 / 127))
    requant01 = 32 * s0                                  # 32.12598...
    assert rep["max_abs_vs_dequant"] == pytest.approx(requant01 - 32.0, rel=1e-6)     # 0.125984
    assert rep["max_abs_vs_float"] == pytest.approx(32.3 - requant01, rel=1e-5)      # 0.174016
    ref_deq = np.array([[127.5, 32.0], [2.0, 0.0]])
    ref_float = np.array([[127.5, np.float32(32.3)], [2.0, 0.0]])
    got = dequantize(new, np.float64)
    assert rep["rel_vs_dequant"] == pytest.approx(
        np.linalg.norm(got - ref_deq) / np.linalg.norm(ref_deq), rel=1e-9)
    assert rep["rel_vs_dequant"] == pytest.approx(0.125984 / np.sqrt(127.5**2 + 32**2 + 4), rel=1e-4)
    assert rep["rel_vs_float"] == pytest.approx(
        np.linalg.norm(got - ref_float) / np.linalg.norm(ref_float), rel=1e-9)
    assert rep["update_rel_err"] == pytest.approx(
        np.linalg.norm(got - ref_deq) / np.sqrt(0.5**2 + 2**2), rel=1e-9)
    assert rep["requant_bound"] == pytest.approx(127.5 / 127 / 2, rel=1e-7)
    # without the float weight there is nothing to compare the exact merge against
    _, rep2 = merge_into_quantized(qt, a, b, 1.0)
    assert rep2["max_abs_vs_float"] is None and rep2["rel_vs_float"] is None


@given(seed=st.integers(0, 2**31 - 1), out_f=st.integers(1, 8), in_f=st.integers(1, 12),
       r=st.integers(1, 3), bits=st.sampled_from([4, 8]), group_size=st.sampled_from([None, 4]),
       mag=st.sampled_from([1e-4, 1e-2, 1.0]))
def test_merge_requant_error_within_bound(seed, out_f, in_f, r, bits, group_size, mag):
    rng = np.random.default_rng(seed)
    w = _weight(seed, out_f, in_f, spread=1.0)
    a = rng.standard_normal((r, in_f)).astype(np.float32)
    b = (mag * rng.standard_normal((out_f, r))).astype(np.float32)
    qt = quantize(w, bits, group_size)
    new, rep = merge_into_quantized(qt, a, b, 0.5, w=w)
    ref = dequantize(qt, np.float64) + 0.5 * (b.astype(np.float64) @ a.astype(np.float64))
    err = np.abs(dequantize(new, np.float64) - ref)
    # requantization error <= scale/2 of the new tensor, plus float32 rounding of the merge
    slack = 4 * np.finfo(np.float32).eps * (np.abs(ref) + 1e-30) * (r + 2)
    assert np.all(err <= error_bound(new) + slack)
    assert rep["max_abs_vs_dequant"] <= rep["requant_bound"] + slack.max()
    assert rep["max_abs_vs_float"] <= rep["requant_bound"] + error_bound(qt).max() + slack.max()


def test_merge_shape_mismatch_raises():
    qt = quantize(np.ones((3, 4), np.float32), 8)
    with pytest.raises(MiniLoraError):
        merge_into_quantized(qt, np.ones((1, 5), np.float32), np.ones((3, 1), np.float32), 1.0)


def test_float32_dequantize_is_bitwise_the_exact_product_rounded_once():
    import numpy as np

    from minilora.quant import codes, dequantize, quantize

    w = np.random.default_rng(0).standard_normal((33, 70)).astype(np.float32)
    for bits, group in ((8, None), (4, 16)):
        qt = quantize(w, bits, group)
        exact = dequantize(qt, "float64").astype(np.float32)
        assert np.array_equal(dequantize(qt, "float32"), exact)
        assert np.array_equal(exact, (codes(qt).astype(np.float64) * np.repeat(
            qt.scales.astype(np.float64), group or 70, axis=1)[:, :70]).astype(np.float32))
