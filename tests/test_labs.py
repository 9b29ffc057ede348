"""The intrinsic-rank lab and the precision lab: the numbers they must show, and their plots.

Thresholds below were measured (numpy, OpenBLAS, seed as given) and kept with a wide margin:
intrinsic-rank lab (defaults: in 48, out 40, k=4, 300 steps, kaiming): loss(k) / loss(k-1) = 2e-10;
gaussian 32x24, k=2, 600 steps: 7e-7. Precision lab: see the bounds in each test.
"""
import numpy as np
import pytest

from minilora.analysis import (
    intrinsic_rank_lab,
    mse_backward,
    mse_forward,
    precision_lab,
    save_intrinsic_rank_lab,
    save_precision_lab,
)
from minilora.gradcheck import check_gradient


@pytest.fixture(scope="module")
def rank_lab():
    return intrinsic_rank_lab()          # d_in 48, d_out 40, k = 4, ranks 1..8


@pytest.fixture(scope="module")
def prec_lab():
    return precision_lab()               # sizes 64..512, float64/32/16, 1000 cycles, 8/4-bit


def _by_r(result):
    return {row["r"]: row for row in result["rows"]}


def test_mse_pair_gradient():
    rng = np.random.default_rng(0)
    h, y, dout = rng.standard_normal((5, 3)), rng.standard_normal((5, 3)), 1.7
    loss, cache = mse_forward(h, y)
    assert loss == pytest.approx(np.mean((h - y) ** 2))
    assert check_gradient(lambda: mse_forward(h, y)[0], h, dout * mse_backward(cache), dout) < 1e-8


def test_loss_drops_sharply_at_the_planted_rank(rank_lab):
    k, rows = rank_lab["config"]["k"], _by_r(rank_lab)
    assert sorted(rows) == list(range(1, 2 * k + 1))
    assert rows[k]["loss"] < 1e-6 * rows[k - 1]["loss"]                  # measured 2e-10
    for r, row in rows.items():
        if r < k:      # a rank-r student reaches the best rank-r fit (Eckart-Young) on this data
            assert row["floor"] * (1 - 1e-9) <= row["loss"] <= 1.01 * row["floor"]
            assert row["rel_loss"] > 0.05
        else:
            assert row["floor"] == 0.0 and row["rel_loss"] < 1e-6
    assert all(rows[r]["loss"] < rows[r - 1]["loss"] for r in range(2, k + 1))


def test_learned_subspace_matches_the_planted_one(rank_lab):
    k, rows = rank_lab["config"]["k"], _by_r(rank_lab)
    for r, row in rows.items():
        assert row["phi_left"] > 0.99 and row["phi_right"] > 0.99     # lies inside the planted
        # coverage: the share of the planted k-dim subspace recovered, min(r, k) / k
        assert row["coverage_left"] == pytest.approx(min(r, k) / k, abs=0.01)
        assert row["coverage_right"] == pytest.approx(min(r, k) / k, abs=0.01)
        assert row["energy_rank_0.99"] == min(r, k)
        assert 1.0 <= row["entropy_rank"] <= min(r, k) + 1e-6


def test_gaussian_init_non_square_lab():
    res = intrinsic_rank_lab(d_in=32, d_out=24, k=2, steps=600, init="gaussian", seed=3)
    rows = _by_r(res)
    assert sorted(rows) == [1, 2, 3, 4]
    assert rows[2]["loss"] < 1e-4 * rows[1]["loss"]                      # measured 7e-7
    assert all(rows[r]["phi_left"] > 0.99 and rows[r]["phi_right"] > 0.99 for r in (2, 3, 4))


def test_lab_is_deterministic():
    kw = dict(d_in=12, d_out=10, k=2, ranks=[1, 3], steps=40, n_samples=32, seed=5)
    assert intrinsic_rank_lab(**kw) == intrinsic_rank_lab(**kw)


def test_merge_error_bounds(prec_lab):
    bound = {"float64": 1e-12, "float32": 1e-5, "float16": 2e-3}        # measured max: 8e-16,
    rows = prec_lab["merge"]                                             # 3.9e-7, 4.9e-4
    assert {row["dtype"] for row in rows} == set(bound) and max(r["size"] for r in rows) == 512
    for row in rows:
        assert row["rel_err"] < bound[row["dtype"]], row
        # each path is within a few eps * sqrt(n) of float64 arithmetic on the same inputs
        assert row["merged_vs_exact"] < 4 * row["eps"] * np.sqrt(row["size"]), row


def test_cycle_drift_at_most_linear(prec_lab):
    rows = prec_lab["cycles"]
    assert max(row["cycles"] for row in rows) == 1000
    for row in rows:
        assert row["max_abs_drift"] <= row["bound"], row               # N eps (max|W| + max|dW|)
    # measured: the drift stops growing after the first cycle (a fixed point of the rounding)
    for dt in ("float64", "float32", "float16"):
        drift = {row["cycles"]: row for row in rows if row["dtype"] == dt}
        assert drift[1000]["max_abs_drift"] <= 2 * drift[1]["bound"]


def test_quantized_merge_errors(prec_lab):
    rows = prec_lab["quant"]
    assert {(row["bits"], row["group_size"]) for row in rows} == {(8, None), (8, 64), (4, None), (4, 64)}
    for row in rows:
        # requantizing costs at most half a new step (plus float32 rounding of the merge)
        assert row["max_abs_vs_dequant"] <= row["requant_bound"] * (1 + 1e-3), row
        assert row["base_rel_err"] < (0.01 if row["bits"] == 8 else 0.15), row   # measured 7e-3, 0.127
    by = {(row["bits"], row["group_size"], row["magnitude"]): row for row in rows}
    # an update far below half a step is rounded away; a large one survives 8-bit requantization
    assert by[(8, None, 1e-3)]["update_rel_err"] > 0.5                  # measured 1.05
    assert by[(8, None, 1e-1)]["update_rel_err"] < 0.1                  # measured 0.069
    assert by[(4, None, 1e-1)]["update_rel_err"] > 0.5                  # measured 0.95


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_lab_plots_are_written(rank_lab, prec_lab, tmp_path):
    p1 = save_intrinsic_rank_lab(rank_lab, tmp_path / "rank.png")
    p2 = save_precision_lab(prec_lab, str(tmp_path / "precision.png"))
    for p in (p1, p2):
        assert _is_png(p) and (tmp_path / p).stat().st_size > 1000
    assert sorted(x.name for x in tmp_path.iterdir()) == ["precision.png", "rank.png"]
