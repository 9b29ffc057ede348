"""Frozen-base quantization: symmetric absmax to 8 or 4 bits, per row or per group of columns.

For a weight W (out, in) and b bits, with qmax = 2^(b-1) - 1 (127 or 7), each row is cut into
groups of `group_size` consecutive input columns (one group per row when group_size is None):
    scale_g = absmax_g(|W|) / qmax                    one float32 per group   (out, n_groups)
    q       = clip(round(W / scale_g), -qmax, qmax)   integers                 (out, in)
    W~      = q * scale_g
Every element then obeys |W - W~| <= scale_g / 2 exactly (the rounding is done in float64 against
the stored float32 scale, and q * scale is exact in float64). An all-zero group gets scale 0 and
q = 0, so it dequantizes to exactly zero. This is the frozen base of QLoRA-style fine-tuning as in
FinLoRA's `quant_bits` (8 or 4); the codes are absmax integers, not NF4.

Storage: 8-bit codes are an int8 array (out, in). 4-bit codes are packed two per byte into a
uint8 array (out, ceil(in / 2)): column 2j in the low nibble, column 2j + 1 in the high nibble,
each stored as q + 8 (offset binary, 1..15; an odd last column pads with q = 0). So a 4-bit
tensor really takes half the bytes, and nbytes() reports what would be stored.

Merging an adapter into a quantized base (quant.merge.merge_into_quantized) dequantizes, adds
s * B @ A in float32 and requantizes; its report says what that costs, since an update smaller
than half a quantization step is rounded away.
"""
from __future__ import annotations

from numbers import Integral
from typing import NamedTuple

from minilora.backend import array_module
from minilora.errors import MiniLoraError


class QuantizedTensor(NamedTuple):
    q: object              # int8 (out, in) for 8 bits; uint8 (out, ceil(in/2)) packed for 4 bits
    scales: object         # float32 (out, n_groups); n_groups = 1, or ceil(in / group_size)
    bits: int              # 8 or 4
    group_size: int | None  # columns per group; None: one group per output row
    shape: tuple           # (out, in) of the original weight
    dtype: object          # dtype of the original weight (dequantize may ask for another)


def _qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def _check(bits, group_size):
    """Raise MiniLoraError for unsupported bits or a bad group size."""
    if bits not in (4, 8):
        raise MiniLoraError(f"quantization supports 8 or 4 bits, got {bits!r}")
    if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, Integral)
                                   or group_size < 1):
        raise MiniLoraError(f"group_size must be a positive integer or None, got {group_size!r}")


def _grouped(x, group, xp):
    """(out, in) -> (out, n_groups, group), padding the last group with zeros."""
    out_f, in_f = x.shape
    n_groups = -(-in_f // group)
    pad = n_groups * group - in_f
    if pad:
        x = xp.concatenate([x, xp.zeros((out_f, pad), dtype=x.dtype)], axis=1)
    return x.reshape(out_f, n_groups, group)


def _pack4(q, xp):
    """int8 codes in [-7, 7] (out, in) -> uint8 (out, ceil(in/2)), two offset nibbles a byte."""
    u = (q.astype(xp.int16) + 8).astype(xp.uint8)                  # 1..15
    if u.shape[1] % 2:
        u = xp.concatenate([u, xp.full((u.shape[0], 1), 8, dtype=xp.uint8)], axis=1)
    return (u[:, 0::2] | (u[:, 1::2] << 4)).astype(xp.uint8)


def _unpack4(p, in_f, xp):
    """The inverse of _pack4: uint8 (out, ceil(in/2)) -> int8 codes (out, in)."""
    lo = (p & 15).astype(xp.int8) - 8
    hi = (p >> 4).astype(xp.int8) - 8
    q = xp.stack([lo, hi], axis=2).reshape(p.shape[0], -1)         # (out, 2 * ceil(in/2))
    return q[:, :in_f]


def quantize(w, bits: int = 8, group_size: int | None = None) -> QuantizedTensor:
    """Symmetric absmax quantization of a float weight w (out, in). See the module docstring."""
    _check(bits, group_size)
    xp = array_module(w)
    if getattr(w, "ndim", 0) != 2:
        raise MiniLoraError(f"quantize expects a 2-d weight (out, in), got shape {getattr(w, 'shape', None)}")
    if w.dtype.kind != "f":
        raise MiniLoraError(f"quantize expects a floating-point weight, got {w.dtype}")
    if not bool(xp.isfinite(w).all()):
        raise MiniLoraError("cannot quantize a weight with inf or nan entries")
    out_f, in_f = w.shape
    group_size = None if group_size is None else int(group_size)
    group = in_f if group_size is None else group_size
    qmax = _qmax(bits)
    wg = _grouped(w.astype(xp.float64), max(group, 1), xp)          # (out, G, g)
    absmax = xp.max(xp.abs(wg), axis=2) if wg.size else xp.zeros(wg.shape[:2])
    scales = (absmax / qmax).astype(xp.float32)                     # (out, G)
    s64 = scales.astype(xp.float64)
    divisor = xp.where(s64 > 0, s64, 1.0)                           # zero group: q = 0
    q = xp.clip(xp.rint(wg / divisor[:, :, None]), -qmax, qmax).astype(xp.int8)
    q = q.reshape(out_f, -1)[:, :in_f]                              # (out, in)
    if bits == 4:
        q = _pack4(q, xp)                                           # (out, ceil(in/2))
    return QuantizedTensor(q, scales, bits, group_size, (out_f, in_f), w.dtype)


def codes(qt: QuantizedTensor):
    """The integer codes as int8 (out, in), unpacked if 4-bit."""
    xp = array_module(qt.q)
    return _unpack4(qt.q, qt.shape[1], xp) if qt.bits == 4 else qt.q


def _expand(qt: QuantizedTensor, per_group):
    """Broadcast a per-group (out, G) array to (out, in)."""
    xp = array_module(per_group)
    out_f, in_f = qt.shape
    group = in_f if qt.group_size is None else qt.group_size
    return xp.repeat(per_group, max(group, 1), axis=1)[:, :in_f]


def dequantize(qt: QuantizedTensor, dtype="float32"):
    """q * scale as an (out, in) array of dtype, rounded once.

    Computed in float32 for a float32 result: q (8 bits) times a float32 scale is one correctly
    rounded IEEE product, bit-identical to the exact float64 product cast to float32, at half the
    memory traffic (this runs on every forward of a quantized base). Wider dtypes use float64.
    """
    q = codes(qt)
    xp = array_module(q)
    ct = xp.float32 if xp.dtype(dtype) == xp.float32 else xp.float64
    scale = _expand(qt, qt.scales.astype(ct, copy=False))             # (out, in)
    return (q.astype(ct) * scale).astype(dtype, copy=False)


def error_bound(qt: QuantizedTensor):
    """Per-element bound scale / 2 on |W - dequantize(qt)| (float64, (out, in))."""
    xp = array_module(qt.scales)
    return _expand(qt, qt.scales.astype(xp.float64) / 2.0)


def nbytes(qt: QuantizedTensor) -> int:
    """Bytes stored: the codes (packed for 4 bits) plus the float32 scales."""
    return int(qt.q.nbytes + qt.scales.nbytes)


def requantize(qt: QuantizedTensor, w) -> QuantizedTensor:
    """w quantized with qt's bits and group size, keeping qt's dtype."""
    return quantize(w, qt.bits, qt.group_size)._replace(dtype=qt.dtype)


def to_backend(qt: QuantizedTensor, xp) -> QuantizedTensor:
    from minilora.backend import asarray

    return qt._replace(q=asarray(qt.q, xp), scales=asarray(qt.scales, xp))
