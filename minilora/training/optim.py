"""AdamW (Loshchilov & Hutter, 2019) over a flat dict of trainable arrays, schedule, clipping.

For each trainable parameter p with gradient g, at step t (1-based):
    m = b1 m + (1 - b1) g            v = b2 v + (1 - b2) g^2
    p = p - lr * wd * p              (decoupled weight decay, before the Adam step, as torch does)
    p = p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
Only names present in `grads` are touched: frozen weights have no gradient and no moments.

Precision: the moments and the update are kept in at least float32 (compute_dtype), and a float16
parameter is updated in float32 and rounded once. In float16, eps = 1e-8 rounds to 0, so a zero
gradient (LoRA's A at step 1, where B = 0) would give 0 / 0, and 1 - b2 = 1e-3 times a small g^2
underflows; in float32 neither happens (tests/test_optim.py trains a float16 LoRA).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from minilora.backend import array_module, compute_dtype


@dataclass
class AdamW:
    lr: float = 1e-3                # peak learning rate (the schedule multiplies it)
    betas: tuple = (0.9, 0.999)     # moment decay rates
    eps: float = 1e-8               # added to sqrt(v_hat)
    weight_decay: float = 0.0       # decoupled decay, torch.optim.AdamW semantics
    step_count: int = 0             # steps taken so far
    m: dict = field(default_factory=dict)   # first moments, keyed like the parameters
    v: dict = field(default_factory=dict)   # second moments

    def step(self, params: dict, grads: dict, lr: float | None = None):
        """Update params[name] in place for every name in grads."""
        lr = self.lr if lr is None else lr
        b1, b2 = self.betas
        self.step_count += 1
        t = self.step_count
        c1, c2 = 1.0 - b1 ** t, 1.0 - b2 ** t
        for name, g in grads.items():
            p = params[name]
            xp = array_module(p)
            ct = compute_dtype(p.dtype, xp)      # float32 for float16 parameters, else p's own dtype
            if name not in self.m:
                self.m[name] = xp.zeros(p.shape, dtype=ct)
                self.v[name] = xp.zeros(p.shape, dtype=ct)
            elif self.m[name].dtype != ct:       # moments restored from a lower-precision checkpoint
                self.m[name], self.v[name] = self.m[name].astype(ct), self.v[name].astype(ct)
            m, v = self.m[name], self.v[name]
            g = g.astype(ct, copy=False)
            pc = p.astype(ct, copy=False)        # p itself unless p is float16
            t = g * (1.0 - b1)                   # two scratch arrays per parameter, reused
            m *= b1
            m += t
            d = g * g
            d *= 1.0 - b2
            v *= b2
            v += d
            if self.weight_decay:
                pc *= 1.0 - lr * self.weight_decay
            xp.divide(v, c2, out=d)
            xp.sqrt(d, out=d)
            d += self.eps                        # sqrt(v_hat) + eps
            xp.multiply(m, lr / c1, out=t)
            t /= d
            pc -= t
            if pc is not p:
                p[...] = pc                      # one rounding to the parameter's dtype

    def state_dict(self) -> dict:
        """Arrays keyed 'm.<name>' / 'v.<name>' plus the step count (for checkpoints)."""
        d = {f"m.{k}": a for k, a in self.m.items()}
        d.update({f"v.{k}": a for k, a in self.v.items()})
        return d

    def load_state_dict(self, d: dict, step_count: int):
        self.m = {k[2:]: a for k, a in d.items() if k.startswith("m.")}
        self.v = {k[2:]: a for k, a in d.items() if k.startswith("v.")}
        self.step_count = step_count


def cosine_schedule(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Learning-rate multiplier: linear warmup from 0 to 1, then cosine decay to min_ratio."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def clip_grad_norm(grads: dict, max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most max_norm; returns the norm before.

    The norm is computed on the device and read once (one host sync per step).
    """
    if not grads:
        return 0.0
    xp = array_module(next(iter(grads.values())))
    total = xp.sqrt(sum(xp.sum(g * g) for g in grads.values()))
    norm = float(total)
    if max_norm and math.isfinite(norm) and norm > max_norm:      # a non-finite norm is left to the caller
        scale = max_norm / (norm + 1e-6)
        for g in grads.values():
            g *= scale
    return norm
