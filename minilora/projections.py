"""A model's linear projections, one at a time or as a group sharing one input (q/k/v, gate/up).

The frozen products of a group are one GEMM against the group's weights stacked by rows, as
inference engines do (a single wide GEMM runs closer to the machine's rate than three thin ones,
and the input gradient is one product instead of three plus two additions):

    y = x [W_1; W_2; ...]^T          x (..., in), stacked W (out_1 + out_2 + ..., in) -> (..., sum out)
    dx = [G_1, G_2, ...] [W_1; W_2; ...]   one (..., sum out) @ (sum out, in) product

Each module then adds its bias and its LoRA path into its own columns of y, and in the backward
its own columns of the gradient give its LoRA factors' (and, when the base trains, its weight's)
gradients: LoRA factors stay per module, with PEFT's names, and nothing is stored differently.

Where the stacked weight lives: float weights are stacked once into one array held in
``model._stacked`` and ``model.params`` then holds row views of it, so the stack costs no memory
and sees every in-place update (an optimizer step on a fully fine-tuned base). An entry is used
only while every ``params[name]`` is still its view; a weight replaced (merge, unmerge, load,
``to``) or removed (quantize) makes the next call rebuild the stack or, for a quantized base,
dequantize and stack per call; a quantized group's cache then keeps no dequantized copy, and the
backward dequantizes again (a layer at a time, QLoRA-style: the base stays quantized in memory).
The math is that of minilora.layers.linear and layers.lora.
"""
from __future__ import annotations

from typing import NamedTuple

from minilora.layers.linear import _mm2d
from minilora.layers.lora import lora_path_backward, lora_path_forward


class GroupCache(NamedTuple):
    x: object        # (..., in) the shared input, for a trainable base's dW; None when frozen
    w: object        # (sum out, in) the stacked weight, for dx; None for a quantized base (recomputed)
    names: tuple     # module names, in column order
    sizes: tuple     # each module's out features
    loras: tuple     # each module's LoraPathCache, or None


def stacked_weight(model, names):
    """(W (sum out, in), sizes): the base weights of modules `names` stacked by rows."""
    wnames = [n + ".weight" for n in names]
    if len(names) == 1:
        w = model.weight(wnames[0])
        return w, (w.shape[0],)
    entry = model._stacked.get(tuple(names))
    if entry is not None and all(model.params.get(n) is v for n, v in zip(wnames, entry[1], strict=True)):
        return entry[0], tuple(v.shape[0] for v in entry[1])
    ws = [model.weight(n) for n in wnames]
    stacked = model.xp.concatenate(ws, axis=0)                    # (sum out, in)
    sizes = tuple(w.shape[0] for w in ws)
    if all(n in model.params for n in wnames):                    # float weights: keep the stack,
        views, o = [], 0                                          # params become its row views
        for n, size in zip(wnames, sizes, strict=True):
            views.append(stacked[o:o + size])
            model.params[n] = views[-1]
            o += size
        model._stacked[tuple(names)] = (stacked, tuple(views))
    else:
        model._stacked.pop(tuple(names), None)
    return stacked, sizes


def group_forward(model, x, names, train: bool = False):
    """x (..., in) -> (y (..., sum out), cache): modules `names` on the same input, one base GEMM.

    Module k's output is y[..., o_k:o_k + out_k] (o_k the sum of the sizes before it), with its
    bias and, when the adapter is active and unmerged, its LoRA path (dropout when train) added.
    """
    w, sizes = stacked_weight(model, names)
    y = _mm2d(x, w.T)                                              # (..., in) @ (in, sum out)
    ad = model.adapters
    loras, o = [], 0
    for name, size in zip(names, sizes, strict=True):
        h = y[..., o:o + size]                                     # a view: updated in place
        o += size
        bias = model.params.get(name + ".bias")
        if bias is not None:
            h += bias
        lm = ad.modules.get(name) if ad.enabled and not ad.merged else None
        if lm is None:
            loras.append(None)
            continue
        p = lm.dropout if train else 0.0
        loras.append(lora_path_forward(h, x, model.params[name + ".lora_A.weight"],
                                       model.params[name + ".lora_B.weight"], lm.scale, p, model.rng))
    keep_x = any(n + ".weight" in model.trainable for n in names)   # else dropped: frozen needs no x
    keep_w = not any(n + ".weight" in model.quantized for n in names)
    return y, GroupCache(x if keep_x else None, w if keep_w else None, tuple(names), sizes, tuple(loras))


def group_backward(model, dout, cache: GroupCache, grads: dict):
    """dx (..., in) from dout (..., sum out); adds the group's trainable gradients into grads."""
    x, w, names, sizes, loras = cache
    if w is None:                                                  # a quantized base: dequantize again
        w, _ = stacked_weight(model, names)
    dx = _mm2d(dout, w)                                            # (..., sum out) @ (sum out, in)
    o = 0
    for name, size, lc in zip(names, sizes, loras, strict=True):
        g = dout[..., o:o + size]                                  # (..., out) this module's columns
        o += size
        if lc is not None:
            dxl, da, db = lora_path_backward(g, lc)
            dx += dxl                                              # dx is fresh: accumulate in place
            if name + ".lora_A.weight" in model.trainable:
                accumulate(grads, name + ".lora_A.weight", da)
                accumulate(grads, name + ".lora_B.weight", db)
        if name + ".weight" in model.trainable:                    # full fine-tuning only
            weight_grads(name, g, x, model, grads)
    return dx


def weight_grads(name: str, g, x, model, grads: dict):
    """dW = G^T x (and db = sum G) of a trainable base weight; a frozen one never comes here."""
    g2 = g.reshape(-1, g.shape[-1])                                # (N, out)
    accumulate(grads, name + ".weight", g2.T @ x.reshape(-1, x.shape[-1]))   # (out, N) @ (N, in)
    if name + ".bias" in model.params and name + ".bias" in model.trainable:
        accumulate(grads, name + ".bias", g2.sum(axis=0))


def accumulate(grads: dict, name: str, g):
    """grads[name] += g, creating the entry on first use (tied weights get both paths)."""
    if name in grads:
        grads[name] = grads[name] + g
    else:
        grads[name] = g
