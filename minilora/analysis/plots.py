"""Plots for the analysis: spectra, phi heatmaps, the intrinsic-rank lab and the precision lab.

Each save_* function draws on its own matplotlib Figure with the Agg canvas (no pyplot, so no
global figure state and no display needed), writes the PNG atomically (minilora.io.atomic: a
temporary file in the same folder, then os.replace) and returns the path. matplotlib is imported
inside the functions: it is needed only when plotting. Inputs are the plain tables the analysis functions return.
"""
from __future__ import annotations

import os

from minilora.backend import to_numpy
from minilora.io.atomic import atomic_path


def _figure(n: int, width: float = 4.6, height: float = 3.6, ncols: int | None = None,
            layout: str | None = "constrained"):
    """A Figure with an Agg canvas and n axes, ncols to a row (default: all in one row).

    layout None skips the constrained-layout solver (about half the drawing time of a grid of
    heatmaps); the caller then places the axes with subplots_adjust.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = n if ncols is None else max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout=layout)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]
    return fig, axes


def _save(fig, path) -> str:
    """Write fig as PNG to path atomically (minilora.io.atomic.atomic_path); returns the path."""
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
        os.chmod(tmp, 0o644)                 # mkstemp makes it owner-only; a plot is for reading
    return path


def save_spectra(rows: list, path, normalize: bool = True, title: str = "") -> str:
    """Singular values of each module's update (rows from spectra.module_spectra), log scale.

    normalize divides each module's values by its largest, so modules of any scale compare.
    A legend is drawn for up to 12 modules.
    """
    fig, (ax,) = _figure(1, width=6.0, layout=None)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.14, top=0.9)
    for row in rows:
        sig = [float(v) for v in row["sigma"]]
        top = sig[0] if normalize and sig and sig[0] > 0 else 1.0
        ax.plot(range(1, len(sig) + 1), [max(v / top, 1e-18) for v in sig], marker="o",
                label=f"{row['module']} (erank {row['entropy_rank']:.2f})")
    ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("sigma_i / sigma_1" if normalize else "sigma_i")
    ax.set_title(title or "Singular values of delta W = s B A")
    if 0 < len(rows) <= 12:
        ax.legend(fontsize=7)
    return _save(fig, path)


def save_phi_heatmaps(grids: dict, path, xlabel: str = "j", ylabel: str = "i", title: str = "",
                      ncols: int = 4) -> str:
    """One heatmap per {title: phi grid (m1, m2)}, colour scale fixed to [0, 1] (Figures 3-4).

    Panels wrap after ncols; a grid such as 8 x 64 fills its panel (aspect 'auto').
    """
    from matplotlib.ticker import MaxNLocator

    n = max(len(grids), 1)
    fig, axes = _figure(n, width=4.0, height=3.2, ncols=ncols, layout=None)
    w, h = fig.get_size_inches()                      # margins in inches: room for labels, colorbar
    fig.subplots_adjust(left=0.6 / w, right=1 - 1.3 / w, bottom=0.55 / h,
                        top=1 - (0.75 if title else 0.4) / h, wspace=0.3, hspace=0.5)
    if title:
        fig.suptitle(title, fontsize=10)
    im = None
    for ax, (name, grid) in zip(axes, grids.items(), strict=False):
        g = to_numpy(grid)
        im = ax.imshow(g, vmin=0.0, vmax=1.0, cmap="viridis", origin="upper", aspect="auto",
                       extent=(0.5, g.shape[1] + 0.5, g.shape[0] + 0.5, 0.5))
        ax.set_title(name, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    if im is not None:
        cax = fig.add_axes((1 - 1.1 / w, 0.55 / h, 0.15 / w, 1 - (1.3 if title else 0.95) / h))
        fig.colorbar(im, cax=cax, label="phi(i, j)")
    return _save(fig, path)


def save_intrinsic_rank_lab(result: dict, path) -> str:
    """Loss vs r (with the best possible rank-r loss) and phi / coverage vs r, k marked."""
    rows, k = result["rows"], result["config"]["k"]
    r = [row["r"] for row in rows]
    fig, (ax1, ax2) = _figure(2)
    ax1.semilogy(r, [max(row["loss"], 1e-30) for row in rows], "o-", label="trained student")
    fit = [(row["r"], row["floor"]) for row in rows if row["floor"] > 0]     # 0 for r >= k
    ax1.semilogy([p[0] for p in fit], [p[1] for p in fit], "k--", label="best rank-r fit (0 for r >= k)")
    ax1.axvline(k, color="grey", lw=0.8)
    ax1.set_xlabel("LoRA rank r")
    ax1.set_ylabel("MSE")
    ax1.set_title(f"Loss vs rank (planted rank k = {k})")
    ax1.legend(fontsize=8)
    for key, style in (("phi_left", "o-"), ("phi_right", "s--"), ("coverage_left", "^:")):
        ax2.plot(r, [row[key] for row in rows], style, label=key)
    ax2.axvline(k, color="grey", lw=0.8)
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_xlabel("LoRA rank r")
    ax2.set_title("Learned vs planted subspaces")
    ax2.legend(fontsize=8)
    return _save(fig, path)


def save_precision_lab(result: dict, path) -> str:
    """Merge error vs size per dtype, drift vs cycles (with the linear bound), quantized merges."""
    fig, (ax1, ax2, ax3) = _figure(3)
    merge = result["merge"]
    top = max(row["magnitude"] for row in merge)
    for dt in dict.fromkeys(row["dtype"] for row in merge):
        pts = [row for row in merge if row["dtype"] == dt and row["magnitude"] == top]
        ax1.loglog([p["size"] for p in pts], [max(p["rel_err"], 1e-18) for p in pts], "o-",
                   label=dt)
    ax1.set_xlabel("matrix size n")
    ax1.set_ylabel("relative error")
    ax1.set_title(f"merged vs unmerged output (|dW| = {top:g} |W|)", fontsize=9)
    ax1.legend(fontsize=8)
    cyc = result["cycles"]
    for dt in dict.fromkeys(row["dtype"] for row in cyc):
        pts = [row for row in cyc if row["dtype"] == dt]
        line, = ax2.loglog([p["cycles"] for p in pts], [max(p["max_abs_drift"], 1e-18) for p in pts],
                           "o-", label=dt)
        ax2.loglog([p["cycles"] for p in pts], [p["bound"] for p in pts], ":",
                   color=line.get_color())
    ax2.set_xlabel("merge/unmerge cycles N")
    ax2.set_ylabel("max |W_N - W_0|")
    ax2.set_title("drift (dotted: N eps (max|W| + max|dW|))", fontsize=9)
    ax2.legend(fontsize=8)
    quant = result["quant"]
    for key in dict.fromkeys((row["bits"], row["group_size"]) for row in quant):
        pts = [row for row in quant if (row["bits"], row["group_size"]) == key]
        ax3.loglog([p["magnitude"] for p in pts], [p["update_rel_err"] for p in pts], "o-",
                   label=f"{key[0]}-bit, group {key[1] or 'row'}")
    ax3.axhline(1.0, color="grey", lw=0.8)
    ax3.set_xlabel("|dW|_F / |W|_F")
    ax3.set_ylabel("|error| / |dW| after requantizing")
    ax3.set_title("merging into a quantized base", fontsize=9)
    ax3.legend(fontsize=8)
    return _save(fig, path)
