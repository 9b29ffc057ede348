"""QLoRA's NF4 (4-bit NormalFloat) with block-wise absmax, as Dettmers et al. (2023) define it.

The 16 code values NF4 below are the paper's (section 3 and appendix E; the same table bitsandbytes
ships): quantiles of N(0, 1), normalised to [-1, 1], 8 of them for the positive half and 7 for the
negative half plus an exact zero, so that 0 is representable and the code is asymmetric.
tests/test_nf4.py re-derives them from the normal quantiles as the paper describes.

For a weight W (any 2-d shape), flattened row-major and cut into blocks of 64 values (the last one
padded with zeros):
    absmax_b = max |W_block|                            one float32 per block       (n_blocks,)
    code     = argmin_k |W / absmax_b - NF4[k]|          4 bits per value (nearest code value)
    W~       = NF4[code] * absmax_b
An all-zero block has absmax 0 and dequantizes to exactly 0. Codes are packed two per byte with
the first value of a pair in the high nibble, as bitsandbytes packs them.

Double quantization (optional, QLoRA's "DQ"): the float32 absmax values are themselves quantized,
8 bits each, in groups of 256 after subtracting their mean. The paper uses an 8-bit float for this
second level; here it is symmetric int8 absmax (one float32 scale per 256 blocks, one float32 mean
per tensor). The storage is the same as the paper's and as param_calc's estimate: 4 bits per
weight + 1 byte per 64 weights + 4 bytes per 256 blocks (+ 4 bytes for the mean).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minilora.backend import array_module
from minilora.errors import MiniLoraError

NF4 = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
       0.7229568362236023, 1.0)
BLOCK_SIZE = 64
DQ_GROUP = 256          # absmax values per second-level scale (double quantization)


class NF4Tensor(NamedTuple):
    codes: object          # uint8 (ceil(n / 2),): two 4-bit codes a byte, first value in the high nibble
    absmax: object         # float32 (n_blocks,); with double quantization int8 (n_blocks,)
    dq_scales: object      # None, or float32 (ceil(n_blocks / 256),): second-level scales
    dq_mean: object        # None, or float32 (1,): the mean subtracted before the second level
    shape: tuple           # shape of the original weight
    dtype: object          # dtype of the original weight


def _check(w):
    xp = array_module(w)
    if getattr(w, "ndim", 0) != 2:
        raise MiniLoraError(f"NF4 quantization expects a 2-d weight, got shape {getattr(w, 'shape', None)}")
    if w.dtype.kind != "f":
        raise MiniLoraError(f"NF4 quantization expects a floating-point weight, got {w.dtype}")
    if not bool(xp.isfinite(w).all()):
        raise MiniLoraError("cannot quantize a weight with inf or nan entries")
    return xp


def quantize(w, double_quant: bool = False) -> NF4Tensor:
    """NF4 codes and block absmax of w (see the module docstring)."""
    xp = _check(w)
    n = int(w.size)
    n_blocks = -(-n // BLOCK_SIZE)
    flat = xp.zeros(n_blocks * BLOCK_SIZE, dtype=xp.float32)
    flat[:n] = w.reshape(-1)
    blocks = flat.reshape(n_blocks, BLOCK_SIZE)                        # (n_blocks, 64)
    absmax = xp.max(xp.abs(blocks), axis=1)                            # (n_blocks,) float32
    x = blocks / xp.where(absmax > 0, absmax, 1.0)[:, None]            # in [-1, 1]
    table = xp.asarray(NF4, dtype=xp.float32)
    mids = (table[1:] + table[:-1]) / 2                                # 15 decision boundaries
    codes = xp.searchsorted(mids, x.reshape(-1)).astype(xp.uint8)      # nearest code value
    codes = codes[:n + n % 2]                                          # an odd count keeps one pad code
    packed = (codes[0::2] << 4) | codes[1::2]                          # (ceil(n/2),)
    if not double_quant:
        return NF4Tensor(packed.astype(xp.uint8), absmax, None, None, tuple(w.shape), w.dtype)
    q2, scales, mean = _quantize_absmax(absmax, xp)
    return NF4Tensor(packed.astype(xp.uint8), q2, scales, mean, tuple(w.shape), w.dtype)


def _quantize_absmax(absmax, xp):
    """Second level: (int8 codes (n_blocks,), float32 scales per 256, float32 mean (1,))."""
    mean = xp.mean(absmax, dtype=xp.float64).astype(xp.float32).reshape(1)
    c = (absmax - mean).astype(xp.float64)
    n_groups = -(-c.size // DQ_GROUP)
    padded = xp.zeros(n_groups * DQ_GROUP, dtype=xp.float64)
    padded[:c.size] = c
    groups = padded.reshape(n_groups, DQ_GROUP)
    scales = (xp.max(xp.abs(groups), axis=1) / 127).astype(xp.float32)  # (n_groups,)
    div = xp.where(scales > 0, scales, 1.0).astype(xp.float64)
    q2 = xp.clip(xp.rint(groups / div[:, None]), -127, 127).astype(xp.int8).reshape(-1)[:c.size]
    return q2, scales, mean


def block_absmax(qt: NF4Tensor, ct="float32"):
    """The absmax of every block as used by dequantize (after the second level, if any)."""
    xp = array_module(qt.codes)
    if qt.dq_scales is None:
        return qt.absmax.astype(ct, copy=False)
    scale = xp.repeat(qt.dq_scales.astype(ct), DQ_GROUP)[:qt.absmax.size]
    return qt.absmax.astype(ct) * scale + qt.dq_mean.astype(ct)


def codes(qt: NF4Tensor):
    """The 4-bit code indices as uint8 (n,), unpacked."""
    xp = array_module(qt.codes)
    n = int(np.prod(qt.shape))
    pairs = xp.stack([qt.codes >> 4, qt.codes & 15], axis=1)           # (ceil(n/2), 2)
    return pairs.reshape(-1)[:n]


def _pair_table(xp, ct):
    """(256, 2): the two code values a packed byte holds (high nibble first)."""
    table = np.asarray(NF4)
    byte = np.arange(256)
    return xp.asarray(np.stack([table[byte >> 4], table[byte & 15]], axis=1), dtype=ct)


def dequantize(qt: NF4Tensor, dtype="float32"):
    """NF4[code] * absmax of its block, as an array of qt.shape and dtype (one rounding in float32).

    One lookup per packed byte (a 256-entry table of code-value pairs), then one in-place product
    with the block absmax: the per-layer cost of an NF4 base in forward and backward.
    """
    xp = array_module(qt.codes)
    ct = xp.float32 if xp.dtype(dtype) == xp.float32 else xp.float64
    n = int(np.prod(qt.shape))
    absmax = block_absmax(qt, ct)                                      # (n_blocks,)
    values = xp.take(_pair_table(xp, ct), qt.codes, axis=0).reshape(-1)  # (2 * ceil(n/2),)
    pad = absmax.size * BLOCK_SIZE - values.size
    if pad:
        values = xp.concatenate([values, xp.zeros(pad, dtype=ct)])
    w = values.reshape(absmax.size, BLOCK_SIZE)                         # (n_blocks, 64)
    w *= absmax[:, None]
    return w.reshape(-1)[:n].reshape(qt.shape).astype(dtype, copy=False)


def nbytes(qt: NF4Tensor) -> int:
    """Bytes stored: packed codes + absmax (float32, or int8 + second-level scales and mean)."""
    extra = 0 if qt.dq_scales is None else int(qt.dq_scales.nbytes + qt.dq_mean.nbytes)
    return int(qt.codes.nbytes + qt.absmax.nbytes) + extra


def requantize(qt: NF4Tensor, w) -> NF4Tensor:
    """w quantized with qt's settings (double quantization or not), keeping qt's dtype."""
    return quantize(w, double_quant=qt.dq_scales is not None)._replace(dtype=qt.dtype)


def to_backend(qt: NF4Tensor, xp) -> NF4Tensor:
    from minilora.backend import asarray

    return qt._replace(**{f: asarray(getattr(qt, f), xp) for f in ("codes", "absmax", "dq_scales", "dq_mean")
                          if getattr(qt, f) is not None})
