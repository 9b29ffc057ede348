"""SwiGLU gating of the Llama MLP (Shazeer, 2020): h = silu(g) * u.

The model computes g = gate_proj(x) and u = up_proj(x) and applies down_proj(h) itself,
since any of the three projections may carry a LoRA adapter.
Forward, elementwise, with sigma the logistic sigmoid
    silu(g) = g * sigma(g)
    h       = silu(g) * u
Backward (G = dL/dh), using sigma' = sigma (1 - sigma)
    du = G * silu(g)
    dg = G * u * sigma(g) * (1 + g * (1 - sigma(g)))
sigma is evaluated with one exponential, e = exp(-|g|) (never overflows), as
    sigma(g) = (e * [g < 0] + [g >= 0]) / (1 + e),
i.e. 1 / (1 + e) for g >= 0 and e / (1 + e) for g < 0: the same floating-point operations as the
two-branch form (so the same bits), without a where() over two computed branches.
"""
from __future__ import annotations

from typing import NamedTuple

from minilora.backend import array_module


def sigmoid(x, xp):
    """1 / (1 + exp(-x)) as (e [x < 0] + [x >= 0]) / (1 + e), e = exp(-|x|): no overflow."""
    e = xp.abs(x)
    xp.negative(e, out=e)
    xp.exp(e, out=e)                         # e in (0, 1]
    num = xp.multiply(e, x < 0, dtype=e.dtype)           # e where x < 0, else 0
    xp.add(num, x >= 0, out=num, dtype=e.dtype)          # 1 where x >= 0 (0 + 1 and e + 0 are exact)
    e += 1.0
    num /= e
    return num


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
