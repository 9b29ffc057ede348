"""Analysis of LoRA updates: spectra, effective rank, subspace similarity phi, amplification."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilora.analysis import (
    amplification,
    amplification_table,
    delta_basis,
    delta_singular_values,
    energy_rank,
    entropy_effective_rank,
    lowrank_svd,
    module_spectra,
    phi,
    phi_from_bases,
    phi_grid,
    phi_grid_from_bases,
    phi_grid_modules,
    right_singular_basis,
    save_phi_heatmaps,
    save_spectra,
)
from minilora.errors import MiniLoraError

seeds = st.integers(0, 2**31 - 1)


def _orth(rng, d, k):
    q, _ = np.linalg.qr(rng.standard_normal((d, k)))
    return q


def _planted(rng, out_f, in_f, r, sig):
    """A (r, in), B (out, r) with B @ A = U diag(sig) V^T of rank len(sig) <= r (scale 1)."""
    k = len(sig)
    u, v = _orth(rng, out_f, k), _orth(rng, in_f, k)
    b = np.zeros((out_f, r))
    b[:, :k] = u * sig
    a = rng.standard_normal((r, in_f))
    a[:k] = v.T
    return a, b, u, v


# ---------------------------------------------------------------- spectra


@given(seed=seeds, out_f=st.integers(1, 12), in_f=st.integers(1, 12), r=st.integers(1, 8),
       scale=st.floats(0.1, 4.0))
def test_lowrank_svd_matches_dense_svd(seed, out_f, in_f, r, scale):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((r, in_f)), rng.standard_normal((out_f, r))
    dense = scale * b @ a
    u, s, vh = lowrank_svd(a, b, scale)
    m = min(r, out_f, in_f)
    assert u.shape == (out_f, m) and s.shape == (m,) and vh.shape == (m, in_f)
    np.testing.assert_allclose(s, np.linalg.svd(dense, compute_uv=False)[:m], atol=1e-10 * (1 + s.max()))
    np.testing.assert_allclose((u * s) @ vh, dense, atol=1e-10 * (1 + np.abs(dense).max()))
    np.testing.assert_allclose(u.T @ u, np.eye(m), atol=1e-10)
    np.testing.assert_allclose(vh @ vh.T, np.eye(m), atol=1e-10)
    assert np.all(np.diff(s) <= 1e-12)


@given(seed=seeds, k=st.integers(1, 8), extra=st.integers(0, 4),
       sig=st.lists(st.floats(1.0, 2.0), min_size=8, max_size=8))
def test_planted_rank_k_effective_ranks(seed, k, extra, sig):
    rng = np.random.default_rng(seed)
    sig = np.sort(sig[:k])[::-1]
    a, b, _, _ = _planted(rng, 20, 16, k + extra, sig)
    s = delta_singular_values(a, b, 1.0)
    np.testing.assert_allclose(s[:k], sig, rtol=1e-10)
    # sigmas within a factor 2 and k <= 8: the top k-1 carry at most 28/29 < 0.99 of the energy
    assert energy_rank(s, 0.99) == k
    assert energy_rank(s, 0.9) <= k and energy_rank(s, 0.5) <= energy_rank(s, 0.9)
    erank = entropy_effective_rank(s)
    assert 1.0 - 1e-9 <= erank <= k + 1e-6


@given(seed=seeds, k=st.integers(1, 8), extra=st.integers(0, 4), c=st.floats(0.01, 100.0),
       scale=st.floats(0.1, 4.0))
def test_planted_rank_k_with_equal_sigmas_has_entropy_rank_k(seed, k, extra, c, scale):
    # p_i = 1/k for the k nonzero sigma: exp(-sum p log p) = exp(log k) = k; every energy threshold
    # above (k-1)/k needs all k directions
    a, b, _, _ = _planted(np.random.default_rng(seed), 20, 16, k + extra, np.full(k, c))
    s = delta_singular_values(a, b, scale)
    np.testing.assert_allclose(s[:k], scale * c, rtol=1e-10)
    assert entropy_effective_rank(s) == pytest.approx(k, rel=1e-9)
    assert energy_rank(s, 1 - 0.5 / k) == k


def test_entropy_rank_extremes_and_zero():
    assert entropy_effective_rank(np.array([3.0, 3.0, 3.0, 0.0])) == pytest.approx(3.0)
    assert entropy_effective_rank(np.array([5.0, 0.0, 0.0])) == pytest.approx(1.0)
    # p = (3/4, 1/4): exp(-(3/4 log 3/4 + 1/4 log 1/4))
    want = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert entropy_effective_rank(np.array([3.0, 1.0])) == pytest.approx(want)
    assert entropy_effective_rank(np.zeros(4)) == 0.0
    assert energy_rank(np.zeros(4)) == 0


def test_energy_rank_by_hand():
    s = np.sqrt(np.array([50.0, 30.0, 15.0, 5.0]))          # energies 50, 30, 15, 5 of 100
    assert [energy_rank(s, t) for t in (0.5, 0.51, 0.8, 0.9, 0.95, 0.99, 1.0)] == [1, 2, 2, 3, 3, 4, 4]


@pytest.mark.parametrize("t", [0.0, -0.1, 1.5])
def test_energy_rank_bad_threshold(t):
    with pytest.raises(MiniLoraError):
        energy_rank(np.ones(3), t)


def test_module_spectra_rows():
    rng = np.random.default_rng(0)
    a, b, _, _ = _planted(rng, 10, 12, 4, np.array([2.0, 1.0]))
    rows = module_spectra({"q_proj": (a, b, 1.0), "v_proj": (a, 0 * b, 1.0)})
    q, v = rows
    assert q["module"] == "q_proj" and q["r"] == 4 and len(q["sigma"]) == 4
    assert q["energy_rank_0.9"] == 2 and q["energy_rank_0.99"] == 2
    assert q["fro"] == pytest.approx(math.sqrt(5.0))
    assert v["fro"] == 0.0 and v["entropy_rank"] == 0.0 and v["energy_rank_0.9"] == 0


def test_lowrank_svd_bad_shapes():
    with pytest.raises(MiniLoraError):
        lowrank_svd(np.ones((3, 4)), np.ones((5, 2)), 1.0)


# ---------------------------------------------------------------- subspace similarity


@given(seed=seeds, r1=st.integers(1, 6), r2=st.integers(1, 6), d=st.integers(1, 10))
def test_phi_is_in_unit_interval(seed, r1, r2, d):
    rng = np.random.default_rng(seed)
    grid = phi_grid(rng.standard_normal((r1, d)), rng.standard_normal((r2, d)))
    assert grid.shape == (min(r1, d), min(r2, d))
    assert np.all(grid >= -1e-12) and np.all(grid <= 1 + 1e-12)


@given(seed=seeds, r=st.integers(1, 6), d=st.integers(6, 12))
def test_phi_of_a_subspace_with_itself_is_one(seed, r, d):
    a = np.random.default_rng(seed).standard_normal((r, d))
    for i in range(1, r + 1):
        assert phi(a, a, i, i) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(phi_grid(a, a), 1.0, atol=1e-12)     # nested subspaces


@given(seed=seeds, r=st.integers(1, 6), d=st.integers(6, 12))
def test_phi_invariant_to_rotating_the_rows_of_a(seed, r, d):
    rng = np.random.default_rng(seed)
    rot = _orth(rng, r, r)                                          # R orthogonal (r, r)
    # singular values kept apart so every top-i subspace is well defined
    a = (_orth(rng, r, r) * np.linspace(2.0, 1.0, r)) @ _orth(rng, d, r).T
    other = rng.standard_normal((3, d))
    np.testing.assert_allclose(phi_grid(a, rot @ a), 1.0, atol=1e-9)
    np.testing.assert_allclose(phi_grid(rot @ a, other), phi_grid(a, other), atol=1e-9)
    # any A: the full row space is unchanged by R
    g = rng.standard_normal((r, d))
    assert phi(g, rot @ g, r, r) == pytest.approx(1.0, abs=1e-9)


@given(i=st.integers(1, 6), j=st.integers(1, 6))
def test_phi_of_random_subspaces_is_max_ij_over_d(i, j):
    # E ||U_i^T U_j||_F^2 = i j / d for independent uniform subspaces, so E phi = max(i, j) / d.
    d, n = 24, 300
    rng = np.random.default_rng(1000 * i + j)
    vals = np.array([phi_from_bases(_orth(rng, d, i), _orth(rng, d, j), i, j) for _ in range(n)])
    stderr = vals.std(ddof=1) / math.sqrt(n)
    # tolerance: 5 standard errors of the mean (a deterministic draw; seeds fixed per (i, j))
    assert abs(vals.mean() - max(i, j) / d) < 5 * stderr + 1e-9


@given(seed=seeds, r1=st.integers(1, 5), r2=st.integers(1, 5))
def test_phi_grid_matches_pointwise_phi(seed, r1, r2):
    rng = np.random.default_rng(seed)
    a1, a2 = rng.standard_normal((r1, 9)), rng.standard_normal((r2, 9))
    grid = phi_grid(a1, a2)
    want = [[phi(a1, a2, i, j) for j in range(1, r2 + 1)] for i in range(1, r1 + 1)]
    np.testing.assert_allclose(grid, want, atol=1e-12)
    np.testing.assert_allclose(phi_grid(a2, a1), grid.T, atol=1e-12)   # symmetric


def test_phi_by_hand():
    e = np.eye(4)
    a1 = np.diag([2.0, 1.0]) @ e[:2]                     # top direction e0, then e1
    a2 = np.diag([3.0, 1.0, 0.5]) @ e[[1, 2, 0]]          # top directions e1, e2, e0
    assert phi(a1, a2, 1, 1) == 0.0                       # e0 vs e1
    assert phi(a1, a2, 2, 1) == 1.0                       # e1 lies in span(e0, e1)
    assert phi(a1, a2, 2, 2) == pytest.approx(0.5)        # span(e0,e1) vs span(e1,e2)
    assert phi(a1, a2, 1, 3) == 1.0
    with pytest.raises(MiniLoraError):
        phi(a1, a2, 3, 1)
    with pytest.raises(MiniLoraError):
        phi(a1, np.ones((2, 5)), 1, 1)


def test_delta_bases_and_module_grids():
    rng = np.random.default_rng(3)
    a, b, u, v = _planted(rng, 10, 8, 4, np.array([3.0, 2.0]))
    left, right = delta_basis(a, b, 1.0, "left"), delta_basis(a, b, 1.0, "right")
    assert phi_from_bases(left, u, 2, 2) == pytest.approx(1.0)
    assert phi_from_bases(right, v, 2, 2) == pytest.approx(1.0)
    with pytest.raises(MiniLoraError):
        delta_basis(a, b, 1.0, "up")
    ad1 = {"q": (a, b, 1.0), "k": (a, b, 1.0)}
    ad2 = {"q": (a[:2], b[:, :2], 2.0), "o": (a, b, 1.0)}
    for kind in ("A", "left", "right"):
        grids = phi_grid_modules(ad1, ad2, kind)
        assert list(grids) == ["q"] and grids["q"].shape == (4, 2)
    np.testing.assert_allclose(phi_grid_modules(ad1, ad2, "left")["q"][:2], 1.0, atol=1e-9)
    np.testing.assert_allclose(right_singular_basis(a[:2]).T @ right_singular_basis(a[:2]),
                               np.eye(2), atol=1e-12)
    with pytest.raises(MiniLoraError):
        phi_grid_modules({"x": (a, b, 1.0)}, ad2)
    with pytest.raises(MiniLoraError):
        phi_grid_modules(ad1, ad2, "B")


# ---------------------------------------------------------------- amplification


def _w_and_delta(rng, directions, dsig, out_f=6, in_f=5):
    """W = P diag(10, 5, 1, 0.5, 0) Q^T and a delta s B A = P[:, d] diag(dsig) Q[:, d]^T (s = 0.5)."""
    p, q = _orth(rng, out_f, out_f), _orth(rng, in_f, in_f)
    wsig = np.array([10.0, 5.0, 1.0, 0.5, 0.0])
    w = (p[:, :5] * wsig) @ q.T
    idx = list(directions)
    a = np.diag(dsig) @ q[:, idx].T                          # (r, in)
    b = 2.0 * p[:, idx]                                      # (out, r); s B A = P diag(dsig) Q^T
    return w, a, b


def test_amplification_by_hand():
    rng = np.random.default_rng(7)
    # delta along W's weak directions (sigma_W = 1, 0.5): U^T W V = diag(1, 0.5)
    w, a, b = _w_and_delta(rng, [2, 3], [3.0, 2.0])
    got = amplification(w, a, b, 0.5)
    assert got["r"] == 2
    assert got["delta_fro"] == pytest.approx(math.sqrt(13.0))
    assert got["proj_delta"] == pytest.approx(math.sqrt(1.25))
    assert got["proj_w"] == pytest.approx(math.sqrt(125.0))
    assert got["w_fro"] == pytest.approx(math.sqrt(100 + 25 + 1 + 0.25))
    assert got["amplification"] == pytest.approx(math.sqrt(13.0 / 1.25))     # 3.2249
    # the same delta along W's strongest directions is barely an amplification
    w2, a2, b2 = _w_and_delta(np.random.default_rng(7), [0, 1], [3.0, 2.0])
    got2 = amplification(w2, a2, b2, 0.5)
    assert got2["proj_delta"] == pytest.approx(math.sqrt(125.0))
    assert got2["amplification"] == pytest.approx(math.sqrt(13.0 / 125.0))
    # r = 1 projects on the top direction of delta only: sigma_W = 1 there
    assert amplification(w, a, b, 0.5, r=1)["proj_delta"] == pytest.approx(1.0)
    with pytest.raises(MiniLoraError):
        amplification(w, a, b, 0.5, r=3)


@given(seed=seeds, r=st.integers(1, 4), scale=st.floats(-3.0, 3.0).filter(lambda x: abs(x) > 0.05))
def test_amplification_of_a_delta_inside_ws_top_subspace(seed, r, scale):
    """W = P diag(sw) Q^T (sw descending); delta W = s B A with B = P_r M, A = N Q_r^T, M, N
    invertible (r, r). Then delta W = P_r (s M N) Q_r^T has rank r, its top-r singular subspaces
    are span(P_r) and span(Q_r), so U = P_r R1, V = Q_r R2 with R1, R2 orthogonal and
    ||U^T W V||_F = ||R1^T diag(sw_1..sw_r) R2||_F = sqrt(sw_1^2 + ... + sw_r^2) = proj_w;
    the factor is |s| ||M N||_F / sqrt(sw_1^2 + ... + sw_r^2)."""
    rng = np.random.default_rng(seed)
    out_f, in_f = 9, 7
    p, q = _orth(rng, out_f, out_f), _orth(rng, in_f, in_f)
    sw = np.sort(rng.uniform(0.1, 5.0, in_f))[::-1]
    w = (p[:, :in_f] * sw) @ q.T                                   # (out, in), singular values sw

    def invertible():
        return _orth(rng, r, r) * rng.uniform(0.5, 2.0, r) @ _orth(rng, r, r)

    m, n = invertible(), invertible()
    b, a = p[:, :r] @ m, n @ q[:, :r].T                            # (out, r), (r, in)
    got = amplification(w, a, b, scale)
    top = math.sqrt(float(np.sum(sw[:r] ** 2)))
    assert got["r"] == r
    assert got["proj_w"] == pytest.approx(top, rel=1e-10)
    assert got["proj_delta"] == pytest.approx(top, rel=1e-8)
    assert got["delta_fro"] == pytest.approx(abs(scale) * np.linalg.norm(m @ n), rel=1e-10)
    assert got["amplification"] == pytest.approx(abs(scale) * np.linalg.norm(m @ n) / top, rel=1e-8)


@given(seed=seeds, r=st.integers(1, 4))
def test_projections_never_exceed_ws_own_top_r(seed, r):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((9, 7))
    a, b = rng.standard_normal((r, 7)), rng.standard_normal((9, r))
    got = amplification(w, a, b, 1.5, rng=np.random.default_rng(seed))
    assert got["proj_delta"] <= got["proj_w"] * (1 + 1e-12)
    assert got["proj_random"] <= got["proj_w"] * (1 + 1e-12)
    assert got["amplification"] == pytest.approx(got["delta_fro"] / got["proj_delta"])


def test_amplification_table_over_modules():
    rng = np.random.default_rng(0)
    w, a, b = _w_and_delta(rng, [2, 3], [3.0, 2.0])
    rows = amplification_table({"q": w, "v": w}, {"q": (a, b, 0.5), "v": (a, b, 0.5)})
    assert [row["module"] for row in rows] == ["q", "v"]
    assert rows[0]["amplification"] == pytest.approx(math.sqrt(13.0 / 1.25))
    with pytest.raises(MiniLoraError):
        amplification_table({"q": w}, {"q": (a, b, 0.5), "v": (a, b, 0.5)})
    with pytest.raises(MiniLoraError):
        amplification(w[:, :4], a, b, 0.5)


# ---------------------------------------------------------------- plots


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_spectra_and_heatmap_plots_are_written(tmp_path):
    rng = np.random.default_rng(0)
    a, b, _, _ = _planted(rng, 10, 12, 4, np.array([2.0, 1.0]))
    ad = {"q_proj": (a, b, 1.0), "v_proj": (rng.standard_normal((4, 12)), rng.standard_normal((10, 4)), 1.0)}
    p1 = save_spectra(module_spectra(ad), tmp_path / "spectra.png")
    p2 = save_phi_heatmaps(phi_grid_modules(ad, ad), tmp_path / "sub" / "phi.png")
    p3 = save_phi_heatmaps({"self": phi_grid_from_bases(np.eye(5)[:, :3], np.eye(5))},
                           tmp_path / "one.png")
    for p in (p1, p2, p3):
        assert _is_png(p) and (tmp_path / p).stat().st_size > 1000
    assert sorted(x.name for x in tmp_path.iterdir()) == ["one.png", "spectra.png", "sub"]
