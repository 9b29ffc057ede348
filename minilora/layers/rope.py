"""Rotary position embedding (Su et al., 2021) in Hugging Face's "rotate_half" layout.

Tables, for head_dim d, position p and i in [0, d/2)
    inv_freq_i = 1 / theta^(2i / d)                 (d/2,)  (llama3 scaling may rescale it)
    angle[p]   = p * [inv_freq, inv_freq]           (d,)    the halves repeat
    cos, sin   = cos(angle), sin(angle)             (T, d)
Forward: dims i and i + d/2 rotate together by angle p * inv_freq_i
    rotate_half(x) = [-x2, x1]                      x = [x1, x2], halves of the last axis
    y = x * cos + rotate_half(x) * sin              (B, nh, T, d)
Backward (G = dL/dy): the rotation's transpose, i.e. the rotation by -angle
    dx = G * cos + rotate_half^T(G * sin),   rotate_half^T([g1, g2]) = [g2, -g1]

llama3 scaling (Llama 3.1), with wavelength lambda_i = 2 pi / inv_freq_i, L = original context,
lo = L / low_freq_factor, hi = L / high_freq_factor:
    lambda_i < hi         -> inv_freq_i                       (high frequencies unchanged)
    lambda_i > lo         -> inv_freq_i / factor              (low frequencies interpolated)
    otherwise             -> (1 - s) inv_freq_i / factor + s inv_freq_i,
                             s = (L / lambda_i - low_freq_factor) / (high_freq_factor - low_freq_factor)
The tables are computed in float64 and cast once to the requested dtype (transformers
computes them in float32), so large positions keep their precision.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

from minilora.backend import array_module
from minilora.errors import MiniLoraError

_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def _rope_type(rope_scaling):
    """The scaling type named in a rope_scaling / rope_parameters dict ('rope_type' or 'type')."""
    if rope_scaling is None:
        return "default"
    if not isinstance(rope_scaling, dict):
        raise MiniLoraError(f"rope_scaling must be a dict or None, got {type(rope_scaling).__name__}")
    kind = rope_scaling.get("rope_type", rope_scaling.get("type"))
    if kind is None:
        raise MiniLoraError("rope_scaling has neither a 'rope_type' nor a 'type' key")
    return kind


def _llama3_inv_freq(inv_freq, rope_scaling, xp):
    """inv_freq rescaled by Llama 3.1's piecewise rule (see the module docstring)."""
    missing = [k for k in _LLAMA3_KEYS if k not in rope_scaling]
    if missing:
        raise MiniLoraError(f"llama3 rope_scaling is missing {', '.join(missing)}")
    factor, low, high, old_len = (float(rope_scaling[k]) for k in _LLAMA3_KEYS)
    if factor <= 0 or low <= 0 or old_len <= 0 or not high > low:
        raise MiniLoraError(
            f"llama3 rope_scaling needs factor, low_freq_factor, original_max_position_embeddings > 0 "
            f"and high_freq_factor > low_freq_factor; got factor={factor}, low_freq_factor={low}, "
            f"high_freq_factor={high}, original_max_position_embeddings={old_len}")
    low_wavelen = old_len / low                          # longer waves than this: divide by factor
    high_wavelen = old_len / high                        # shorter waves than this: keep
    wavelen = 2 * math.pi / inv_freq                     # (d/2,)
    smooth = (old_len / wavelen - low) / (high - low)    # (d/2,) 0 at low_wavelen, 1 at high_wavelen
    medium = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    out = xp.where(wavelen > low_wavelen, inv_freq / factor, medium)
    return xp.where(wavelen < high_wavelen, inv_freq, out)


def rope_inv_freq(head_dim: int, theta: float, xp, rope_scaling=None):
    """inv_freq (head_dim/2,) in float64: 1 / theta^(2i/d), rescaled if rope_scaling says so."""
    if head_dim <= 0 or head_dim % 2:
        raise MiniLoraError(f"RoPE needs an even, positive head_dim, got {head_dim}")
    if not theta > 0:
        raise MiniLoraError(f"rope theta must be positive, got {theta}")
    kind = _rope_type(rope_scaling)
    inv_freq = 1.0 / (float(theta) ** (xp.arange(0, head_dim, 2, dtype=xp.float64) / head_dim))
    if kind == "default":
        return inv_freq
    if kind == "llama3":
        return _llama3_inv_freq(inv_freq, rope_scaling, xp)
    raise MiniLoraError(f"unsupported rope scaling type {kind!r}; supported: 'default', 'llama3'")


def rope_tables(positions, head_dim: int, theta: float, xp, dtype="float32", rope_scaling=None):
    """(cos, sin), each (T, head_dim) of dtype, for positions (T,), or for 0..T-1 given an integer T.

    For KV-cache generation pass positions = xp.arange(start, start + T). positions of shape
    (B, T) give tables (B, T, head_dim), which rope_forward also accepts.
    rope_scaling: None, {"rope_type" or "type": "default"} or {"rope_type": "llama3", "factor": ...,
    "low_freq_factor": ..., "high_freq_factor": ..., "original_max_position_embeddings": ...}.
    """
    inv_freq = rope_inv_freq(head_dim, theta, xp, rope_scaling)           # (d/2,)
    if isinstance(positions, numbers.Integral):                         # a length T
        pos = xp.arange(positions, dtype=xp.float64)                      # (T,)
    else:
        pos = xp.asarray(positions).astype(xp.float64)                    # (T,) or (B, T)
    freqs = pos[..., None] * inv_freq                                     # (T, d/2)
    angle = xp.concatenate([freqs, freqs], axis=-1)                       # (T, d)
    return xp.cos(angle).astype(dtype), xp.sin(angle).astype(dtype)


class RopeCache(NamedTuple):
    cos: object      # (T, d) or (B, 1, T, d), in x's dtype
    sin: object      # same shape as cos


def rope_forward(x, cos, sin):
    """y = x * cos + rotate_half(x) * sin. x (B, nh, T, d), cos/sin (T, d) or (B, T, d).

    Computed half by half into y (no concatenated copy of x):
    y1 = x1 cos1 - x2 sin1,  y2 = x2 cos2 + x1 sin2.
    """
    array_module(x, cos, sin)                                # mixing numpy and cupy raises
    if cos.shape != sin.shape or cos.shape[-1] != x.shape[-1] or cos.shape[-2] != x.shape[-2]:
        raise MiniLoraError(f"RoPE tables of shape {cos.shape} do not fit x of shape {x.shape}")
    if cos.ndim == 3:                                        # per-sequence positions (B, T, d)
        cos, sin = cos[:, None], sin[:, None]                # (B, 1, T, d), broadcast over heads
    cos, sin = cos.astype(x.dtype, copy=False), sin.astype(x.dtype, copy=False)
    h = x.shape[-1] // 2
    y = x * cos                                              # (B, nh, T, d) a fresh array
    y[..., :h] -= x[..., h:] * sin[..., :h]                  # + rotate_half(x) * sin, half by half
    y[..., h:] += x[..., :h] * sin[..., h:]
    return y, RopeCache(cos, sin)


def rope_backward(dout, cache: RopeCache):
    """dx (B, nh, T, d): dout rotated back by the same angles.

    dx = G cos + rotate_half^T(G sin), half by half: dx1 = G1 cos1 + G2 sin2, dx2 = G2 cos2 - G1 sin1.
    """
    cos, sin = cache
    h = dout.shape[-1] // 2
    dx = dout * cos                                          # (B, nh, T, d) a fresh array
    dx[..., :h] += dout[..., h:] * sin[..., h:]
    dx[..., h:] -= dout[..., :h] * sin[..., :h]
    return dx
