"""Causal scaled-dot-product attention with grouped-query heads (after the projections).

With nh query heads, nkv key/value heads and g = nh / nkv, query head h reads kv head
h // g (transformers' repeat_kv). Grouping the query heads as (B, nkv, g*Tq, hd) lets one
matmul per kv head serve its whole group, with no repeated copy of k or v.
Forward, per kv head, with Q (g*Tq, hd), K, V (Tk, hd) and scale c = hd^-0.5
    S = (c Q) K^T                      (g*Tq, Tk)   the scale goes on Q, the smaller operand
    S[i, j] = -inf where j > Tk - Tq + i   (query i sits at absolute position Tk - Tq + i)
    P = softmax(S) along keys          (g*Tq, Tk)   (max subtracted first)
    O = P V                            (g*Tq, hd)
Backward (G = dL/dO)
    dV = P^T G                         (Tk, hd)     sums over the g query heads of the group
    dP = G V^T                         (g*Tq, Tk)
    dS = P * (dP - D),  D = rowsum(dP * P) = rowsum(G * O)    softmax Jacobian; masked P = 0
    dQ = c * dS K                      (g*Tq, hd)
    dK = dS^T (c Q)                    (Tk, hd)     sums over the group
D uses rowsum(dP * P) = sum_j P_ij (G_i . V_j) = G_i . O_i (FlashAttention, Dao et al. 2022):
an (g*Tq, hd) product instead of a (g*Tq, Tk) one. Tq < Tk is KV-cache decoding: the new
queries see every cached key and the causal part of theirs.

Causal blocks: the queries are taken BLOCK rows at a time; rows r0..r1-1 see keys 0..Tk-Tq+r1-1
only, so the scores right of that are neither computed nor stored (about (n+1)/2n of the full
square for n blocks) and only the block's last square needs the mask. The softmax runs in place
on each block's fresh scores, which the cache keeps, block after block, in one flat array.
"""
from __future__ import annotations

from typing import NamedTuple

from minilora.backend import array_module
from minilora.errors import MiniLoraError

BLOCK = 64           # query rows per causal block


class AttentionCache(NamedTuple):
    q: object        # (B, nkv, g, Tq, hd) scaled queries c * Q, grouped by their kv head
    k: object        # (B, nkv, Tk, hd)
    v: object        # (B, nkv, Tk, hd)
    p: object        # (sum of block sizes,) P by causal block: block (r0, r1, kend) is
                     # (B, nkv, g*(r1-r0), kend), stored one after another (see _blocks)
    out: object      # (B, nkv, g, Tq, hd) the output O (the returned array, not a copy)
    scale: float     # c = hd^-0.5


def causal_mask(tq: int, tk: int, xp):
    """(Tq, Tk) bool, True where query i (at position tk - tq + i) may attend to key j."""
    i = xp.arange(tq)[:, None]
    j = xp.arange(tk)[None, :]
    return j <= i + (tk - tq)


def _blocks(tq: int, tk: int):
    """[(r0, r1, kend)]: query rows r0..r1-1 (positions Tk-Tq+r0..) see keys 0..kend-1."""
    return [(r0, min(r0 + BLOCK, tq), tk - tq + min(r0 + BLOCK, tq)) for r0 in range(0, tq, BLOCK)]


def _rows(x, r0: int, r1: int):
    """Rows r0..r1-1 of x (B, nkv, g, T, hd) as (B, nkv, g*(r1-r0), hd) (a view for one block)."""
    b, nkv, g, _, hd = x.shape
    return x[:, :, :, r0:r1].reshape(b, nkv, g * (r1 - r0), hd)


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
    qs = q.reshape(b, nkv, g, tq, hd) * scale                           # (B, nkv, g, Tq, hd)
    blocks = _blocks(tq, tk)
    p = xp.empty(sum(b * nkv * g * (r1 - r0) * ke for r0, r1, ke in blocks), dtype=qs.dtype)
    out = xp.empty(qs.shape, dtype=qs.dtype)                            # (B, nkv, g, Tq, hd)
    off = 0
    for r0, r1, ke in blocks:
        n = r1 - r0
        pb = p[off:off + b * nkv * g * n * ke].reshape(b, nkv, g * n, ke)   # this block's P
        off += pb.size
        # S = (cQ) K^T: (B, nkv, g*n, hd) @ (B, nkv, hd, kend) -> (B, nkv, g*n, kend)
        xp.matmul(_rows(qs, r0, r1), k[:, :, :ke].swapaxes(-1, -2), out=pb)
        if n > 1:                               # only the last n keys can lie in a query's future
            bias = xp.where(causal_mask(n, n, xp), 0.0, -xp.inf).astype(pb.dtype)      # (n, n)
            pb.reshape(b, nkv, g, n, ke)[..., ke - n:] += bias
        pb -= xp.max(pb, axis=-1, keepdims=True)    # every row keeps key 0, so its max is finite
        xp.exp(pb, out=pb)
        pb /= xp.sum(pb, axis=-1, keepdims=True)    # P
        ob = pb @ v[:, :, :ke]                      # (B, nkv, g*n, kend) @ (B, nkv, kend, hd) -> (B, nkv, g*n, hd)
        out[:, :, :, r0:r1] = ob.reshape(b, nkv, g, n, hd)
    return out.reshape(b, nh, tq, hd), AttentionCache(qs, k, v, p, out, scale)


def attention_backward(dout, cache: AttentionCache):
    """Returns (dq (B, nh, Tq, hd), dk (B, nkv, Tk, hd), dv (B, nkv, Tk, hd))."""
    qs, k, v, p, out, scale = cache
    xp = array_module(dout, p)
    b, nkv, g, tq, hd = qs.shape
    dog = dout.reshape(qs.shape)                                         # (B, nkv, g, Tq, hd)
    dq = xp.empty(qs.shape, dtype=p.dtype)
    dk = xp.zeros(k.shape, dtype=p.dtype)                                # sums over the blocks
    dv = xp.zeros(v.shape, dtype=p.dtype)
    off = 0
    for r0, r1, ke in _blocks(tq, k.shape[2]):
        n = r1 - r0
        pb = p[off:off + b * nkv * g * n * ke].reshape(b, nkv, g * n, ke)   # (B, nkv, g*n, kend)
        off += pb.size
        gb = _rows(dog, r0, r1)                                          # (B, nkv, g*n, hd)
        dv[:, :, :ke] += pb.swapaxes(-1, -2) @ gb   # (B, nkv, kend, g*n) @ (B, nkv, g*n, hd)
        ds = gb @ v[:, :, :ke].swapaxes(-1, -2)     # dP: (B, nkv, g*n, hd) @ (B, nkv, hd, kend)
        ds -= xp.sum(gb * _rows(out, r0, r1), axis=-1, keepdims=True)    # dP - D, D (B, nkv, g*n, 1)
        ds *= pb                                                         # dS, in place on the fresh dP
        dqb = ds @ k[:, :, :ke]                     # (B, nkv, g*n, kend) @ (B, nkv, kend, hd)
        dqb *= scale
        dq[:, :, :, r0:r1] = dqb.reshape(b, nkv, g, n, hd)
        dk[:, :, :ke] += ds.swapaxes(-1, -2) @ _rows(qs, r0, r1)   # (B, nkv, kend, g*n) @ (B, nkv, g*n, hd)
    return dq.reshape(dout.shape), dk, dv
