"""RMSNorm (Zhang and Sennrich, 2019) with Hugging Face Llama semantics.

Forward, over the last axis of size C (eps inside the square root, weight after normalising)
    r    = 1 / sqrt(mean(x^2) + eps)          (..., 1)  the reciprocal rms
    xhat = x * r                              (..., C)
    y    = w * xhat                           (..., C)
Backward (G = dL/dy)
    dw   = sum over the leading axes of G * xhat                  (C,)
    gh   = G * w                              dL/dxhat            (..., C)
    dx   = r * (gh - xhat * mean(gh * xhat))                      (..., C)
The last line: dxhat_i/dx_j = r (delta_ij - xhat_i xhat_j / C), since dr/dx_j = -r^3 x_j / C.
A frozen weight (``frozen=True``) gets no dw: it is not computed.
Computed in the input dtype.
"""
from __future__ import annotations

from typing import NamedTuple

from minilora.backend import array_module


class RMSNormCache(NamedTuple):
    x: object        # (..., C) input
    w: object        # (C,) weight
    rrms: object     # (..., 1) reciprocal rms, 1 / sqrt(mean(x^2) + eps)


def rmsnorm_forward(x, w, eps: float = 1e-6):
    """y = w * x / sqrt(mean(x^2, last axis) + eps). x (..., C), w (C,) -> (y (..., C), cache)."""
    xp = array_module(x, w)
    ms = xp.sum(x * x, axis=-1, keepdims=True) / x.shape[-1]           # (..., 1) mean(x^2), as xp.mean
    rrms = 1.0 / xp.sqrt(ms + eps)                                      # (..., 1)
    y = x * rrms                                                        # (..., C) xhat
    y *= w
    return y, RMSNormCache(x, w, rrms)


def rmsnorm_backward(dout, cache: RMSNormCache, frozen: bool = False):
    """Returns (dx (..., C), dw (C,)); dw is None when frozen (never computed)."""
    x, w, rrms = cache
    xp = array_module(dout, x)
    xhat = x * rrms                                                     # (..., C)
    c = x.shape[-1]
    dw = None if frozen else (dout * xhat).reshape(-1, c).sum(axis=0)   # (N, C) -> (C,)
    gh = dout * w                                                       # dL/dxhat (..., C)
    proj = xp.sum(gh * xhat, axis=-1, keepdims=True) / c                # (..., 1) mean(gh * xhat)
    xhat *= proj                                # fresh temporaries from here on, updated in place
    gh -= xhat
    gh *= rrms                                                          # dx (..., C)
    return gh, dw
