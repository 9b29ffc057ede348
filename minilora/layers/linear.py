"""Linear layer: y = x W^T + b, with W of shape (out, in) as in torch.nn.Linear.

Forward
    y = x @ W.T + b                       x (..., in), W (out, in), b (out,) -> y (..., out)
Backward (G = dL/dy)
    dx = G @ W                            (..., out) @ (out, in) -> (..., in)
    dW = G^T x  summed over the leading axes      (out, in)
    db = G summed over the leading axes           (out,)
A frozen linear (``frozen=True``) skips dW and db entirely: that matrix product
is the work LoRA saves. Derivation: docs/derivations.md#linear.
"""
from __future__ import annotations

from typing import NamedTuple


def _mm2d(x, m):
    """x (..., k) @ m (k, n) -> (..., n) as one 2-D GEMM (a stacked matmul is several small ones)."""
    return (x.reshape(-1, x.shape[-1]) @ m).reshape(x.shape[:-1] + (m.shape[1],))


class LinearCache(NamedTuple):
    x: object        # (..., in) input, needed for dW
    w: object        # (out, in) weight, needed for dx
    has_bias: bool


def linear_forward(x, w, b=None):
    """y = x W^T (+ b). Returns (y, cache); y has shape (..., out)."""
    y = _mm2d(x, w.T)                        # (..., in) @ (in, out) -> (..., out)
    if b is not None:
        y += b
    return y, LinearCache(x, w, b is not None)


def linear_backward(dout, cache: LinearCache, frozen: bool = False):
    """Returns (dx, dw, db); dw and db are None when frozen (never computed), db None without bias."""
    x, w, has_bias = cache
    dx = _mm2d(dout, w)                      # (..., out) @ (out, in) -> (..., in)
    if frozen:
        return dx, None, None
    g2 = dout.reshape(-1, dout.shape[-1])    # (N, out)
    x2 = x.reshape(-1, x.shape[-1])          # (N, in)
    dw = g2.T @ x2                           # (out, N) @ (N, in) -> (out, in)
    db = g2.sum(axis=0) if has_bias else None
    return dx, dw, db
