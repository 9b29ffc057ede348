"""The small demo: one LoRA linear layer learns a weight change of known low rank.

A frozen W0 (out, in) and a target W0 + dW with rank(dW) = k. A LoRA layer of rank r >= k is
trained with AdamW on the mean squared error to the target's outputs. The demo checks, and
prints, that (1) the update is exactly zero at init, (2) the loss falls, (3) merged output
equals unmerged output.
"""
from __future__ import annotations

import numpy as np

from minilora.layers.linear import linear_forward
from minilora.layers.lora import LoraLinear, lora_backward
from minilora.training.optim import AdamW


def mse_forward(y, target):
    """L = mean((y - t)^2); returns (L, cache)."""
    diff = y - target
    return (diff * diff).mean(), diff


def mse_backward(diff):
    """dL/dy = 2 (y - t) / N."""
    return 2.0 * diff / diff.size


def run_linear_demo(d_in=64, d_out=48, k=4, r=8, alpha=16.0, steps=300, lr=1e-2, seed=0, log=print):
    """Train one LoRA layer on a planted rank-k update; returns a dict of the measured numbers."""
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal((d_out, d_in)) / np.sqrt(d_in)
    delta = (rng.standard_normal((d_out, k)) @ rng.standard_normal((k, d_in))) / np.sqrt(d_in * k)
    x_eval = rng.standard_normal((256, d_in))
    layer = LoraLinear(w0.copy(), r, alpha, rng, init="gaussian")

    h0, _ = layer.forward(x_eval)
    base, _ = linear_forward(x_eval, w0)
    zero_at_init = bool(np.array_equal(h0, base))
    log(f"rank of the planted update: {np.linalg.matrix_rank(delta)}; LoRA r={r}, alpha={alpha}")
    log(f"update is zero at init (LoRA output == frozen output, bit for bit): {zero_at_init}")

    opt = AdamW(lr=lr)
    params = {"lora_A": layer.lora_A, "lora_B": layer.lora_B}
    losses = []
    for step in range(steps):
        x = rng.standard_normal((64, d_in))
        target = x @ (w0 + delta).T
        h, cache = layer.forward(x, train=True)
        loss, diff = mse_forward(h, target)
        _, da, db = lora_backward(mse_backward(diff), cache)
        opt.step(params, {"lora_A": da, "lora_B": db})
        losses.append(float(loss))
        if step % 50 == 0 or step == steps - 1:
            log(f"step {step:4d}  loss {losses[-1]:.3e}")

    unmerged, _ = layer.forward(x_eval)
    layer.merge()
    merged, _ = layer.forward(x_eval)
    merge_err = float(np.max(np.abs(merged - unmerged)))
    learned = layer.weight - w0
    rel_delta_err = float(np.linalg.norm(learned - delta) / np.linalg.norm(delta))
    log(f"loss: first {losses[0]:.3e} -> last {losses[-1]:.3e} ({losses[0] / losses[-1]:.0f}x lower)")
    log(f"merged vs unmerged output: max abs diff {merge_err:.2e} (float64)")
    log(f"learned update vs planted: relative error {rel_delta_err:.2e}; trainable "
        f"{layer.num_trainable():,} of {w0.size:,} weights ({100 * layer.num_trainable() / w0.size:.1f}%)")
    return {"zero_at_init": zero_at_init, "losses": losses, "merge_err": merge_err,
            "rel_delta_err": rel_delta_err, "trainable": layer.num_trainable()}
