"""QLoRA's NF4: the code values re-derived from normal quantiles, quantize/dequantize by the
definition (nearest code value, absmax per block of 64), packing, double quantization, storage."""
from statistics import NormalDist

import numpy as np
import pytest

from minilora.errors import MiniLoraError
from minilora.quant import nf4
from minilora.quant.nf4 import BLOCK_SIZE, NF4, block_absmax, codes, dequantize, nbytes, quantize


def test_code_values_are_the_papers_normal_quantiles():
    """QLoRA appendix E: 2^(k-1) + 1 quantiles for the positive half (8 values besides 0) and 2^(k-1)
    for the negative (7), taken at probabilities evenly spaced from delta to 1/2, where delta sits
    halfway between 1 - 1/(2*15) and 1 - 1/(2*16); then zero added once and all divided by the largest."""
    norm = NormalDist()
    delta = 0.5 * ((1 - 1 / 30) + (1 - 1 / 32))
    pos = [norm.inv_cdf(p) for p in np.linspace(delta, 0.5, 9)[:-1]]
    neg = [-norm.inv_cdf(p) for p in np.linspace(delta, 0.5, 8)[:-1]]
    derived = np.array(sorted(pos + [0.0] + neg))
    derived /= derived.max()
    assert len(NF4) == 16 and NF4[0] == -1.0 and NF4[7] == 0.0 and NF4[15] == 1.0
    # the published table was normalised in float32: agreement to a few float32 ulps
    np.testing.assert_allclose(np.array(NF4), derived, rtol=0, atol=3e-7)
    assert np.all(np.diff(NF4) > 0)


def test_quantize_picks_the_nearest_code_per_block_of_64():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 96)).astype(np.float32) * 0.05            # 576 values, 9 blocks
    qt = quantize(w)
    blocks = w.reshape(-1, BLOCK_SIZE)
    absmax = np.abs(blocks).max(axis=1)
    np.testing.assert_array_equal(qt.absmax, absmax)
    x = blocks / absmax[:, None]
    brute = np.abs(x[..., None] - np.array(NF4, np.float32)).argmin(axis=-1)   # nearest code, by brute force
    np.testing.assert_array_equal(codes(qt).reshape(blocks.shape), brute)
    deq = dequantize(qt)
    np.testing.assert_array_equal(deq, (np.array(NF4, np.float32)[brute] * absmax[:, None]).reshape(w.shape))
    half_gap = np.max(np.diff(NF4)) / 2                                       # the worst rounding of a code
    bound = np.broadcast_to(half_gap * absmax[:, None], blocks.shape).reshape(w.shape)
    assert np.all(np.abs(deq - w) <= bound * (1 + 1e-6))
    assert deq.dtype == np.float32 and dequantize(qt, "float64").dtype == np.float64


def test_packing_is_two_codes_a_byte_first_in_the_high_nibble():
    w = np.array([[1.0, -1.0, 0.0]], np.float32)                            # codes 15, 0, 7 (+ a pad code)
    qt = quantize(w)
    assert list(codes(qt)) == [15, 0, 7]
    assert qt.codes.tolist() == [(15 << 4) | 0, (7 << 4) | 7]
    np.testing.assert_array_equal(dequantize(qt), w)                       # +-absmax and 0 are exact


def test_zero_block_and_padding():
    w = np.zeros((2, 40), np.float32)
    w[1, 30:] = 0.5                                 # flat 70..79: block 0 (0..63) is all zero, block 1 padded
    qt = quantize(w)
    assert qt.absmax.tolist() == [0.0, 0.5]
    np.testing.assert_array_equal(dequantize(qt), w)


def test_storage_is_half_a_byte_per_weight_plus_the_block_scales():
    w = np.random.default_rng(1).standard_normal((64, 128)).astype(np.float32)
    n, blocks = w.size, w.size // 64
    assert nbytes(quantize(w)) == n // 2 + 4 * blocks
    dq = quantize(w, double_quant=True)
    # param_calc's NF4 estimate (8-bit absmax per 64 weights, fp32 per 256 absmax) + one fp32 mean
    assert nbytes(dq) == n // 2 + blocks + 4 * -(-blocks // 256) + 4


def test_double_quantization_error_is_bounded_by_the_second_level_step():
    w = np.random.default_rng(2).standard_normal((256, 256)).astype(np.float32)
    plain, dq = quantize(w), quantize(w, double_quant=True)
    assert dq.absmax.dtype == np.int8 and dq.dq_scales.shape == (4,)
    np.testing.assert_array_equal(codes(plain), codes(dq))                  # codes come from the exact absmax
    err = np.abs(block_absmax(dq, np.float64) - plain.absmax.astype(np.float64))
    step = np.repeat(dq.dq_scales.astype(np.float64), nf4.DQ_GROUP)
    assert np.all(err <= step / 2 + 1e-6 * plain.absmax)
    rel = np.linalg.norm(dequantize(dq) - w) / np.linalg.norm(w)
    assert rel < 1.05 * np.linalg.norm(dequantize(plain) - w) / np.linalg.norm(w)


def test_nf4_beats_uniform_int4_on_normal_weights():
    """Why NF4 exists: on normally distributed weights it errs less than uniform absmax int4 per 64."""
    from minilora.quant import quantize as absmax_quantize
    from minilora.quant.formats import dequantize as deq

    w = np.random.default_rng(3).standard_normal((128, 512)).astype(np.float32)
    e_nf4 = np.linalg.norm(dequantize(quantize(w)) - w)
    e_int4 = np.linalg.norm(deq(absmax_quantize(w, 4, 64)) - w)
    assert e_nf4 < 0.9 * e_int4                                            # measured: 0.86


@pytest.mark.parametrize("bad", [np.zeros(5, np.float32), np.zeros((2, 2), np.int32),
                                 np.array([[np.nan, 1.0]], np.float32)])
def test_refuses_bad_weights(bad):
    with pytest.raises(MiniLoraError):
        quantize(bad)
