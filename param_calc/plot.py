"""The rank-sweep chart (matplotlib, imported only here and only when a chart is asked for)."""
from __future__ import annotations

import os

from param_calc.errors import ParamCalcError
from param_calc.fmt import short

FORMATS = ("png", "svg", "pdf")


def check_plot_path(path: str) -> str:
    """The format of a chart path from its extension; ParamCalcError before any work if unusable."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in FORMATS:
        raise ParamCalcError(f"--plot {path!r}: the file name must end in .png, .svg or .pdf")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ParamCalcError(f"--plot {path!r}: folder {folder} does not exist")
    return ext


def plot_sweep(rows: list, title: str, path: str) -> None:
    """LoRA parameters and trainable % against rank, written atomically to path."""
    fmt = check_plot_path(path)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ParamCalcError("--plot needs matplotlib (pip install matplotlib)") from None
    from minilora.io.atomic import atomic_path

    ranks = [r["rank"] for r in rows]
    params = [r["lora_params"] for r in rows]
    base = rows[0]["peft_all_params"] - rows[0]["lora_params"]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.plot(ranks, params, "o-", color="tab:blue")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ranks, [str(r) for r in ranks])
    ax.set_xlabel("rank r")
    ax.set_ylabel("LoRA parameters")
    ax.margins(x=0.12, y=0.15)          # room for the labels in log space
    for row in rows:
        ax.annotate(f"{short(row['lora_params'])[0]} ({row['trainable_percent']:.3g}%)",
                    (row["rank"], row["lora_params"]), textcoords="offset points", xytext=(-4, 8),
                    ha="right", fontsize=8, clip_on=False)
    # The same curve read as PEFT's trainable %: pct = 100 p / (base + p), monotonic in p.
    sec = ax.secondary_yaxis("right", functions=(lambda p: 100 * p / (base + p),
                                                 lambda q: q * base / (100 - q)))
    sec.set_ylabel("trainable % of PEFT all params")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt)
    plt.close(fig)
