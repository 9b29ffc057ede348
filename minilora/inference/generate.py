"""Inference: a forward-only path with a KV cache, and sampling (greedy, temperature, top-k, top-p).

Without a cache, producing token t+1 reruns the whole prefix 0..t through every layer. The keys
and values of a position never change once computed (causal attention: position j only sees
positions <= j), so each layer keeps them in a cache:
    prefill  the prompt (B, T0) runs once; K, V (after RoPE) of positions 0..T0-1 are stored
    step     one new token (B, 1) at position t: rope tables for position t only, its k, v are
             appended at slot t, and its query attends to the cached K, V[0..t]
             (attention_forward with Tq=1 < Tk=t+1: the causal mask offsets the query to t)
The cache is preallocated to prompt + new tokens, (B, nkv, capacity, hd) per layer, so a step
copies nothing. Each layer is the model's own layer_forward (the training path) with the cache
passed in, so generation and training cannot drift apart. forward_cached(...) gives the same
logits as model.forward on the whole sequence (tests/test_generate.py). The adapter state is
honoured as in the model: active LoRA, merged, or disabled.

Sampling from the last position's logits z (B, V), in transformers' order:
    temperature  z / T                 T = 0 means greedy: argmax, no randomness
    top-k        keep the k largest    (ties with the k-th value are kept)
    top-p        keep the most likely tokens, in order, while the mass before each is < p
    draw         from softmax(z) over the kept tokens: the first index whose CDF exceeds u * total,
                 u ~ U[0, 1) from an explicit generator (no global random state) of the logits'
                 array module: model.xp.random.default_rng(seed) (generate converts another one)
Top-p orders the tokens with a stable sort, on NumPy as on CuPy (whose sort is always stable), so
tied logits keep vocabulary order and both backends keep the same nucleus.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from minilora.backend import array_module, asarray, check_allocation, generator_for, generator_module
from minilora.errors import MiniLoraError
from minilora.layers.embedding import embedding_forward
from minilora.layers.linear import linear_forward
from minilora.layers.rmsnorm import rmsnorm_forward


@dataclass
class KVCache:
    """Per-layer keys and values (after RoPE) of the first `length` positions."""
    k: list              # num_hidden_layers x (B, nkv, capacity, hd)
    v: list              # same shapes as k
    length: int = 0      # positions filled so far

    @classmethod
    def allocate(cls, model, batch: int, capacity: int) -> "KVCache":
        c, xp = model.config, model.xp
        shape = (batch, c.num_key_value_heads, capacity, c.head_dim)
        nbytes = 2 * c.num_hidden_layers * math.prod(shape) * xp.dtype(model.dtype).itemsize
        check_allocation(nbytes, f"a KV cache for {capacity:,} positions (batch {batch})", xp)
        return cls([xp.zeros(shape, dtype=model.dtype) for _ in range(c.num_hidden_layers)],
                   [xp.zeros(shape, dtype=model.dtype) for _ in range(c.num_hidden_layers)])

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]


def forward_cached(model, input_ids, cache: KVCache, last_only: bool = False):
    """Logits (B, T, V) of the new tokens input_ids (B, T) at positions cache.length.. ; fills the cache.

    last_only=True returns (B, 1, V), the only row generation needs (the head is the largest matmul).
    """
    xp = model.xp
    ids = asarray(input_ids, xp)
    if ids.ndim != 2:
        raise MiniLoraError(f"input_ids must be (batch, length), got shape {ids.shape}")
    b, t = ids.shape
    start = cache.length
    if start + t > cache.capacity:
        raise MiniLoraError(f"KV cache holds {cache.capacity} positions; {start} used, {t} more asked")
    if b != cache.k[0].shape[0]:
        raise MiniLoraError(f"KV cache was allocated for batch {cache.k[0].shape[0]}, got batch {b}")
    x, _ = embedding_forward(ids, model.params["model.embed_tokens.weight"])   # (B, T, C)
    cos, sin = model.rope(xp.arange(start, start + t))                          # (T, hd) for start..start+T-1
    for i in range(model.config.num_hidden_layers):
        x = model.layer_forward(x, i, cos, sin, kv=cache)[0]                    # the training path's layer
    cache.length = start + t
    if last_only:
        x = x[:, -1:]
    h, _ = rmsnorm_forward(x, model.params["model.norm.weight"], model.config.rms_norm_eps)
    return linear_forward(h, model.weight(model.head_weight_name()))[0]        # (B, T, V)


# ---- sampling -------------------------------------------------------------------------------
def check_sampling(temperature=0.0, top_k=None, top_p=None):
    """One clear error for a temperature, top_k or top_p out of range."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise MiniLoraError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise MiniLoraError(f"top_k must be a positive integer or None, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float))
                              or not 0.0 < top_p <= 1.0):
        raise MiniLoraError(f"top_p must be in (0, 1] or None, got {top_p!r}")


def _softmax(z, xp):
    e = xp.exp(z - xp.max(z, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


def filter_logits(z, top_k=None, top_p=None):
    """z (B, V) with every token outside the top-k, then outside the top-p nucleus, set to -inf."""
    xp = array_module(z)
    b, vocab = z.shape
    if top_k is not None and top_k < vocab:
        kth = xp.sort(z, axis=-1)[:, vocab - top_k][:, None]                     # (B, 1) k-th largest
        z = xp.where(z < kth, -xp.inf, z)
    if top_p is not None and top_p < 1.0:
        order = xp.argsort(-z, axis=-1, kind="stable")                           # (B, V) most likely first
        ps = _softmax(xp.take_along_axis(z, order, axis=-1), xp)                 # (B, V) sorted probs
        keep_sorted = (xp.cumsum(ps, axis=-1) - ps) < top_p                      # mass before each < p
        keep_sorted[:, 0] = True                                                 # never drop the best
        keep = xp.zeros_like(keep_sorted)
        keep[xp.arange(b)[:, None], order] = keep_sorted                         # back to vocab order
        z = xp.where(keep, z, -xp.inf)
    return z


def sample_next(logits, rng=None, temperature: float = 0.0, top_k=None, top_p=None):
    """Next token ids (B,) from logits (B, V): greedy when temperature == 0, else a seeded draw.

    rng: a Generator of the logits' array module (xp.random.default_rng(seed), xp = numpy or cupy);
    required to sample.
    """
    check_sampling(temperature, top_k, top_p)
    xp = array_module(logits)
    if temperature == 0:
        return xp.argmax(logits, axis=-1)
    if rng is None:
        raise MiniLoraError("sampling (temperature > 0) needs an explicit random generator, "
                            f"e.g. rng={xp.__name__}.random.default_rng(seed)")
    if generator_module(rng) is not xp:
        raise MiniLoraError(f"rng draws {generator_module(rng).__name__} arrays, the logits are "
                            f"{xp.__name__} arrays: use {xp.__name__}.random.default_rng(seed)")
    z = filter_logits(logits.astype(xp.float64) / temperature, top_k, top_p)  # (B, V)
    cdf = xp.cumsum(_softmax(z, xp), axis=-1)                                  # (B, V)
    u = rng.random((z.shape[0], 1)) * cdf[:, -1:]                              # (B, 1) in [0, total)
    idx = xp.sum(cdf <= u, axis=-1)                                            # first index with cdf > u
    return xp.minimum(idx, z.shape[1] - 1)


def generate(model, input_ids, max_new_tokens: int, temperature: float = 0.0, top_k=None, top_p=None,
             rng=None, eos_token_id=None, use_cache: bool = True):
    """Continue input_ids (T0,) or (B, T0) by up to max_new_tokens tokens; returns (.., T0 + n) ids.

    Greedy by default; temperature > 0 samples (after top_k / top_p) with the explicit `rng`, a
    Generator of the model's array module (model.xp.random.default_rng(seed)); a generator of the
    other module is converted once (minilora.backend.generator_for: seeded from one of its draws).
    eos_token_id (an int or a list of ints): a row that produced one keeps emitting it, and
    generation stops early once every row has. use_cache=False recomputes the whole prefix at
    every step with model.forward (the slow reference the KV cache is measured against).
    """
    check_sampling(temperature, top_k, top_p)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise MiniLoraError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    xp = model.xp
    rng = None if rng is None else generator_for(rng, xp)
    ids = asarray(input_ids, xp)
    one_row = ids.ndim == 1
    ids = ids[None] if one_row else ids
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise MiniLoraError(f"input_ids must be a non-empty (length,) or (batch, length) array, got {ids.shape}")
    eos = [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
    b, t0 = ids.shape
    if not use_cache and max_new_tokens:                # the last full forward's attention scores
        t = t0 + max_new_tokens
        check_allocation(b * model.config.num_attention_heads * t * t * xp.dtype(model.dtype).itemsize,
                         f"generating {t:,} positions without a KV cache", xp)
    pieces, finished = [ids], xp.zeros(b, dtype=bool)
    cache = None
    if use_cache and max_new_tokens:
        cache = KVCache.allocate(model, b, t0 + max_new_tokens)
        logits = forward_cached(model, ids, cache, last_only=True)[:, -1]      # (B, V) prefill
    for step in range(max_new_tokens):
        if cache is None:
            logits = model.forward(xp.concatenate(pieces, axis=1))[:, -1]      # (B, V) full recompute
        nxt = sample_next(logits, rng, temperature, top_k, top_p).astype(ids.dtype)  # (B,)
        if eos:
            nxt = xp.where(finished, eos[0], nxt)
            finished = finished | xp.isin(nxt, xp.asarray(eos))
        pieces.append(nxt[:, None])
        if eos and bool(xp.all(finished)):                                     # one host sync per token
            break
        if cache is not None and step + 1 < max_new_tokens:
            logits = forward_cached(model, nxt[:, None], cache, last_only=True)[:, -1]
    out = xp.concatenate(pieces, axis=1)
    return out[0] if one_row else out
