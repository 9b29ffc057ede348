"""Subspace similarity between LoRA updates (Hu et al., 2021, section 7.2, Figures 3 and 4).

For two orthonormal bases with columns ordered by importance, U1 (d, m1) and U2 (d, m2),
    phi(i, j) = ||U1[:, :i]^T U2[:, :j]||_F^2 / min(i, j)          in [0, 1]
is the share of the smaller of the two top subspaces that lies inside the other: 1 when one
contains the other, 0 when they are orthogonal. For A matrices (r, in) the bases are their right
singular vectors (the rows of Vh: directions in the input space), which depend only on A's row
space and its singular values, so A -> R A with R orthogonal (r, r) changes nothing. For a whole
update delta W = s B A the bases are its left (output-space) or right (input-space) singular
vectors, from the thin svd in spectra.lowrank_svd.

Chance level: for independent uniformly random subspaces of dimensions i and j in R^d,
E ||U_i^T U_j||_F^2 = i j / d, so E phi(i, j) = i j / (d min(i, j)) = max(i, j) / d.

The grid of all (i, j) comes from one product M = U1^T U2 (m1, m2): the numerator of phi(i, j) is
the sum of M^2 over its top-left i x j block, a two-dimensional cumulative sum.
"""
from __future__ import annotations

from minilora.analysis.spectra import lowrank_svd
from minilora.backend import array_module, to_numpy
from minilora.errors import MiniLoraError


def right_singular_basis(a):
    """Right singular vectors of A (r, in) as columns (in, m), ordered by singular value, float64."""
    xp = array_module(a)
    _, _, vh = xp.linalg.svd(a.astype(xp.float64), full_matrices=False)   # (m, in)
    return vh.T


def delta_basis(a, b, scale, side: str = "right"):
    """Singular vectors of s * B @ A as columns: side 'left' (out, m) or 'right' (in, m)."""
    u, _, vh = lowrank_svd(a, b, scale)
    if side == "left":
        return u
    if side == "right":
        return vh.T
    raise MiniLoraError(f"side must be 'left' or 'right', got {side!r}")


def _check_bases(u1, u2):
    if u1.ndim != 2 or u2.ndim != 2 or u1.shape[0] != u2.shape[0]:
        raise MiniLoraError(f"bases must live in the same space: got {u1.shape} and {u2.shape}")


def phi_from_bases(u1, u2, i: int, j: int) -> float:
    """||U1[:, :i]^T U2[:, :j]||_F^2 / min(i, j) for orthonormal columns u1 (d, m1), u2 (d, m2)."""
    _check_bases(u1, u2)
    if not (1 <= i <= u1.shape[1] and 1 <= j <= u2.shape[1]):
        raise MiniLoraError(f"need 1 <= i <= {u1.shape[1]} and 1 <= j <= {u2.shape[1]}, "
                            f"got i={i}, j={j}")
    xp = array_module(u1, u2)
    m = u1[:, :i].T @ u2[:, :j]                                    # (i, d) @ (d, j) -> (i, j)
    return float(xp.sum(m * m)) / min(i, j)


def phi_grid_from_bases(u1, u2):
    """The matrix G[i-1, j-1] = phi(i, j) for i in 1..m1, j in 1..m2 (an array of u1's module)."""
    _check_bases(u1, u2)
    xp = array_module(u1, u2)
    m = u1.T.astype(xp.float64) @ u2.astype(xp.float64)            # (m1, d) @ (d, m2) -> (m1, m2)
    num = xp.cumsum(xp.cumsum(m * m, axis=0), axis=1)              # (m1, m2)
    i = xp.arange(1, m.shape[0] + 1)[:, None]
    j = xp.arange(1, m.shape[1] + 1)[None, :]
    return num / xp.minimum(i, j)


def phi(a1, a2, i: int, j: int) -> float:
    """phi(i, j) between the right-singular (input-space) subspaces of A1 (r1, in) and A2 (r2, in)."""
    return phi_from_bases(right_singular_basis(a1), right_singular_basis(a2), i, j)


def phi_grid(a1, a2):
    """phi(i, j) for all i <= rank(A1), j <= rank(A2): the heatmap of the paper's Figures 3-4."""
    return phi_grid_from_bases(right_singular_basis(a1), right_singular_basis(a2))


def phi_grid_modules(adapters1: dict, adapters2: dict, kind: str = "A") -> dict:
    """{module: phi grid (host array)} for the modules of two {name: (A, B, scale)} dicts.

    kind 'A' compares the A matrices' right singular vectors (as the paper does); 'left' and
    'right' compare the singular vectors of the whole updates delta W. Only modules present in
    both dicts are compared; none in common raises MiniLoraError.
    """
    common = [name for name in adapters1 if name in adapters2]
    if not common:
        raise MiniLoraError("the two adapters have no module in common")
    if kind not in ("A", "left", "right"):
        raise MiniLoraError(f"kind must be 'A', 'left' or 'right', got {kind!r}")
    grids = {}
    for name in common:
        (a1, b1, s1), (a2, b2, s2) = adapters1[name], adapters2[name]
        if kind == "A":
            u1, u2 = right_singular_basis(a1), right_singular_basis(a2)
        else:
            u1, u2 = delta_basis(a1, b1, s1, kind), delta_basis(a2, b2, s2, kind)
        grids[name] = to_numpy(phi_grid_from_bases(u1, u2))
    return grids
