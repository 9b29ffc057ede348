"""Checkers for the exercises in notebooks/exercises/: the learner writes a function, a check grades it.

Each check_* takes the learner's function, runs it on small random float64 inputs (non-square
and with grouped-query heads where that catches a transposed or mis-grouped answer), prints one
line per result and a verdict, and returns (ok, err): err is the largest relative error found
(minilora.gradcheck.rel_error), inf when the function raised or returned the wrong shape.

The oracles are independent of any backward pass in the package: a backward is compared with
centred finite differences (minilora.gradcheck.numerical_gradient) of the forward written out
below in plain NumPy; merging with the unmerged layer's output; the parameter count with the
shapes of every array of the model (minilora.config.LlamaConfig.param_shapes). The reference
solutions live beside the notebooks (notebooks/exercises/solutions.py), not here: a learner who
imports the checkers does not import the answers, and the tests fill the stubs from that file.

Conventions (as in minilora.layers): weights (out, in), rows map as x W^T; G = dL/d(output).
"""
from __future__ import annotations

import math

import numpy as np

from minilora.config import LlamaConfig
from minilora.gradcheck import numerical_gradient, rel_error

TOL = 1e-6           # centred differences in float64 agree to ~1e-9; a wrong formula is off by O(1)


# ---- the forwards, written out (the oracles differentiate these) --------------------------------
def lora_forward_reference(x, w0, a, b, s):
    """h = x W0^T + s (x A^T) B^T: x (N, in), w0 (out, in), a (r, in), b (out, r) -> (N, out)."""
    return x @ w0.T + s * (x @ a.T) @ b.T


def rmsnorm_forward_reference(x, w, eps):
    """y = w * x / sqrt(mean(x^2, last axis) + eps): x (N, C), w (C,) -> (N, C)."""
    return w * x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


def rope_forward_reference(x, cos, sin):
    """y = x cos + rotate_half(x) sin, rotate_half([x1, x2]) = [-x2, x1]: x (nh, T, d), cos/sin (T, d)."""
    h = x.shape[-1] // 2
    return x * cos + np.concatenate([-x[..., h:], x[..., :h]], axis=-1) * sin


def attention_forward_reference(q, k, v):
    """Causal softmax(q k^T / sqrt(d)) v; query head i reads kv head i // (nh / nkv).

    q (nh, T, d), k and v (nkv, T, d) -> (nh, T, d).
    """
    nh, t, d = q.shape
    g = nh // k.shape[0]
    kk, vv = np.repeat(k, g, axis=0), np.repeat(v, g, axis=0)          # (nh, T, d)
    s = q @ kk.transpose(0, 2, 1) / math.sqrt(d)                        # (nh, T, T)
    s = np.where(np.tril(np.ones((t, t), dtype=bool)), s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return p @ vv                                                       # (nh, T, d)


def rope_tables_reference(t, d, theta=10000.0):
    """cos, sin (T, d) for positions 0..T-1, angle[p, i] = p / theta^(2 (i mod d/2) / d)."""
    inv = theta ** (-np.arange(0, d, 2) / d)                            # (d/2,)
    ang = np.arange(t)[:, None] * np.concatenate([inv, inv])[None, :]   # (T, d)
    return np.cos(ang), np.sin(ang)


# ---- grading ------------------------------------------------------------------------------------
def _call(fn, *args):
    """(result, None) or (None, 'ExceptionType: message')."""
    try:
        return fn(*args), None
    except Exception as e:                                  # noqa: BLE001  (a learner's bug, reported)
        return None, f"{type(e).__name__}: {e}"


def _verdict(title, errs: dict, problem=None, tol=TOL):
    """Print one line per result and PASS/FAIL; return (ok, worst error)."""
    if problem:
        print(f"{title}: FAIL, {problem}")
        return False, math.inf
    for name, e in errs.items():
        print(f"  {name:<10} relative error {e:.2e}")
    worst = max(errs.values())
    ok = bool(worst < tol)
    print(f"{title}: {'PASS' if ok else 'FAIL'} (worst relative error {worst:.2e}, tolerance {tol:.0e})")
    return ok, worst


def _grade_backward(title, forward, inputs: dict, grads, g):
    """Compare grads (a tuple in the order of inputs) with finite differences of forward()."""
    names = list(inputs)
    if not isinstance(grads, (tuple, list)) or len(grads) != len(names):
        return _verdict(title, {}, f"expected a tuple of {len(names)} arrays ({', '.join(names)}), got {grads!r:.80}")
    errs = {}
    for name, grad in zip(names, grads, strict=True):
        grad = np.asarray(grad) if grad is not None else None
        if grad is None or grad.shape != inputs[name].shape:
            shape = None if grad is None else grad.shape
            return _verdict(title, {}, f"d{name} has shape {shape}, expected {inputs[name].shape}")
        errs["d" + name] = rel_error(grad.astype(np.float64), numerical_gradient(forward, inputs[name], g))
    return _verdict(title, errs)


def check_lora_backward(fn, seed: int = 0):
    """fn(G, X, W0, A, B, s) -> (dX, dA, dB); W0 is frozen and gets no gradient."""
    rng = np.random.default_rng(seed)
    n, d_in, d_out, r, s = 5, 7, 6, 3, 2.0
    x, w0 = rng.standard_normal((n, d_in)), rng.standard_normal((d_out, d_in))
    a, b, g = rng.standard_normal((r, d_in)), rng.standard_normal((d_out, r)), rng.standard_normal((n, d_out))
    grads, err = _call(fn, g, x.copy(), w0.copy(), a.copy(), b.copy(), s)
    if err:
        return _verdict("LoRA backward", {}, err)
    return _grade_backward("LoRA backward", lambda: lora_forward_reference(x, w0, a, b, s),
                           {"X": x, "A": a, "B": b}, grads, g)


def check_rmsnorm_backward(fn, seed: int = 0):
    """fn(G, x, w, eps) -> (dx, dw), x (N, C), w (C,)."""
    rng = np.random.default_rng(seed)
    x, w, g, eps = rng.standard_normal((4, 6)), rng.standard_normal(6), rng.standard_normal((4, 6)), 1e-5
    grads, err = _call(fn, g, x.copy(), w.copy(), eps)
    if err:
        return _verdict("RMSNorm backward", {}, err)
    return _grade_backward("RMSNorm backward", lambda: rmsnorm_forward_reference(x, w, eps),
                           {"x": x, "w": w}, grads, g)


def check_rope_backward(fn, seed: int = 0):
    """fn(G, cos, sin) -> dx, G (nh, T, d), cos/sin (T, d)."""
    rng = np.random.default_rng(seed)
    nh, t, d = 2, 5, 8
    cos, sin = rope_tables_reference(t, d, theta=10.0)       # a small theta: every pair really turns
    x, g = rng.standard_normal((nh, t, d)), rng.standard_normal((nh, t, d))
    dx, err = _call(fn, g, cos, sin)
    if err:
        return _verdict("RoPE backward", {}, err)
    return _grade_backward("RoPE backward", lambda: rope_forward_reference(x, cos, sin), {"x": x}, (dx,), g)


def check_attention_backward(fn, seed: int = 0):
    """fn(G, q, k, v) -> (dq, dk, dv), q (nh, T, d), k and v (nkv, T, d): 4 query heads, 2 kv heads."""
    rng = np.random.default_rng(seed)
    nh, nkv, t, d = 4, 2, 5, 3
    q, k, v = rng.standard_normal((nh, t, d)), rng.standard_normal((nkv, t, d)), rng.standard_normal((nkv, t, d))
    g = rng.standard_normal((nh, t, d))
    grads, err = _call(fn, g, q.copy(), k.copy(), v.copy())
    if err:
        return _verdict("attention backward (GQA)", {}, err)
    return _grade_backward("attention backward (GQA)", lambda: attention_forward_reference(q, k, v),
                           {"q": q, "k": k, "v": v}, grads, g)


def check_merge(merge, unmerge, seed: int = 0):
    """merge(W0, A, B, s) -> W and unmerge(W, A, B, s) -> W0, without changing their inputs."""
    rng = np.random.default_rng(seed)
    n, d_in, d_out, r, s = 5, 7, 6, 3, 2.0
    x, w0 = rng.standard_normal((n, d_in)), rng.standard_normal((d_out, d_in))
    a, b = rng.standard_normal((r, d_in)), rng.standard_normal((d_out, r))
    w0_copy = w0.copy()
    w, err = _call(merge, w0, a, b, s)
    if err:
        return _verdict("merge / unmerge", {}, err)
    if not np.array_equal(w0, w0_copy):
        return _verdict("merge / unmerge", {}, "merge changed W0 in place")
    if np.shape(w) != w0.shape:
        return _verdict("merge / unmerge", {}, f"merge returned shape {np.shape(w)}, expected {w0.shape}")
    back, err = _call(unmerge, np.array(w, dtype=np.float64), a, b, s)
    if err:
        return _verdict("merge / unmerge", {}, err)
    if np.shape(back) != w0.shape:
        return _verdict("merge / unmerge", {}, f"unmerge returned shape {np.shape(back)}, expected {w0.shape}")
    zero, err = _call(merge, w0, a, np.zeros_like(b), s)
    if err or not np.array_equal(zero, w0):
        return _verdict("merge / unmerge", {}, "merging B = 0 must give W0 exactly")
    return _verdict("merge / unmerge", {
        "merged": rel_error(x @ np.asarray(w).T, lora_forward_reference(x, w0, a, b, s)),   # vs unmerged layer
        "unmerged": rel_error(np.asarray(back), w0)}, tol=1e-12)


PARAM_CASES = [   # (config.json keys, r, targets): GQA, MQA, untied and tied embeddings, a head_dim of its own
    (dict(vocab_size=1000, hidden_size=64, intermediate_size=176, num_hidden_layers=3, num_attention_heads=8,
          num_key_value_heads=2, tie_word_embeddings=False), 4, ["q_proj", "k_proj", "v_proj"]),
    (dict(vocab_size=500, hidden_size=96, intermediate_size=256, num_hidden_layers=2, num_attention_heads=6,
          num_key_value_heads=1, tie_word_embeddings=True), 8, ["q_proj", "v_proj", "o_proj", "down_proj"]),
    (dict(vocab_size=300, hidden_size=48, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
          num_key_value_heads=2, head_dim=16, tie_word_embeddings=False), 2,
     ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
]


def param_count_reference(cfg: dict, r: int, targets) -> tuple:
    """(base, lora) counted from the shape of every array: LlamaConfig.param_shapes and linear_modules."""
    c = LlamaConfig(**cfg)
    base = sum(math.prod(shape) for shape in c.param_shapes().values())
    lora = sum(r * (fin + fout) for name, (fin, fout) in c.linear_modules().items()
               if name.rsplit(".", 1)[-1] in targets)
    return base, lora


def check_param_count(fn):
    """fn(cfg: dict of config.json keys, r, targets) -> (base parameters, LoRA parameters), exactly."""
    errs = {}
    for i, (cfg, r, targets) in enumerate(PARAM_CASES):
        got, err = _call(fn, dict(cfg), r, list(targets))
        if err:
            return _verdict("parameter count", {}, err)
        want = param_count_reference(cfg, r, targets)
        print(f"  model {i}: you {got}, exact {want}")
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            return _verdict("parameter count", {}, f"expected (base, lora), got {got!r:.80}")
        errs[f"model {i}"] = max(abs(float(g) - w) / w for g, w in zip(got, want, strict=True))
    return _verdict("parameter count", errs, tol=1e-15)          # exact: integers
