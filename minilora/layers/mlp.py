"""SwiGLU gating of the Llama MLP (Shazeer, 2020): h = silu(g) * u.

The model computes g = gate_proj(x) and u = up_proj(x) and applies down_proj(h) itself,
since any of the three projections may carry a LoRA adapter.
Forward, elementwise, with sigma the logistic sigmoid
    silu(g) = g * sigma(g)
    h       = silu(g) * u
Backward (G = dL/dh), using sigma' = sigma (1 - sigma)
    du = G * silu(g)
    dg = G * u * sigma(g) * (1 + g * (1 - sigma(g)))
sigma is evaluated as 1 / (1 + exp(-g)) in four in-place passes over one fresh array: for
g >= 0 the same operations (so the same bits) as the two-branch stable form, for g < 0 within an
ulp or two of e / (1 + e), e = exp(g); exp(-g) overflows to inf below g = -88 (float32), where
1 / inf = 0 is the right limit (the overflow is expected and silenced).
"""
from __future__ import annotations

from typing import NamedTuple

from minilora.backend import array_module, quiet_overflow


def sigmoid(x, xp):
    """1 / (1 + exp(-x)), in place in one fresh array; exp's overflow to inf (x < -88) gives 0."""
    s = xp.negative(x)
    with quiet_overflow(xp):                 # (NumPy only; CuPy raises no floating-point warnings)
        xp.exp(s, out=s)                     # exp(-x) in (0, inf]
    s += 1.0
    xp.reciprocal(s, out=s)
    return s


class SwiGLUCache(NamedTuple):
    g: object        # (..., I) gate pre-activation
    u: object        # (..., I) up projection


def swiglu_forward(g, u):
    """h = silu(g) * u. g, u (..., I) -> (h (..., I), cache)."""
    xp = array_module(g, u)
    h = sigmoid(g, xp)                       # (..., I) a fresh array, updated in place
    h *= g                                   # silu(g)
    h *= u
    return h, SwiGLUCache(g, u)


def swiglu_backward(dout, cache: SwiGLUCache, out=None):
    """Returns (dg, du), each (..., I). The sigmoid is recomputed, not cached.

    out: optional (dg, du) arrays of g's shape to write into (e.g. the two halves of one buffer).
    """
    g, u = cache
    xp = array_module(dout, g)
    dg_out, du_out = (None, None) if out is None else out
    s = sigmoid(g, xp)                       # (..., I)
    sg = g * s                               # silu(g)
    du = xp.multiply(dout, sg, out=du_out)
    dg = xp.subtract(1.0, s, out=dg_out)     # fresh (or given) arrays, updated in place:
    dg *= sg                                 # g s (1 - s)
    dg += s                                  # s (1 + g (1 - s))
    dg *= u
    dg *= dout
    return dg, du
