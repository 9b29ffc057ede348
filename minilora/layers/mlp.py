"""SwiGLU gating of the Llama MLP (Shazeer, 2020): h = silu(g) * u.

The model computes g = gate_proj(x) and u = up_proj(x) and applies down_proj(h) itself,
since any of the three projections may carry a LoRA adapter.
Forward, elementwise, with sigma the logistic sigmoid
    silu(g) = g * sigma(g)
    h       = silu(g) * u
Backward (G = dL/dh), using sigma' = sigma (1 - sigma)
    du = G * silu(g)
    dg = G * u * sigma(g) * (1 + g * (1 - sigma(g)))
sigma is evaluated as 1 / (1 + e) for g >= 0 and e / (1 + e) for g < 0 with e = exp(-|g|),
so no exponent overflows.
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import array_module


def sigmoid(x, xp):
    """1 / (1 + exp(-x)), with no overflow for large |x|."""
    e = xp.exp(-xp.abs(x))                   # in (0, 1]
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class SwiGLUCache(NamedTuple):
    g: object        # (..., I) gate pre-activation
    u: object        # (..., I) up projection


def swiglu_forward(g, u):
    """h = silu(g) * u. g, u (..., I) -> (h (..., I), cache)."""
    xp = array_module(g, u)
    h = g * sigmoid(g, xp) * u               # (..., I)
    return h, SwiGLUCache(g, u)


def swiglu_backward(dout, cache: SwiGLUCache):
    """Returns (dg, du), each (..., I). The sigmoid is recomputed, not cached."""
    g, u = cache
    xp = array_module(dout, g)
    s = sigmoid(g, xp)                       # (..., I)
    du = dout * (g * s)
    dg = dout * u * s * (1.0 + g * (1.0 - s))
    return dg, du
