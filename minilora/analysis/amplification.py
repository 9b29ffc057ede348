"""Feature amplification (Hu et al., 2021, section 7.3, Table 7).

Does delta W amplify directions that W already uses, or directions W barely touches? Let
U (out, r) and V (in, r) hold the top-r left and right singular vectors of delta W as columns
(the paper writes the right ones as rows, V^T). Project W onto those subspaces:
    proj_delta = ||U^T W V||_F                  (r, out) @ (out, in) @ (in, r) -> (r, r)
and compare with the same projection onto W's own top-r singular subspaces, which is just
    proj_w     = sqrt(sigma_1(W)^2 + ... + sigma_r(W)^2)   (the largest any r-dim pair can give),
and onto a random pair of r-dim subspaces (proj_random). The amplification factor is
    amplification = ||delta W||_F / ||U^T W V||_F:
large when delta W is big along directions where W is small (the paper's ~21 for r = 4).
"""
from __future__ import annotations

import math

from minilora.analysis.spectra import lowrank_svd
from minilora.backend import array_module
from minilora.errors import MiniLoraError


def _random_basis(rng, d, r, xp):
    """Orthonormal columns (d, r) spanning a uniformly random r-dim subspace (QR of a Gaussian)."""
    q, rr = xp.linalg.qr(xp.asarray(rng.standard_normal((d, r)), dtype=xp.float64))
    return q * xp.sign(xp.diagonal(rr))[None, :]


def amplification(w, a, b, scale, r: int | None = None, rng=None) -> dict:
    """Table-7 numbers for one module. w (out, in) base weight; a (r_a, in), b (out, r_a).

    r: how many singular directions of delta W to project on (default: all, min(r_a, out, in)).
    rng: a Generator of w's module for the random subspaces (default: seeded with 0).
    Returns {r, delta_fro, w_fro, proj_delta, proj_w, proj_random, amplification}.
    """
    xp = array_module(w, a, b)
    if w.ndim != 2 or tuple(w.shape) != (b.shape[0], a.shape[1]):
        raise MiniLoraError(f"weight {tuple(w.shape)} does not match the update "
                            f"({b.shape[0]}, {a.shape[1]})")
    u, sigma, vh = lowrank_svd(a, b, scale)                 # (out, m), (m,), (m, in)
    m = sigma.shape[0]
    r = m if r is None else int(r)
    if not 1 <= r <= m:
        raise MiniLoraError(f"r must be in 1..{m}, got {r}")
    w64 = w.astype(xp.float64)
    if not bool(xp.all(xp.isfinite(w64))):
        raise MiniLoraError(f"base weight {tuple(w.shape)} holds non-finite values (NaN or inf)")
    proj = u[:, :r].T @ w64 @ vh[:r].T                       # (r, out) @ (out, in) @ (in, r)
    proj_delta = float(xp.linalg.norm(proj))
    try:
        sw = xp.linalg.svd(w64, compute_uv=False)
    except xp.linalg.LinAlgError as e:
        raise MiniLoraError(f"the SVD of the base weight {tuple(w.shape)} did not converge ({e})") from None
    proj_w = math.sqrt(float(xp.sum(sw[:r] ** 2)))
    rng = xp.random.default_rng(0) if rng is None else rng
    ur, vr = _random_basis(rng, w.shape[0], r, xp), _random_basis(rng, w.shape[1], r, xp)
    proj_random = float(xp.linalg.norm(ur.T @ w64 @ vr))    # (r, out) @ (out, in) @ (in, r)
    delta_fro = math.sqrt(float(xp.sum(sigma ** 2)))
    return {"r": r, "delta_fro": delta_fro, "w_fro": float(xp.linalg.norm(w64)),
            "proj_delta": proj_delta, "proj_w": proj_w, "proj_random": proj_random,
            "amplification": delta_fro / proj_delta if proj_delta > 0 else math.inf}


def amplification_table(weights: dict, adapters: dict, r: int | None = None, seed: int = 0) -> list:
    """One amplification() row (plus 'module') per module of {name: (A, B, scale)}.

    weights is {name: W (out, in)}; a module of the adapter with no weight raises MiniLoraError.
    The random subspaces of every module come from one generator seeded with `seed`.
    """
    missing = [name for name in adapters if name not in weights]
    if missing:
        raise MiniLoraError(f"no base weight for module(s): {', '.join(missing)}")
    rows, rng = [], None
    for name, (a, b, scale) in adapters.items():
        w = weights[name]
        if rng is None:
            rng = array_module(w).random.default_rng(seed)
        rows.append({"module": name, **amplification(w, a, b, scale, r, rng)})
    return rows
