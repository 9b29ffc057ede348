"""Spectra of LoRA updates: singular values and effective rank of delta W = s * B @ A.

Hu et al. (2021), section 7, ask how many directions a learned update really uses. The singular
values come from the factors, never from the (out, in) matrix. With reduced QR factorizations
    B = Q_b R_b            (out, r) = (out, r)(r, r)
    A^T = Q_a R_a          (in, r)  = (in, r)(r, r)
the update is  s B A = Q_b (s R_b R_a^T) Q_a^T,  and the small core has svd  U_c S V_c^T (r, r), so
    delta W = (Q_b U_c) S (V_c^T Q_a^T)
is a thin svd of delta W: O((out + in) r^2) work instead of O(out in min(out, in)), and exact in
exact arithmetic because Q_b and Q_a have orthonormal columns. Everything runs in float64.

Effective rank of singular values sigma_1 >= ... >= sigma_m >= 0:
  entropy (Roy & Vetterli, 2007):  p_i = sigma_i / sum(sigma),  erank = exp(-sum p_i log p_i),
                                   a real number in [1, number of nonzero sigma_i];
  energy threshold t:              the smallest k with sum_{i<=k} sigma_i^2 >= t * sum sigma_i^2.
"""
from __future__ import annotations

import math

from minilora.backend import array_module, to_numpy
from minilora.errors import MiniLoraError


def lowrank_svd(a, b, scale):
    """Thin svd of s * B @ A from the factors. a (r, in), b (out, r).

    Returns (u (out, m), sigma (m,), vh (m, in)) in float64, m = min(r, out, in), sigma descending.
    """
    xp = array_module(a, b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
        raise MiniLoraError(f"LoRA factors must be A (r, in) and B (out, r); got A {a.shape}, "
                            f"B {b.shape}")
    qb, rb = xp.linalg.qr(b.astype(xp.float64))                    # (out, kb), (kb, r)
    qa, ra = xp.linalg.qr(a.T.astype(xp.float64))                  # (in, ka),  (ka, r)
    core = float(scale) * (rb @ ra.T)                              # (kb, r) @ (r, ka) -> (kb, ka)
    uc, sigma, vch = xp.linalg.svd(core, full_matrices=False)
    return qb @ uc, sigma, vch @ qa.T                              # (out, m), (m,), (m, in)


def delta_singular_values(a, b, scale):
    """Singular values of s * B @ A, descending, float64 (m,)."""
    return lowrank_svd(a, b, scale)[1]


def entropy_effective_rank(sigma) -> float:
    """exp of the entropy of sigma / sum(sigma) (Roy & Vetterli, 2007); 0.0 for a zero matrix."""
    xp = array_module(sigma)
    s = xp.abs(sigma.astype(xp.float64))
    total = float(xp.sum(s))
    if total == 0.0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return math.exp(float(-xp.sum(p * xp.log(p))))


def energy_rank(sigma, threshold: float = 0.9) -> int:
    """Smallest k with sum of the top-k sigma^2 >= threshold * total energy; 0 for a zero matrix."""
    if not 0.0 < threshold <= 1.0:
        raise MiniLoraError(f"energy threshold must be in (0, 1], got {threshold}")
    xp = array_module(sigma)
    s2 = xp.sort(xp.abs(sigma.astype(xp.float64)))[::-1] ** 2
    cum = xp.cumsum(s2)
    if s2.size == 0 or float(cum[-1]) == 0.0:
        return 0
    return int(xp.argmax(cum >= threshold * cum[-1])) + 1


def module_spectra(adapters: dict, thresholds=(0.9, 0.99)) -> list:
    """One row per module of {name: (A, B, scale)}: its update's spectrum and effective ranks.

    Row keys: module, r, sigma (list of floats), fro (||delta W||_F), entropy_rank, and
    energy_rank_<t> for each threshold t (e.g. energy_rank_0.9).
    """
    rows = []
    for name, (a, b, scale) in adapters.items():
        sigma = delta_singular_values(a, b, scale)
        row = {"module": name, "r": int(a.shape[0]),
               "sigma": [float(v) for v in to_numpy(sigma)],
               "fro": math.sqrt(float((sigma ** 2).sum())),
               "entropy_rank": entropy_effective_rank(sigma)}
        for t in thresholds:
            row[f"energy_rank_{t:g}"] = energy_rank(sigma, t)
        rows.append(row)
    return rows
