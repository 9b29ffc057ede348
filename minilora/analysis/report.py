"""One adapter's analysis as plain tables: spectra, phi against another adapter, amplification.

analyze_adapter() returns (summary, grids): summary is JSON-ready (the numbers of summary.json),
grids holds the phi heatmaps {kind: {module: (m1, m2) array}}. write_report() writes summary.json,
summary.md, phi_grids.npz and the PNG plots into a folder, each file atomically.
"""
from __future__ import annotations

import os

from minilora.analysis.amplification import amplification_table
from minilora.analysis.plots import save_phi_heatmaps, save_spectra
from minilora.analysis.spectra import lowrank_svd, module_spectra
from minilora.analysis.subspace import phi_grid_from_bases, right_singular_basis
from minilora.backend import check_finite_weight, to_numpy
from minilora.errors import MiniLoraError
from minilora.io.atomic import atomic_path, write_json, write_text

PHI_KINDS = {"A": "right singular vectors of A (the paper's Figures 3-4)",
             "right": "right (input-space) singular vectors of delta W",
             "left": "left (output-space) singular vectors of delta W"}


def short_name(module: str) -> str:
    """'model.layers.3.self_attn.q_proj' -> 'layers.3.q_proj' (plot titles)."""
    parts = module.split(".")
    if len(parts) >= 4 and parts[0] == "model" and parts[1] == "layers":
        return f"layers.{parts[2]}.{parts[-1]}"
    return module


def short_rows(rows: list) -> list:
    """Copies of table rows with short module names, for plot legends."""
    return [{**r, "module": short_name(r["module"])} for r in rows]


def _zero(row) -> bool:
    return row["fro"] == 0.0


def phi_section(modules1: dict, modules2: dict, kinds=tuple(PHI_KINDS)):
    """(rows, grids) comparing the modules two adapters share; see PHI_KINDS for the bases.

    The delta-W kinds skip (None) modules whose update is zero in either adapter: their singular
    vectors are arbitrary. Each row: module, d_in, d_out, r1, r2, and per kind
    {phi_11, phi_all (i = m1, j = m2), chance_11 = 1/d, chance_all = max(m1, m2)/d}.
    """
    common = [m for m in modules1 if m in modules2]
    if not common:
        raise MiniLoraError("the two adapters have no module in common")
    rows, grids = [], {k: {} for k in kinds}
    for name in common:
        (a1, b1, s1), (a2, b2, s2) = modules1[name], modules2[name]
        if a1.shape[1] != a2.shape[1] or (b1 is not None and b1.shape[0] != b2.shape[0]):
            raise MiniLoraError(f"{name}: the two adapters disagree on its input or output size "
                                f"(A {tuple(a1.shape)} vs {tuple(a2.shape)})")
        row = {"module": name, "d_in": int(a1.shape[1]),
               "d_out": None if b1 is None else int(b1.shape[0]),
               "r1": int(a1.shape[0]), "r2": int(a2.shape[0])}
        svd = None
        for kind in kinds:
            if kind == "A":
                u1, u2 = right_singular_basis(a1), right_singular_basis(a2)
            else:
                svd = svd or (lowrank_svd(a1, b1, s1), lowrank_svd(a2, b2, s2))
                (l1, g1, r1), (l2, g2, r2) = svd
                if float(g1[0]) == 0.0 or float(g2[0]) == 0.0:
                    row[kind] = None
                    continue
                u1, u2 = (l1, l2) if kind == "left" else (r1.T, r2.T)
            g = to_numpy(phi_grid_from_bases(u1, u2))                   # (m1, m2)
            d = row["d_out"] if kind == "left" else row["d_in"]
            grids[kind][name] = g
            row[kind] = {"phi_11": float(g[0, 0]), "phi_all": float(g[-1, -1]),
                         "chance_11": 1.0 / d, "chance_all": max(g.shape) / d}
        rows.append(row)
    return rows, grids


def analyze_adapter(adapter, other=None, weights: dict | None = None, base: str | None = None):
    """(summary, grids) for an AdapterFactors, optionally against another and a base's weights.

    weights: {name: W (out, in)} of the base (the amplification table needs <module>.weight for
    every module with a nonzero update); base: where they came from, for the record.
    """
    spectra = module_spectra(adapter.modules)
    for row in spectra:
        a, b, s = adapter.modules[row["module"]]
        row.update(scale=float(s), shape=[int(b.shape[0]), int(a.shape[1])])
    by_name = {row["module"]: row for row in spectra}
    cfg = adapter.config
    summary = {"adapter": {"path": adapter.path, "base_model_name_or_path": adapter.base_model,
                           "r": cfg.r, "lora_alpha": cfg.lora_alpha, "use_rslora": cfg.use_rslora,
                           "modules": len(adapter.modules), "ignored_keys": adapter.ignored,
                           "zero_update_modules": [r["module"] for r in spectra if _zero(r)]},
               "spectra": spectra, "vs": None, "amplification": None}
    grids = {}
    if other is not None:
        rows, grids = phi_section(adapter.modules, other.modules)
        summary["vs"] = {"path": other.path, "kinds": PHI_KINDS, "rows": rows}
    if weights is not None:
        live = {m: f for m, f in adapter.modules.items() if not _zero(by_name[m])}
        missing = [m + ".weight" for m in live if m + ".weight" not in weights]
        if missing:
            raise MiniLoraError(f"base {base}: no weight {missing[0]} for the adapter's module")
        ws = {}
        for m, (a, b, _) in live.items():
            w = weights[m + ".weight"]
            if tuple(w.shape) != (b.shape[0], a.shape[1]):
                raise MiniLoraError(f"base {base}: {m}.weight has shape {tuple(w.shape)}, the "
                                    f"adapter needs ({b.shape[0]}, {a.shape[1]})")
            check_finite_weight(w, m + ".weight", f"base {base}")
            ws[m] = w
        summary["amplification"] = {"base": base, "rows": amplification_table(ws, live)}
    return summary, grids


def _f(x, spec=".3g") -> str:
    return "-" if x is None else format(x, spec)


def summary_markdown(summary: dict) -> str:
    """summary.md: the tables of summary.json, rounded for reading."""
    ad = summary["adapter"]
    lines = [f"# LoRA adapter analysis: {ad['path']}", "",
             f"base_model_name_or_path: {ad['base_model_name_or_path']}; r = {ad['r']}, "
             f"lora_alpha = {ad['lora_alpha']}, rsLoRA = {ad['use_rslora']}; "
             f"{ad['modules']} adapted modules.", "",
             "## Spectra of delta W = s B A", "",
             "| module | shape | r | s | ‖ΔW‖_F | σ1 | entropy rank | energy rank 90% | 99% |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in summary["spectra"]:
        sig1 = r["sigma"][0] if r["sigma"] else 0.0
        lines.append(f"| {r['module']} | {r['shape'][0]}x{r['shape'][1]} | {r['r']} | {r['scale']:.4g} "
                     f"| {r['fro']:.4g} | {sig1:.4g} | {r['entropy_rank']:.2f} "
                     f"| {r['energy_rank_0.9']} | {r['energy_rank_0.99']} |")
    vs = summary.get("vs")
    if vs:
        lines += ["", f"## Subspace similarity phi against {vs['path']}", "",
                  "phi(i, j) = ‖U1[:, :i]^T U2[:, :j]‖_F^2 / min(i, j); chance for i = j = 1 is 1/d.", "",
                  "| module | r1 | r2 | phi_A(1,1) | phi_right(1,1) | phi_left(1,1) | chance 1/d_in | "
                  "phi_A(r1,r2) | chance max(r1,r2)/d_in |", "|---|---|---|---|---|---|---|---|---|"]
        for r in vs["rows"]:
            p11 = [None if r[k] is None else r[k]["phi_11"] for k in ("A", "right", "left")]
            lines.append(f"| {r['module']} | {r['r1']} | {r['r2']} | "
                         + " | ".join(_f(x) for x in p11)
                         + f" | {_f(1 / r['d_in'])} | {_f(r['A']['phi_all'])} | {_f(r['A']['chance_all'])} |")
    amp = summary.get("amplification")
    if amp:
        lines += ["", f"## Amplification (Table 7) against the base {amp['base']}", "",
                  "U, V: the top-r singular vectors of ΔW; factor = ‖ΔW‖_F / ‖U^T W V‖_F.", "",
                  "| module | r | ‖ΔW‖_F | ‖U^T W V‖_F | W's top-r | random | ‖W‖_F | factor |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in amp["rows"]:
            lines.append(f"| {r['module']} | {r['r']} | {r['delta_fro']:.4g} | {r['proj_delta']:.4g} "
                         f"| {r['proj_w']:.4g} | {r['proj_random']:.4g} | {r['w_fro']:.4g} "
                         f"| {r['amplification']:.4g} |")
    elif summary.get("amplification_skipped"):
        lines += ["", f"Amplification not computed: {summary['amplification_skipped']}"]
    return "\n".join(lines) + "\n"


def save_grids(grids: dict, path) -> str:
    """phi grids as an .npz with keys '<kind>:<module>' (atomic)."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{f"{k}:{m}": g for k, per in grids.items() for m, g in per.items()})
    return os.fspath(path)


def write_report(out: str, summary: dict, grids: dict, max_plots: int = 8, prefix: str = "") -> list:
    """Write the plots, phi_grids.npz, summary.json and summary.md into out; returns the paths.

    Plots show the first max_plots modules; the JSON and the grids hold them all.
    """
    j = os.path.join
    plots = [save_spectra(short_rows(summary["spectra"][:max_plots]), j(out, f"{prefix}spectra.png"))]
    for kind, per in grids.items():
        if per:
            shown = {short_name(m): g for m, g in list(per.items())[:max_plots]}
            plots.append(save_phi_heatmaps(shown, j(out, f"{prefix}phi_{kind}.png"),
                                           title=f"phi(i, j): {PHI_KINDS[kind]}"))
    if any(grids.values()):
        plots.append(save_grids(grids, j(out, f"{prefix}phi_grids.npz")))
    summary["files"] = [os.path.basename(p) for p in plots]
    write_json(j(out, f"{prefix}summary.json"), summary)
    write_text(j(out, f"{prefix}summary.md"), summary_markdown(summary))
    return plots + [j(out, f"{prefix}summary.json"), j(out, f"{prefix}summary.md")]
