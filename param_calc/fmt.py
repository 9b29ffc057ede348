"""Number formatting for the reports: thousands separators, rounded units, byte sizes, tables."""
from __future__ import annotations

from math import floor, log10

UNITS = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"))


def n(x) -> str:
    """12345 -> '12,345'; floats keep one decimal."""
    return f"{x:,}" if isinstance(x, int) else f"{x:,.1f}"


def round_sig(x: float, sig: int) -> float:
    """x rounded to sig significant figures."""
    if x == 0:
        return 0.0
    return round(x, sig - 1 - floor(log10(abs(x))))


def short(x: float, sig: int = 3) -> tuple:
    """(text, value): 70553706496 -> ('70.6B', 70.6e9), rounded to sig significant figures."""
    v = round_sig(x, sig)
    for scale, unit in UNITS:
        if abs(v) >= scale:
            digits = max(sig - 1 - floor(log10(abs(v) / scale)), 0)
            return f"{v / scale:.{digits}f}{unit}", v
    return f"{v:g}", v


def nbytes(b: int) -> str:
    """Bytes as '44,564,480 B (44.6 MB, 42.5 MiB)'."""
    if b < 1000:
        return f"{b:,} B"
    dec = next((f"{b / s:.1f} {u}B" for s, u in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")) if b >= s))
    binary = next((f"{b / 2 ** p:.1f} {u}iB" for p, u in ((40, "T"), (30, "G"), (20, "M"), (10, "K"))
                   if b >= 2 ** p), f"{b} B")
    return f"{b:,} B ({dec}, {binary})"


def table(header: list, rows: list, right: set | None = None) -> list:
    """Lines of a plain-text table; columns in `right` (by index) are right-aligned."""
    right = right if right is not None else set(range(1, len(header)))
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = []
    for k, r in enumerate(cells):
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        out.append("  ".join(parts).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return out
