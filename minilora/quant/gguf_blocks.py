"""GGUF's block formats kept packed: a frozen base stored as the bytes llama.cpp stores.

A GGUF block covers 32 consecutive values of one row (along the input dimension) and holds:
    Q8_0  (34 bytes)  d (float16), 32 int8 q                  w = d * q
    Q4_0  (18 bytes)  d (float16), 16 bytes of 4-bit q        w = d * (q - 8)
    Q4_1  (20 bytes)  d, m (float16), 16 bytes of 4-bit q     w = d * q + m
In the 4-bit formats byte j of a block holds value j in its low nibble and value j + 16 in its
high nibble. A weight (out, in) is kept as the uint8 array (out, in / 32 * bytes per block) that
the `gguf` reader returns for it; dequantize() unpacks it with array operations of the input's
module (NumPy or CuPy), so a layer's weight is expanded to floats only while it is used.
The float32 result is bit-identical to gguf.quants.dequantize (tests/test_gguf_blocks.py):
d * q is exact in float32 (an 11-bit significand times an integer below 256) and Q4_1 adds m once.

Because every block lies inside one row, permuting the rows of the packed array (llama.cpp's
q/k row order, minilora.io.gguf.unpermute_qk) permutes the rows of the weight exactly.
quantize() (from float weights, and to requantize after a merge) is the `gguf` package's
reference quantizer, the rounding llama.cpp's own converter uses; it runs on the host.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minilora.backend import array_module, asarray, to_numpy
from minilora.errors import MiniLoraError

BLOCK = 32
BLOCK_BYTES = {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20}
QTYPES = tuple(BLOCK_BYTES)


class GGUFBlocks(NamedTuple):
    data: object      # uint8 (out, in // 32 * bytes per block): the packed blocks, row by row
    qtype: str        # "Q8_0", "Q4_0" or "Q4_1"
    shape: tuple      # (out, in) of the weight
    dtype: object     # dtype of the model the weight belongs to


def check_qtype(qtype: str) -> str:
    name = str(qtype).upper()
    if name not in BLOCK_BYTES:
        raise MiniLoraError(f"GGUF block type {qtype!r} is not kept packed; supported: {', '.join(QTYPES)}")
    return name


def from_packed(data, qtype: str, shape, dtype="float32") -> GGUFBlocks:
    """Wrap packed rows (out, row bytes) as read from a GGUF file; checks the byte count."""
    qtype = check_qtype(qtype)
    out_f, in_f = (int(s) for s in shape)
    want = (out_f, in_f // BLOCK * BLOCK_BYTES[qtype])
    if in_f % BLOCK or tuple(data.shape) != want or data.dtype != np.uint8:
        raise MiniLoraError(f"{qtype} blocks for a {out_f}x{in_f} weight need a uint8 array {want}, "
                            f"got {data.dtype} {tuple(data.shape)}")
    return GGUFBlocks(data, qtype, (out_f, in_f), np.dtype(dtype))


def quantize(w, qtype: str) -> GGUFBlocks:
    """Float weight w (out, in) -> qtype blocks (the gguf package's reference quantizer, on the host)."""
    import gguf

    qtype = check_qtype(qtype)
    xp = array_module(w)
    if getattr(w, "ndim", 0) != 2 or w.dtype.kind != "f":
        raise MiniLoraError(f"{qtype} quantization expects a 2-d float weight, got {getattr(w, 'shape', None)}")
    if w.shape[1] % BLOCK:
        raise MiniLoraError(f"{qtype} needs rows of a multiple of {BLOCK} values; this weight has {w.shape[1]}")
    host = to_numpy(w).astype(np.float32)
    if not np.isfinite(host).all():
        raise MiniLoraError("cannot quantize a weight with inf or nan entries")
    data = gguf.quants.quantize(host, gguf.GGMLQuantizationType[qtype])            # (out, row bytes)
    return GGUFBlocks(asarray(np.ascontiguousarray(data), xp), qtype, tuple(w.shape), w.dtype)


def _f16(lo, hi, xp, ct):
    """Two byte arrays (little-endian halves) -> their float16 values as ct."""
    bits = lo.astype(xp.uint16) | (hi.astype(xp.uint16) << 8)
    return bits.view(xp.float16).astype(ct)


def _nibbles(qs, xp):
    """(..., 16) packed bytes -> (..., 32) values: low nibbles are values 0..15, high ones 16..31."""
    return xp.concatenate([qs & 15, qs >> 4], axis=-1)


def dequantize(qt: GGUFBlocks, dtype="float32"):
    """The weight (out, in) as dtype; computed in float32 for float32 (float64 for wider dtypes)."""
    xp = array_module(qt.data)
    ct = xp.float32 if xp.dtype(dtype) == xp.float32 else xp.float64
    out_f, in_f = qt.shape
    blocks = qt.data.reshape(out_f, in_f // BLOCK, BLOCK_BYTES[qt.qtype])          # (out, nb, bytes)
    d = _f16(blocks[..., 0], blocks[..., 1], xp, ct)[..., None]                     # (out, nb, 1)
    if qt.qtype == "Q8_0":
        w = blocks[..., 2:].view(xp.int8).astype(ct)                                # (out, nb, 32)
    elif qt.qtype == "Q4_0":
        w = _nibbles(blocks[..., 2:], xp).astype(ct)
        w -= 8
    else:                                                                           # Q4_1
        w = _nibbles(blocks[..., 4:], xp).astype(ct)
    w *= d                                     # in place: one float array per weight, no temporaries
    if qt.qtype == "Q4_1":
        w += _f16(blocks[..., 2], blocks[..., 3], xp, ct)[..., None]                # + m
    return w.reshape(out_f, in_f).astype(dtype, copy=False)


def nbytes(qt: GGUFBlocks) -> int:
    """Bytes stored: the packed blocks (their scales included)."""
    return int(qt.data.nbytes)


def requantize(qt: GGUFBlocks, w) -> GGUFBlocks:
    """w in qt's block type, keeping qt's dtype."""
    return quantize(w, qt.qtype)._replace(dtype=qt.dtype)


def to_backend(qt: GGUFBlocks, xp) -> GGUFBlocks:
    return qt._replace(data=asarray(qt.data, xp))
