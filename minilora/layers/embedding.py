"""Token embedding: a row lookup into the table W (V, C), as torch.nn.Embedding.

Forward
    out[b, t] = W[ids[b, t]]                ids (B, T) integer, W (V, C) -> out (B, T, C)
Backward (G = dL/dout)
    dW[v] = sum of G[b, t] over every (b, t) with ids[b, t] == v            (V, C)
i.e. a scatter-add of the rows of G into a zero table: a token that appears twice
receives both gradients. Rows of tokens absent from the batch stay zero. ids have no
gradient. Out-of-range ids are checked explicitly, because CuPy wraps them silently.
"""
from __future__ import annotations

from typing import NamedTuple

from minilora.backend import array_module, sum_rows_by_index
from minilora.errors import MiniLoraError


class EmbeddingCache(NamedTuple):
    ids: object      # (B, T) integer token ids (any leading shape)
    vocab_size: int  # V, the number of rows of W


def check_ids(ids, vocab_size: int, xp) -> None:
    """Raise MiniLoraError unless ids are integers in [0, vocab_size)."""
    if ids.dtype.kind not in "iu":
        raise MiniLoraError(f"token ids must be integers, got dtype {ids.dtype}")
    bad = (ids < 0) | (ids >= vocab_size)
    if bool(xp.any(bad)):                   # one host sync: the guard CuPy does not do itself
        first = int(ids[bad].reshape(-1)[0])
        raise MiniLoraError(
            f"token id {first} is out of range for vocab size {vocab_size} "
            f"(valid ids are 0..{vocab_size - 1})")


def embedding_forward(ids, w):
    """out = W[ids]. ids (...) integer, w (V, C) -> (out (..., C), cache)."""
    xp = array_module(ids, w)
    ids = xp.asarray(ids)
    check_ids(ids, w.shape[0], xp)
    out = w[ids]                             # (B, T) -> (B, T, C)
    return out, EmbeddingCache(ids, w.shape[0])


def embedding_backward(dout, cache: EmbeddingCache):
    """dW (V, C) in dout's dtype: the rows of dout scatter-added at their ids."""
    ids, vocab_size = cache
    c = dout.shape[-1]
    return sum_rows_by_index(ids.reshape(-1), dout.reshape(-1, c), vocab_size)   # (N,), (N, C) -> (V, C)
