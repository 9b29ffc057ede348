"""Cross-entropy over logits, averaged over the non-ignored targets (torch's cross_entropy).

Forward, per row n with logits z (V,) and target t_n, over the set K of rows with
t_n != ignore_index
    lse_n = m_n + log(sum_v exp(z_nv - m_n)),   m_n = max_v z_nv    (stable log-sum-exp)
    L     = (1 / |K|) * sum_{n in K} (lse_n - z_{n t_n})
The row loss is summed as (m_n - z_{n t_n}) + log(...): for a confident row (t_n the argmax) the
first term is exactly 0 and the small loss keeps its relative precision.
Backward (dL = upstream scalar gradient)
    dz_nv = dL / |K| * (softmax(z_n)_v - [v == t_n])   for n in K;  0 for ignored rows
When every target is ignored (|K| = 0) the loss is 0 and dlogits is all zeros: a batch with
nothing to learn from is a no-op. torch returns nan there (0 / 0), which would poison the
optimiser state. The loss is a 0-d array; call float(loss) only where you log it.

cross_entropy_fused returns the loss and dlogits (for dL = 1) together, the training path's
softmax + cross-entropy fused: one exp over the logits serves both, e = exp(z - m),
    lse_n = m_n + log(s_n),  s_n = sum_v e_nv,     dz_nv = w_n (e_nv / s_n - [v == t_n]),
and no logits are cached for a backward.

head_cross_entropy puts the output layer (logits = h W^T) inside the same fusion, for training
at a large vocabulary: only the rows whose target counts go through the head, and their logits
are computed a chunk of rows at a time (ROW_CHUNK_BYTES of logits), each chunk turned into its
loss terms and its dlogits at once, which are then pushed through the head's backward
(dh = dz W, dW += dz^T h) before the next chunk: no (rows, V) array exists for all the rows at once.
"""
from __future__ import annotations

from typing import NamedTuple

from minilora.backend import array_module
from minilora.errors import MiniLoraError


class CrossEntropyCache(NamedTuple):
    logits: object   # (B, T, V) or (N, V) the input
    targets: object  # (N,) targets with ignored entries replaced by 0
    valid: object    # (N,) bool, targets that count
    lse: object      # (N,) log-sum-exp of each row
    n_valid: object  # 0-d array, |K| (at least 1 for the division)


def _rows(logits, targets, ignore_index, xp):
    """(z (N, V), t (N,) with ignored entries 0, valid (N,) bool), after checking the targets."""
    targets = xp.asarray(targets)
    if targets.shape != logits.shape[:-1]:
        raise MiniLoraError(f"targets of shape {targets.shape} do not fit logits of shape {logits.shape}")
    if targets.dtype.kind not in "iu":
        raise MiniLoraError(f"targets must be integers, got dtype {targets.dtype}")
    v = logits.shape[-1]
    z = logits.reshape(-1, v)                                            # (N, V)
    t = targets.reshape(-1)                                              # (N,)
    valid = t != ignore_index                                            # (N,)
    bad = valid & ((t < 0) | (t >= v))
    if bool(xp.any(bad)):
        first = int(t[bad][0])
        raise MiniLoraError(
            f"target {first} is out of range for {v} classes (valid 0..{v - 1}, "
            f"or ignore_index={ignore_index})")
    return z, xp.where(valid, t, 0), valid                               # t safe to gather


def cross_entropy_forward(logits, targets, ignore_index: int = -100):
    """Mean cross-entropy. logits (N, V) or (B, T, V), targets (N,) or (B, T) integer.

    Returns (loss 0-d array in logits' dtype, cache). Targets outside [0, V) other than
    ignore_index raise MiniLoraError.
    """
    xp = array_module(logits, targets)
    z, t, valid = _rows(logits, targets, ignore_index, xp)
    m = xp.max(z, axis=-1)                                               # (N,)
    log_s = xp.log(xp.sum(xp.exp(z - m[:, None]), axis=-1))              # (N,) log sum exp(z - m)
    picked = xp.take_along_axis(z, t[:, None], axis=-1)[:, 0]            # (N,) z[n, t_n]
    row = (m - picked) + log_s           # (N,) = lse - z_t, without cancelling two large terms
    n_valid = xp.maximum(xp.sum(valid), 1).astype(z.dtype)               # 0-d
    loss = xp.sum(xp.where(valid, row, 0)) / n_valid                     # 0-d
    lse = m + log_s                                                      # (N,)
    return loss, CrossEntropyCache(logits, t, valid, lse, n_valid)


def cross_entropy_backward(cache: CrossEntropyCache, dloss=1.0):
    """dlogits, of the logits' shape: dloss / |K| * (softmax - onehot) on non-ignored rows."""
    logits, t, valid, lse, n_valid = cache
    xp = array_module(logits)
    v = logits.shape[-1]
    z = logits.reshape(-1, v)                                            # (N, V)
    w = (valid.astype(z.dtype) * (dloss / n_valid)).astype(z.dtype)      # (N,) per-row weight
    dz = xp.exp(z - lse[:, None])                                        # (N, V) softmax
    dz[xp.arange(z.shape[0]), t] -= 1.0                                  # minus the one-hot
    dz *= w[:, None]
    return dz.reshape(logits.shape)


def cross_entropy_fused(logits, targets, ignore_index: int = -100):
    """(loss, dlogits): cross_entropy_forward and cross_entropy_backward (dloss = 1) in one pass.

    The same values up to rounding, with one exp over the logits instead of two and no cache.
    logits (N, V) or (B, T, V), targets (N,) or (B, T) integer; dlogits has the logits' shape.
    """
    xp = array_module(logits, targets)
    z, t, valid = _rows(logits, targets, ignore_index, xp)
    n = z.shape[0]
    m = xp.max(z, axis=-1)                                               # (N,)
    e = z - m[:, None]                                                   # (N, V) a fresh array
    xp.exp(e, out=e)                                                     # exp(z - m)
    s = xp.sum(e, axis=-1)                                               # (N,)
    picked = xp.take_along_axis(z, t[:, None], axis=-1)[:, 0]            # (N,) z[n, t_n]
    row = (m - picked) + xp.log(s)                                       # (N,) lse - z_t
    n_valid = xp.maximum(xp.sum(valid), 1).astype(z.dtype)               # 0-d
    loss = xp.sum(xp.where(valid, row, 0)) / n_valid                     # 0-d
    w = (valid.astype(z.dtype) / n_valid).astype(z.dtype)                # (N,) per-row weight
    e *= (w / s)[:, None]                                                # w * softmax
    e[xp.arange(n), t] -= w                                              # minus w * one-hot
    return loss, e.reshape(logits.shape)


ROW_CHUNK_BYTES = 1 << 25      # 32 MiB of logits per chunk: 170 rows of a 49,152-word vocabulary (each
#                                chunk reads all of W twice, so much smaller chunks are memory-bound)


def _check_targets(t, v, ignore_index, xp):
    """valid (N,) bool; raises MiniLoraError on a target outside [0, V) other than ignore_index."""
    if t.dtype.kind not in "iu":
        raise MiniLoraError(f"targets must be integers, got dtype {t.dtype}")
    valid = t != ignore_index
    bad = valid & ((t < 0) | (t >= v))
    if bool(xp.any(bad)):
        raise MiniLoraError(f"target {int(t[bad][0])} is out of range for {v} classes (valid 0..{v - 1}, "
                            f"or ignore_index={ignore_index})")
    return valid


def head_cross_entropy(h, w, targets, ignore_index: int = -100, grad: bool = True,
                       grad_w: bool = False, chunk_rows: int | None = None):
    """(loss, dh, dw): mean cross-entropy of logits = h W^T, and its gradients for dloss = 1.

    h (..., C) hidden states, w (V, C) the head, targets (...) integer (ignore_index = not counted).
    dh has h's shape (zero on ignored rows) or is None when grad=False; dw (V, C) only when grad_w.
    The value is that of cross_entropy_fused(h W^T, targets) up to rounding (rows summed by
    chunk); no (N, V) logits array is ever made.
    """
    xp = array_module(h, w)
    targets = xp.asarray(targets)
    if targets.shape != h.shape[:-1]:
        raise MiniLoraError(f"targets of shape {targets.shape} do not fit hidden states of shape {h.shape}")
    vocab, c = w.shape
    t = targets.reshape(-1)                                              # (N,)
    rows = xp.nonzero(_check_targets(t, vocab, ignore_index, xp))[0]     # (K,) the counted rows
    k = int(rows.shape[0])
    hk = h.reshape(-1, c)[rows]                                          # (K, C) a gathered copy
    tk = t[rows]                                                         # (K,)
    inv = 1.0 / max(k, 1)
    dw = xp.zeros(w.shape, dtype=w.dtype) if grad and grad_w else None
    dhk = xp.empty_like(hk) if grad else None
    step = chunk_rows or max(1, ROW_CHUNK_BYTES // (vocab * w.dtype.itemsize))
    wt = w.T                                                             # (C, V) a view
    total = xp.zeros((), dtype=h.dtype)
    for r0 in range(0, k, step):
        hc, tc = hk[r0:r0 + step], tk[r0:r0 + step]                      # (n, C), (n,)
        n = hc.shape[0]
        z = hc @ wt                                                      # (n, V) logits
        m = xp.max(z, axis=-1)                                           # (n,)
        z -= m[:, None]                                                  # z - m, in place
        picked = z[xp.arange(n), tc]                                     # (n,) z_t - m
        xp.exp(z, out=z)                                                 # e = exp(z - m)
        s = xp.sum(z, axis=-1)                                           # (n,)
        total += xp.sum(xp.log(s) - picked)                              # sum of lse - z_t
        if not grad:
            continue
        z *= (inv / s)[:, None]                                          # softmax / K
        z[xp.arange(n), tc] -= inv                                       # minus onehot / K
        xp.matmul(z, w, out=dhk[r0:r0 + n])                              # (n, V) @ (V, C) -> (n, C)
        if dw is not None:
            dw += z.T @ hc                                               # (V, n) @ (n, C) -> (V, C)
    loss = (total * inv).astype(h.dtype)
    if not grad:
        return loss, None, None
    dh = xp.zeros((t.shape[0], c), dtype=h.dtype)                        # (N, C)
    dh[rows] = dhk
    return loss, dh.reshape(h.shape), dw
