"""Causal scaled-dot-product attention with grouped-query heads (after the projections).

With nh query heads, nkv key/value heads and g = nh / nkv, query head h reads kv head
h // g (transformers' repeat_kv). Grouping the query heads as (B, nkv, g*Tq, hd) lets one
matmul per kv head serve its whole group, with no repeated copy of k or v.
Forward, per kv head, with Q (g*Tq, hd), K, V (Tk, hd) and scale c = hd^-0.5
    S = c * Q K^T                      (g*Tq, Tk)
    S[i, j] = -inf where j > Tk - Tq + i   (query i sits at absolute position Tk - Tq + i)
    P = softmax(S) along keys          (g*Tq, Tk)   (max subtracted first)
    O = P V                            (g*Tq, hd)
Backward (G = dL/dO)
    dV = P^T G                         (Tk, hd)     sums over the g query heads of the group
    dP = G V^T                         (g*Tq, Tk)
    dS = P * (dP - rowsum(dP * P))     softmax Jacobian; masked entries have P = 0
    dQ = c * dS K                      (g*Tq, hd)
    dK = c * dS^T Q                    (Tk, hd)     sums over the group
Tq < Tk is KV-cache decoding: the new queries see every cached key and the causal part of theirs.
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import array_module
from ..errors import MiniLoraError


class AttentionCache(NamedTuple):
    q: object        # (B, nkv, g*Tq, hd) query heads grouped by their kv head
    k: object        # (B, nkv, Tk, hd)
    v: object        # (B, nkv, Tk, hd)
    p: object        # (B, nkv, g*Tq, Tk) attention probabilities
    scale: float     # hd^-0.5


def causal_mask(tq: int, tk: int, xp):
    """(Tq, Tk) bool, True where query i (at position tk - tq + i) may attend to key j."""
    i = xp.arange(tq)[:, None]
    j = xp.arange(tk)[None, :]
    return j <= i + (tk - tq)


def attention_forward(q, k, v):
    """softmax(causal(q k^T / sqrt(hd))) v with grouped-query heads. Returns (out, cache).

    q (B, nh, Tq, hd), k and v (B, nkv, Tk, hd), nkv dividing nh, Tq <= Tk.
    out (B, nh, Tq, hd).
    """
    xp = array_module(q, k, v)
    b, nh, tq, hd = q.shape
    nkv, tk = k.shape[1], k.shape[2]
    if k.shape != v.shape or k.shape[0] != b or k.shape[3] != hd or nh % nkv:
        raise MiniLoraError(
            f"attention shapes do not fit: q {q.shape}, k {k.shape}, v {v.shape} "
            "(need k == v shapes, equal batch and head_dim, nkv dividing nh)")
    if tq > tk:
        raise MiniLoraError(f"more queries ({tq}) than keys ({tk}): the first queries see no key")
    g = nh // nkv
    scale = hd ** -0.5
    qg = q.reshape(b, nkv, g * tq, hd)                                   # (B, nkv, g*Tq, hd)
    s = (qg @ k.swapaxes(-1, -2)) * scale       # (B, nkv, g*Tq, hd) @ (B, nkv, hd, Tk) -> (B, nkv, g*Tq, Tk)
    s = s.reshape(b, nkv, g, tq, tk)                                     # (B, nkv, g, Tq, Tk)
    s = xp.where(causal_mask(tq, tk, xp), s, -xp.inf)
    s = s - xp.max(s, axis=-1, keepdims=True)   # every row keeps key 0, so its max is finite
    e = xp.exp(s)
    p = (e / xp.sum(e, axis=-1, keepdims=True)).reshape(b, nkv, g * tq, tk)  # (B, nkv, g*Tq, Tk)
    out = p @ v                                 # (B, nkv, g*Tq, Tk) @ (B, nkv, Tk, hd) -> (B, nkv, g*Tq, hd)
    return out.reshape(b, nh, tq, hd), AttentionCache(qg, k, v, p, scale)


def attention_backward(dout, cache: AttentionCache):
    """Returns (dq (B, nh, Tq, hd), dk (B, nkv, Tk, hd), dv (B, nkv, Tk, hd))."""
    qg, k, v, p, scale = cache
    xp = array_module(dout, p)
    dog = dout.reshape(qg.shape)                                         # (B, nkv, g*Tq, hd)
    dv = p.swapaxes(-1, -2) @ dog               # (B, nkv, Tk, g*Tq) @ (B, nkv, g*Tq, hd) -> (B, nkv, Tk, hd)
    dp = dog @ v.swapaxes(-1, -2)               # (B, nkv, g*Tq, hd) @ (B, nkv, hd, Tk) -> (B, nkv, g*Tq, Tk)
    ds = p * (dp - xp.sum(dp * p, axis=-1, keepdims=True))               # (B, nkv, g*Tq, Tk)
    dq = (ds @ k) * scale                       # (B, nkv, g*Tq, Tk) @ (B, nkv, Tk, hd) -> (B, nkv, g*Tq, hd)
    dk = (ds.swapaxes(-1, -2) @ qg) * scale     # (B, nkv, Tk, g*Tq) @ (B, nkv, g*Tq, hd) -> (B, nkv, Tk, hd)
    return dq.reshape(dout.shape), dk, dv
