"""Two labs: the intrinsic rank of a planted update, and the floating-point cost of merging.

Intrinsic-rank lab. A frozen random base W0 (out, in) and a teacher W0 + delta*, where
delta* = U* diag(sigma*) V*^T has rank k. Inputs x ~ N(0, I); LoRA students of rank r (the lora
layer's forward/backward, AdamW) learn the teacher's outputs with mean squared error. A rank-r
student can at best reproduce the top min(r, k) directions, so with E[x^T x] = I the loss floor is
    sum_{i > r} sigma_i*^2 / out      for r < k,   and 0 for r >= k:
the loss falls off a cliff at r = k, and there the learned update's top-k singular subspaces
coincide with U* and V* (phi = 1, see subspace.py).

Precision lab. (1) merged vs unmerged outputs, x (W0 + s B A)^T against x W0^T + s (x A^T) B^T,
in float64, float32 and float16, as the matrix size and the update's magnitude grow; (2) the drift
of W after N merge/unmerge cycles; (3) merging into an 8-bit or 4-bit quantized base (requantized)
against merging in float. Each merge/unmerge rounds every element once to the weight's dtype, an
error of at most eps/2 times its magnitude, so N cycles drift at most N * eps * (max|W| + max|dW|).
"""
from __future__ import annotations

import math

from minilora.analysis.spectra import energy_rank, entropy_effective_rank, lowrank_svd
from minilora.analysis.subspace import phi_from_bases
from minilora.backend import get_xp
from minilora.layers.lora import init_lora_weights, lora_backward, lora_delta, lora_forward, lora_merge, lora_unmerge
from minilora.quant import dequantize, merge_into_quantized, quantize
from minilora.training.optim import AdamW, cosine_schedule


def mse_forward(h, y):
    """L = mean((h - y)^2) over every element. Returns (L, cache); cache = (h - y)."""
    d = h - y
    return (d * d).mean(), d


def mse_backward(cache):
    """dL/dh = 2 (h - y) / number of elements."""
    return (2.0 / cache.size) * cache


def _orthonormal(rng, d, k, xp):
    """Orthonormal columns (d, k) from the QR of a Gaussian."""
    q, _ = xp.linalg.qr(rng.standard_normal((d, k)))
    return q


def intrinsic_rank_lab(d_in=48, d_out=40, k=4, ranks=None, steps=300, seed=0, xp=None,
                       n_samples=128, lr=0.02, init="kaiming", sigmas=None, dtype="float64"):
    """Train a LoRA student of each rank r on a planted rank-k update. Deterministic for a seed.

    The default sizes (in 48, out 40, 128 samples, ranks 1..8, 300 full-batch steps) run in about
    a second on one core; non-square on purpose, so a transposed factor cannot pass unnoticed.

    sigmas: the planted singular values (default linspace(1, 0.5, k)). Every rank sees the same
    W0, delta*, data; s = alpha / r with alpha = r (s = 1). AdamW, cosine schedule, full batch.
    Returns {config, sigmas, zero_loss (the loss of the untrained student), rows}, one row per r:
      loss, rel_loss (loss / zero_loss), floor (the best rank-r loss on this data: Eckart-Young on
        X delta*^T; sum_{i>r} sigma_i^2 / out in expectation),
      phi_left, phi_right  phi(min(r, k), k) between the learned and planted column / row spaces,
      coverage_left, coverage_right  ||U_learned^T U*||_F^2 / k: the share of delta* recovered,
      entropy_rank, energy_rank_0.99, sigma (the learned update's singular values).
    """
    xp = get_xp("numpy") if xp is None else xp
    ranks = list(range(1, 2 * k + 1)) if ranks is None else list(ranks)
    sig = [1.0 - 0.5 * i / max(k - 1, 1) for i in range(k)] if sigmas is None else list(sigmas)
    rng = xp.random.default_rng(seed)
    w0 = (rng.standard_normal((d_out, d_in)) / math.sqrt(d_in)).astype(dtype)   # (out, in)
    u_star = _orthonormal(rng, d_out, k, xp)                                     # (out, k)
    v_star = _orthonormal(rng, d_in, k, xp)                                      # (in, k)
    delta = (u_star * xp.asarray(sig)[None, :]) @ v_star.T                        # (out, in)
    x = rng.standard_normal((n_samples, d_in)).astype(dtype)                     # (N, in)
    y = x @ (w0 + delta.astype(dtype)).T                                         # (N, out)
    zero_loss = float(mse_forward(x @ w0.T, y)[0])
    # best rank-r fit on this data (Eckart-Young on X delta*^T, since X has full column rank)
    fit_sv = xp.linalg.svd(x.astype(xp.float64) @ delta.T, compute_uv=False)   # (min(N, out),)
    fit_tail = xp.cumsum((fit_sv ** 2)[::-1])[::-1] / (n_samples * d_out)     # [i]: sum_{j>=i}
    rows = []
    for r in ranks:
        a, b = init_lora_weights(d_in, d_out, r, xp.random.default_rng(seed + 1 + r), xp, init,
                                 dtype)
        params, opt, s = {"A": a, "B": b}, AdamW(lr=lr), 1.0
        for step in range(steps):
            h, cache = lora_forward(x, w0, params["A"], params["B"], s)
            _, mcache = mse_forward(h, y)
            _, da, db = lora_backward(mse_backward(mcache), cache)
            opt.step(params, {"A": da, "B": db}, lr=lr * cosine_schedule(step, steps, steps // 10))
        h, _ = lora_forward(x, w0, params["A"], params["B"], s)
        loss = float(mse_forward(h, y)[0])
        u, sigma, vh = lowrank_svd(params["A"], params["B"], s)
        m = min(r, k, sigma.shape[0])
        pl = phi_from_bases(u, u_star, m, k)
        pr = phi_from_bases(vh.T, v_star, m, k)
        rows.append({"r": r, "loss": loss, "rel_loss": loss / zero_loss,
                     "floor": float(fit_tail[r]) if r < k else 0.0,
                     "phi_left": pl, "phi_right": pr,
                     "coverage_left": pl * m / k, "coverage_right": pr * m / k,
                     "entropy_rank": entropy_effective_rank(sigma),
                     "energy_rank_0.99": energy_rank(sigma, 0.99),
                     "sigma": [float(v) for v in sigma]})
    config = {"d_in": d_in, "d_out": d_out, "k": k, "steps": steps, "seed": seed,
              "n_samples": n_samples, "lr": lr, "init": init, "dtype": str(dtype)}
    return {"config": config, "sigmas": sig, "zero_loss": zero_loss, "rows": rows}


def _eps(dtype, xp) -> float:
    """Machine epsilon (the gap after 1.0) of float16, float32 or float64."""
    return {2: 2.0 ** -10, 4: 2.0 ** -23, 8: 2.0 ** -52}[xp.dtype(dtype).itemsize]


def _rel(a, ref, xp) -> float:
    """||a - ref||_F / ||ref||_F in float64."""
    a64, r64 = a.astype(xp.float64), ref.astype(xp.float64)
    return float(xp.linalg.norm(a64 - r64)) / float(xp.linalg.norm(r64))


def _problem(rng, n, rank, magnitude, dtype, xp):
    """W0 (n, n) ~ N(0, 1/n) and A, B, s with ||s B A||_F = magnitude * ||W0||_F, cast to dtype."""
    w0 = rng.standard_normal((n, n)) / math.sqrt(n)
    a = rng.standard_normal((rank, n)) / math.sqrt(n)
    b = rng.standard_normal((n, rank))
    s = magnitude * float(xp.linalg.norm(w0)) / float(xp.linalg.norm(b @ a))
    return w0.astype(dtype), a.astype(dtype), b.astype(dtype), s


def merge_error_table(sizes, magnitudes, dtypes, rank, batch, rng, xp) -> list:
    """Rows {dtype, size, magnitude, rel_err, unmerged_vs_exact, merged_vs_exact, eps}.

    rel_err = ||x W_merged^T - (x W0^T + s (x A^T) B^T)||_F / ||unmerged||_F, both in `dtype`;
    the *_vs_exact columns compare each against float64 arithmetic on the same rounded inputs.
    """
    rows = []
    for n in sizes:
        for mag in magnitudes:
            w0, a, b, s = _problem(rng, n, rank, mag, "float64", xp)
            x = rng.standard_normal((batch, n))                                      # (batch, n)
            for dt in dtypes:
                w0d, ad, bd, xd = (t.astype(dt) for t in (w0, a, b, x))
                unmerged, _ = lora_forward(xd, w0d, ad, bd, s)                       # (batch, n)
                merged = xd @ lora_merge(w0d, ad, bd, s).T                           # (batch, n)
                x64, w64, a64, b64 = (t.astype(xp.float64) for t in (xd, w0d, ad, bd))
                exact = x64 @ w64.T + s * ((x64 @ a64.T) @ b64.T)
                rows.append({"dtype": str(dt), "size": n, "magnitude": mag,
                             "rel_err": _rel(merged, unmerged, xp),
                             "unmerged_vs_exact": _rel(unmerged, exact, xp),
                             "merged_vs_exact": _rel(merged, exact, xp), "eps": _eps(dt, xp)})
    return rows


def cycle_drift_table(cycles, size, magnitude, dtypes, rank, rng, xp) -> list:
    """Rows {dtype, cycles, max_abs_drift, rel_drift, bound} after N merge/unmerge cycles.

    bound = N * eps * (max|W0| + max|s B A|): each cycle rounds every element twice, each time by
    at most eps/2 of a value no larger than max|W0| + max|s B A| (up to the drift itself).
    """
    w0, a, b, s = _problem(rng, size, rank, magnitude, "float64", xp)
    checkpoints, rows = sorted(set(int(c) for c in cycles)), []
    for dt in dtypes:
        w_start, ad, bd = (t.astype(dt) for t in (w0, a, b))
        scale_w = float(xp.max(xp.abs(w_start.astype(xp.float64))))
        scale_d = float(xp.max(xp.abs(lora_delta(ad, bd, s))))
        w, done = w_start, 0
        for n in checkpoints:
            for _ in range(n - done):
                w = lora_unmerge(lora_merge(w, ad, bd, s), ad, bd, s)
            done = n
            diff = w.astype(xp.float64) - w_start.astype(xp.float64)
            rows.append({"dtype": str(dt), "cycles": n,
                         "max_abs_drift": float(xp.max(xp.abs(diff))),
                         "rel_drift": float(xp.linalg.norm(diff)) / float(xp.linalg.norm(
                             w_start.astype(xp.float64))),
                         "bound": n * _eps(dt, xp) * (scale_w + scale_d)})
    return rows


def quant_merge_table(size, magnitudes, bits_list, group_sizes, rank, rng, xp) -> list:
    """Rows {bits, group_size, magnitude, base_rel_err, rel_vs_float, rel_vs_dequant,
    update_rel_err, max_abs_vs_dequant, requant_bound} for merging into a quantized float32 base
    (see quant.merge_into_quantized; base_rel_err is the quantization error of W0 itself)."""
    rows = []
    for mag in magnitudes:
        w0, a, b, s = _problem(rng, size, rank, mag, "float32", xp)
        for bits in bits_list:
            for g in group_sizes:
                qt = quantize(w0, bits, g)
                _, rep = merge_into_quantized(qt, a, b, s, w=w0)
                rows.append({"bits": bits, "group_size": g, "magnitude": mag,
                             "base_rel_err": _rel(dequantize(qt, xp.float64), w0, xp),
                             **{k: rep[k] for k in ("rel_vs_float", "rel_vs_dequant",
                                                    "update_rel_err", "max_abs_vs_dequant",
                                                    "requant_bound")}})
    return rows


def precision_lab(sizes=(64, 128, 256, 512), magnitudes=(1e-3, 1e-1, 1.0),
                  dtypes=("float64", "float32", "float16"), cycles=(1, 10, 100, 1000),
                  cycle_size=128, quant_size=256, quant_magnitudes=(1e-3, 1e-2, 1e-1),
                  bits=(8, 4), group_sizes=(None, 64), rank=8, batch=16, seed=0, xp=None) -> dict:
    """The three precision tables: {'merge': [...], 'cycles': [...], 'quant': [...]}.

    See merge_error_table, cycle_drift_table (at magnitude 0.1) and quant_merge_table. The bounds
    the tests hold these to (tests/test_labs.py): merged-vs-unmerged relative error < 1e-12 in
    float64, < 1e-5 in float32 and < 1e-2 in float16 for sizes <= 512 and ||dW|| <= ||W0||; cycle
    drift <= N * eps * (max|W0| + max|dW|); requantized merge error <= max scale / 2 + rounding.
    """
    xp = get_xp("numpy") if xp is None else xp
    rng = xp.random.default_rng(seed)
    return {"merge": merge_error_table(sizes, magnitudes, dtypes, rank, batch, rng, xp),
            "cycles": cycle_drift_table(cycles, cycle_size, 0.1, dtypes, rank, rng, xp),
            "quant": quant_merge_table(quant_size, quant_magnitudes, bits, group_sizes, rank, rng,
                                       xp)}
