"""Draw the LoRA layer, h = W0 x + s B A x, as docs/img/lora_layer.svg (matplotlib, no other tools).

    .venv/bin/python scripts/make_diagram.py            # writes docs/img/lora_layer.svg
    .venv/bin/python scripts/make_diagram.py --check    # exit 1 if the committed file differs

The frozen path x -> W0 runs along the top; the trainable path x -> A (r x d_in) -> B (d_out x r)
-> scale s runs below it, narrowing to r in the middle; the two meet at +. The SVG is written
deterministically (fixed hash salt, no date; the matplotlib version in its Creator field), so
tests/test_diagram.py compares it byte for byte with the committed copy under that version.
Notebook 01 and docs/index.md show it.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Polygon  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "img" / "lora_layer.svg"
FROZEN, TRAIN, INK = "#9e9e9e", "#1e88e5", "#212121"


def _box(ax, x, y, w, h, text, color, sub=None):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                fc=color, ec=INK, lw=1.2, alpha=0.9))
    ax.text(x, y + (0.1 if sub else 0), text, ha="center", va="center", fontsize=15, color="white", weight="bold")
    if sub:
        ax.text(x, y - 0.22, sub, ha="center", va="center", fontsize=9, color="white")


def _arrow(ax, p, q):
    ax.add_patch(FancyArrowPatch(p, q, arrowstyle="-|>", mutation_scale=14, lw=1.4, color=INK,
                                 shrinkA=0, shrinkB=0))


def draw():
    """The figure: frozen path on top, the low-rank path below, summed at the right."""
    fig, ax = plt.subplots(figsize=(8.4, 3.4))
    ax.set_xlim(0, 10.5)
    ax.set_ylim(0, 4)
    ax.axis("off")
    ax.text(0.45, 2.0, "$x$", fontsize=18, ha="center", va="center")
    ax.text(0.45, 1.55, r"$d_\mathrm{in}$", fontsize=10, ha="center", va="center", color=INK)
    _box(ax, 4.6, 3.1, 1.7, 0.9, "$W_0$", FROZEN, r"frozen, $d_\mathrm{out} \times d_\mathrm{in}$")
    # the bottleneck: A narrows d_in to r, B widens r to d_out
    ax.add_patch(Polygon([(2.4, 1.45), (3.6, 1.05), (3.6, 0.55), (2.4, 0.15)], closed=True, fc=TRAIN, ec=INK))
    ax.text(3.0, 0.8, "$A$", fontsize=15, ha="center", va="center", color="white", weight="bold")
    ax.text(3.0, -0.05, r"$r \times d_\mathrm{in}$, random", fontsize=9, ha="center", va="top")
    ax.add_patch(Polygon([(4.4, 1.05), (5.6, 1.45), (5.6, 0.15), (4.4, 0.55)], closed=True, fc=TRAIN, ec=INK))
    ax.text(5.0, 0.8, "$B$", fontsize=15, ha="center", va="center", color="white", weight="bold")
    ax.text(5.0, -0.05, r"$d_\mathrm{out} \times r$, zero at start", fontsize=9, ha="center", va="top")
    ax.text(4.0, 1.1, "$r$", fontsize=12, ha="center", va="bottom")
    _box(ax, 7.0, 0.8, 1.1, 0.7, r"$\times s$", TRAIN, r"$s = \alpha / r$")
    ax.add_patch(plt.Circle((8.6, 2.0), 0.3, fc="white", ec=INK, lw=1.4))
    ax.text(8.6, 2.0, "+", fontsize=18, ha="center", va="center")
    ax.text(10.05, 2.0, "$h$", fontsize=18, ha="center", va="center")
    ax.text(10.05, 1.55, r"$d_\mathrm{out}$", fontsize=10, ha="center", va="center")
    _arrow(ax, (0.75, 2.0), (1.4, 2.0))
    ax.plot([1.4, 1.4], [0.8, 3.1], color=INK, lw=1.4)
    _arrow(ax, (1.4, 3.1), (3.75, 3.1))
    _arrow(ax, (1.4, 0.8), (2.4, 0.8))
    _arrow(ax, (3.6, 0.8), (4.4, 0.8))
    _arrow(ax, (5.6, 0.8), (6.45, 0.8))
    ax.plot([5.45, 8.6], [3.1, 3.1], color=INK, lw=1.4)
    _arrow(ax, (8.6, 3.1), (8.6, 2.3))
    ax.plot([7.55, 8.6], [0.8, 0.8], color=INK, lw=1.4)
    _arrow(ax, (8.6, 0.8), (8.6, 1.7))
    _arrow(ax, (8.9, 2.0), (9.75, 2.0))
    ax.text(6.6, 3.3, r"$W_0 x$", fontsize=12, ha="center", va="bottom", color=INK)
    ax.text(7.7, 1.0, r"$s\,BAx$", fontsize=12, ha="left", va="bottom", color=TRAIN)
    ax.text(5.25, 3.85, r"$h = W_0 x + s\,B A x$   (grey: frozen, blue: trained)", fontsize=12,
            ha="center", va="center")
    return fig


def creator() -> str:
    """The SVG's Creator field: the output is byte-stable for one matplotlib version."""
    return f"scripts/make_diagram.py with matplotlib {matplotlib.__version__}"


def render() -> bytes:
    """The SVG bytes, identical on every run."""
    plt.rcParams["svg.hashsalt"] = "minilora-lora-layer"
    plt.rcParams["svg.fonttype"] = "path"          # text as paths: no font needed to view it
    fig = draw()
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": creator()})
    plt.close(fig)
    return buf.getvalue()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed SVG, write nothing")
    args = parser.parse_args(argv)
    svg = render()
    if args.check:
        same = OUT.is_file() and OUT.read_bytes() == svg
        print(f"make_diagram: {OUT.relative_to(ROOT)} {'is up to date' if same else 'differs: re-run the script'}")
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_name(OUT.name + ".tmp")
    tmp.write_bytes(svg)
    tmp.replace(OUT)                                 # atomic: never a half-written file
    print(f"make_diagram: wrote {OUT.relative_to(ROOT)} ({len(svg):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
