"""LoRA linear layer (Hu et al., 2021; PEFT's shapes and names).

Forward, with W0 (out, in) frozen, A (r, in), B (out, r), s = alpha / r
(or alpha / sqrt(r) with rsLoRA) and D a dropout mask scaled by 1/(1-p):
    u = dropout(x) = x * D                      (..., in)
    z = u @ A^T                                 (..., r)
    h = x @ W0^T (+ b) + s * z @ B^T            (..., out)
Backward (G = dL/dh)
    dB = s * G^T z          summed over the leading axes   (out, r)
    dz = s * G @ B                                         (..., r)
    dA = dz^T u             summed over the leading axes   (r, in)
    dx = G @ W0 + (dz @ A) * D                             (..., in)
dW0 is never computed. Merging folds the update into the weight:
    W_merged = W0 + s * B @ A,   and unmerging subtracts it again.
Derivation: docs/derivations.md#lora.
"""
from __future__ import annotations

import math
import warnings
from typing import NamedTuple

from minilora.backend import array_module, compute_dtype, generator_for, generator_module
from minilora.errors import MiniLoraStateError
from minilora.layers.linear import _mm2d, linear_backward, linear_forward


def lora_scaling(r: int, alpha: float, use_rslora: bool = False) -> float:
    """s = alpha / r, or alpha / sqrt(r) with rsLoRA (Kalajdzievski, 2023)."""
    return alpha / math.sqrt(r) if use_rslora else alpha / r


def init_lora_weights(in_features, out_features, r, rng, xp, init="gaussian", dtype="float32"):
    """(A, B) with A (r, in) random and B (out, r) zero, so the update starts at exactly zero.

    init="gaussian": A ~ N(0, (1/r)^2), as PEFT's init_lora_weights="gaussian" (the seed paper's
    Gaussian A). init="kaiming" (PEFT's default, init_lora_weights=True): A ~ U(-b, b) with
    b = 1/sqrt(in), which is torch's kaiming_uniform_(a=sqrt(5)) for a fan-in of `in`.
    rng is a Generator of module xp (numpy.random.default_rng / cupy.random.default_rng).
    """
    if init == "gaussian":
        a = rng.standard_normal((r, in_features)) / r
    elif init in ("kaiming", True, "default"):
        bound = 1.0 / math.sqrt(in_features)
        a = rng.uniform(-bound, bound, (r, in_features))
    else:
        raise ValueError(f"unknown LoRA init {init!r}; expected 'gaussian' or 'kaiming'")
    a = xp.asarray(a, dtype=dtype)
    b = xp.zeros((out_features, r), dtype=dtype)
    return a, b


class LoraPathCache(NamedTuple):
    u: object        # (..., in) dropout(x); x itself when no dropout
    z: object        # (..., r)  u @ A^T
    mask: object     # (..., in) scaled dropout mask, or None
    a: object        # (r, in)
    b: object        # (out, r)
    scale: float


class LoraCache(NamedTuple):
    base: object     # LinearCache of the frozen path (x, W0)
    u: object        # (..., in) dropout(x); x itself when no dropout
    z: object        # (..., r)  u @ A^T
    mask: object     # (..., in) scaled dropout mask, or None
    a: object        # (r, in)
    b: object        # (out, r)
    scale: float


def lora_path_forward(h, x, a, b, scale, dropout_p: float = 0.0, rng=None) -> LoraPathCache:
    """The LoRA path alone: h += s * dropout(x) A^T B^T, in place (h (..., out) the base output).

    Dropout (p > 0) needs rng, a Generator of the inputs' array module, so runs are reproducible.
    Used by lora_forward, and by the model where one GEMM computes several modules' base outputs.
    """
    mask = None
    u = x
    if dropout_p > 0.0:
        if rng is None:
            raise ValueError("LoRA dropout needs an explicit random generator (rng)")
        if generator_module(rng) is not array_module(x):
            raise ValueError(f"LoRA dropout: rng draws {generator_module(rng).__name__} arrays, x is a "
                             f"{array_module(x).__name__} array; use a generator of x's module")
        keep = rng.random(x.shape) >= dropout_p
        mask = keep.astype(x.dtype) / (1.0 - dropout_p)
        u = x * mask                         # (..., in)
    xp = array_module(a, b)
    z = _mm2d(u, xp.ascontiguousarray(a.T))  # (..., in) @ (in, r) -> (..., r)
    h += _mm2d(z, xp.ascontiguousarray((scale * b).T))   # (..., r) @ (r, out) -> (..., out)
    # (the small factors are copied row-major: BLAS runs these thin products faster that way)
    return LoraPathCache(u, z, mask, a, b, scale)


def lora_path_backward(dout, cache: LoraPathCache):
    """(dx_lora, dA, dB) of the LoRA path: dx_lora = (s G B A) * D is a fresh array."""
    u, z, mask, a, b, s = cache
    xp = array_module(dout)
    g2 = dout.reshape(-1, dout.shape[-1])                          # (N, out)
    db = xp.ascontiguousarray((z.reshape(-1, z.shape[-1]).T @ g2).T)   # ((r, N) @ (N, out))^T -> (out, r)
    db *= s                                  # z^T G, then transposed: BLAS is several times faster
                                             # at this thin product than at G^T z
    dz = _mm2d(dout, s * b)                                        # (..., out) @ (out, r) -> (..., r)
    da = dz.reshape(-1, dz.shape[-1]).T @ u.reshape(-1, u.shape[-1])  # (r, N) @ (N, in) -> (r, in)
    dxl = _mm2d(dz, a)                                             # (..., r) @ (r, in) -> (..., in)
    if mask is not None:
        dxl *= mask
    return dxl, da, db


def lora_forward(x, w0, a, b, scale, bias=None, dropout_p: float = 0.0, rng=None):
    """h = x W0^T (+ bias) + s * dropout(x) A^T B^T. Returns (h, cache).

    Dropout (p > 0) needs rng, a Generator of the inputs' array module, so runs are reproducible.
    """
    h, base = linear_forward(x, w0, bias)    # (..., out)
    path = lora_path_forward(h, x, a, b, scale, dropout_p, rng)
    return h, LoraCache(base, *path)


def lora_backward(dout, cache: LoraCache):
    """Returns (dx, dA, dB). The frozen weight W0 gets no gradient: none is computed."""
    dx, _, _ = linear_backward(dout, cache.base, frozen=True)     # G @ W0
    dxl, da, db = lora_path_backward(dout, LoraPathCache(*cache[1:]))
    dx += dxl                                # dx and dxl are fresh arrays: accumulate in place
    return dx, da, db


def lora_delta(a, b, scale):
    """s * B @ A in at least float32: (out, r) @ (r, in) -> (out, in)."""
    xp = array_module(a, b)
    ct = compute_dtype(xp.result_type(a, b), xp)
    return scale * (b.astype(ct) @ a.astype(ct))


def lora_merge(w0, a, b, scale):
    """W0 + s * B @ A, computed in at least float32 and cast once to W0's dtype."""
    xp = array_module(w0, a, b)
    ct = compute_dtype(w0.dtype, xp)
    return (w0.astype(ct) + lora_delta(a, b, scale)).astype(w0.dtype)


def lora_unmerge(w_merged, a, b, scale):
    """The inverse of lora_merge: W - s * B @ A (exact up to rounding)."""
    xp = array_module(w_merged, a, b)
    ct = compute_dtype(w_merged.dtype, xp)
    return (w_merged.astype(ct) - lora_delta(a, b, scale)).astype(w_merged.dtype)


class LoraLinear:
    """One adapted linear layer holding W0, A, B and whether the update is merged into W0.

    A thin stateful wrapper over the functions above for the demo and notebooks; the model keeps
    the same state in its flat parameter dict. merge() twice raises instead of adding twice.
    rng draws A; the dropout masks come from a generator of w0's array module (rng itself, or one
    seeded from it when rng is NumPy's and w0 is on the GPU: minilora.backend.generator_for).
    """

    def __init__(self, w0, r, alpha, rng, bias=None, init="gaussian", use_rslora=False,
                 dropout_p=0.0):
        xp = array_module(w0)
        out_f, in_f = w0.shape
        self.weight, self.bias = w0, bias
        self.lora_A, self.lora_B = init_lora_weights(in_f, out_f, r, rng, xp, init, w0.dtype)
        self.scale = lora_scaling(r, alpha, use_rslora)
        self.dropout_p, self.rng = dropout_p, generator_for(rng, xp)
        self.merged = False

    def forward(self, x, train: bool = False):
        """Returns (h, cache). Merged: a plain linear with the merged weight (no extra latency)."""
        if self.merged:
            if train:
                raise MiniLoraStateError("cannot train while the adapter is merged; unmerge() first")
            return linear_forward(x, self.weight, self.bias)
        p = self.dropout_p if train else 0.0
        return lora_forward(x, self.weight, self.lora_A, self.lora_B, self.scale, self.bias, p,
                            self.rng)

    def backward(self, dout, cache):
        """Returns (dx, dA, dB)."""
        return lora_backward(dout, cache)

    def merge(self):
        """Fold s*B@A into the weight. Merging an already merged layer raises."""
        if self.merged:
            raise MiniLoraStateError("adapter is already merged; merging again would add the update twice")
        self.weight = lora_merge(self.weight, self.lora_A, self.lora_B, self.scale)
        self.merged = True

    def unmerge(self):
        """Subtract s*B@A from the weight again. Unmerging an unmerged layer warns and does nothing."""
        if not self.merged:
            warnings.warn("adapter is not merged; unmerge() did nothing", stacklevel=2)
            return
        self.weight = lora_unmerge(self.weight, self.lora_A, self.lora_B, self.scale)
        self.merged = False

    def num_trainable(self) -> int:
        """r * (in + out)."""
        return int(self.lora_A.size + self.lora_B.size)
