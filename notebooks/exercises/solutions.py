"""Reference solutions to the exercises in this folder. Try the exercise first.

Each function here has the name and signature of an exercise's stub cell;
tests/test_exercises.py puts its source in place of the stub and runs the notebook, so every
solution is graded by the same check cell a learner sees. They are written for reading, in
plain NumPy (minilora.layers has the tuned versions, with caches and in-place updates).
"""
import numpy as np


def lora_backward(G, X, W0, A, B, s):
    """h = X W0^T + s (X A^T) B^T.  G (N, out) -> (dX (N, in), dA (r, in), dB (out, r)); no dW0."""
    Z = X @ A.T                               # (N, r) the low-rank activations
    dB = s * G.T @ Z                          # (out, N) @ (N, r)
    dZ = s * G @ B                            # (N, out) @ (out, r)
    dA = dZ.T @ X                             # (r, N) @ (N, in)
    dX = G @ W0 + dZ @ A                      # frozen path + LoRA path, both reach X
    return dX, dA, dB


def merge(W0, A, B, s):
    """W0 + s B A, a new array: (out, in)."""
    return W0 + s * (B @ A)


def unmerge(W, A, B, s):
    """W - s B A: the inverse of merge, up to rounding."""
    return W - s * (B @ A)


def rmsnorm_backward(G, x, w, eps):
    """y = w * x * rrms, rrms = 1 / sqrt(mean(x^2) + eps).  -> (dx (N, C), dw (C,))."""
    C = x.shape[-1]
    rrms = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)    # (N, 1)
    xhat = x * rrms                                                        # (N, C)
    dw = np.sum(G * xhat, axis=0)                                          # (C,)
    gh = G * w                                                             # dL/dxhat
    dx = rrms * (gh - xhat * np.sum(gh * xhat, axis=-1, keepdims=True) / C)
    return dx, dw


def rope_backward(G, cos, sin):
    """y = x cos + rotate_half(x) sin is a rotation; its gradient rotates G back: G cos + rotate_half^T(G sin)."""
    h = G.shape[-1] // 2
    Gs = G * sin
    rot_t = np.concatenate([Gs[..., h:], -Gs[..., :h]], axis=-1)          # rotate_half^T([g1, g2]) = [g2, -g1]
    return G * cos + rot_t


def attention_backward(G, q, k, v):
    """Causal attention with grouped-query heads. G (nh, T, d) -> (dq (nh, T, d), dk, dv (nkv, T, d))."""
    nh, T, d = q.shape
    nkv = k.shape[0]
    g = nh // nkv
    kk, vv = np.repeat(k, g, axis=0), np.repeat(v, g, axis=0)              # (nh, T, d) head i reads kv i // g
    S = q @ kk.transpose(0, 2, 1) / np.sqrt(d)                              # (nh, T, T)
    S = np.where(np.tril(np.ones((T, T), dtype=bool)), S, -np.inf)
    P = np.exp(S - S.max(axis=-1, keepdims=True))
    P /= P.sum(axis=-1, keepdims=True)
    O = P @ vv
    dvv = P.transpose(0, 2, 1) @ G                                          # (nh, T, d)
    dP = G @ vv.transpose(0, 2, 1)                                          # (nh, T, T)
    dS = P * (dP - np.sum(G * O, axis=-1, keepdims=True))                   # rowsum(dP * P) = rowsum(G * O)
    dq = dS @ kk / np.sqrt(d)
    dkk = dS.transpose(0, 2, 1) @ q / np.sqrt(d)
    # a kv head serves g query heads: add their gradients
    dk = dkk.reshape(nkv, g, T, d).sum(axis=1)
    dv = dvv.reshape(nkv, g, T, d).sum(axis=1)
    return dq, dk, dv


def param_count(cfg, r, targets):
    """(base, LoRA) parameters of a Llama with grouped-query attention, from its config.json keys."""
    n, m, L, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    hd = cfg.get("head_dim") or n // cfg["num_attention_heads"]
    q_out, kv_out = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    shapes = {"q_proj": (n, q_out), "k_proj": (n, kv_out), "v_proj": (n, kv_out), "o_proj": (q_out, n),
              "gate_proj": (n, m), "up_proj": (n, m), "down_proj": (m, n)}            # (in, out)
    per_layer = sum(i * o for i, o in shapes.values()) + 2 * n                       # + two RMSNorms
    embeddings = V * n if cfg.get("tie_word_embeddings") else 2 * V * n              # embed_tokens, lm_head
    base = L * per_layer + embeddings + n                                            # + the final norm
    lora = L * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)
    return base, lora
