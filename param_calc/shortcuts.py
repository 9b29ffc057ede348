"""Where the back-of-envelope figures come from: rounded ratios and |Theta| = 2 * L * n * r.

The seed document divides rounded figures (70.6B / 11.14M = 6,337.5, written "~6,337" and
"~6,340x") where the exact ratio is 6,332.7, and gives |Theta| = 2 * L * n * r, which counts every
adapted matrix as n x n. Under grouped-query attention k_proj and v_proj are n x (n_kv * head_dim),
so the formula overcounts; the exact count is the sum of r_i * (in_i + out_i).
"""
from __future__ import annotations

from param_calc.counting import LoraCount
from param_calc.fmt import short

BASE_SIG, LORA_SIG = 3, 4     # 70.6B and 11.14M, as the seed rounds them


def rounded_ratio(count: LoraCount) -> dict:
    """The ratio of the rounded figures next to the exact one."""
    base_txt, base_v = short(count.base_params, BASE_SIG)
    lora_txt, lora_v = short(count.lora_params, LORA_SIG)
    r = base_v / lora_v
    return {"base_rounded": base_txt, "lora_rounded": lora_txt, "rounded_ratio": r,
            "exact_ratio": count.ratio, "difference": r - count.ratio}


def square_formula(count: LoraCount) -> dict:
    """|Theta| = 2 * L * n * r with n = d_model, against the exact count, and which matrices differ."""
    n = count.arch.hidden_size
    ranks = {a.rank for a in count.adapted}
    formula = sum(2 * n * a.rank for a in count.adapted)
    non_square = {}
    for a in count.adapted:
        m = a.module
        if (m.fan_in, m.fan_out) != (n, n):
            non_square.setdefault(m.group, (m.fan_in, m.fan_out))
    return {"L": len(count.adapted), "n": n, "r": next(iter(ranks)) if len(ranks) == 1 else None,
            "formula_params": formula, "exact_params": count.lora_params,
            "difference": formula - count.lora_params,
            "non_square": [{"module": g, "in": i, "out": o} for g, (i, o) in non_square.items()]}


def why_not_square(count: LoraCount, group: str, fan_in: int, fan_out: int) -> str:
    """A short reason a module is not d_model x d_model."""
    cfg, d = count.arch.config, count.arch.hidden_size
    leaf = group.rsplit(".", 1)[-1]
    other = fan_out if fan_in == d else fan_in
    mlp = cfg.get("intermediate_size") or cfg.get("n_inner") or 4 * d
    if leaf in ("k_proj", "v_proj") and "num_key_value_heads" in cfg:
        kv, hd = cfg["num_key_value_heads"], cfg["head_dim"]
        return f"grouped-query attention: {kv} KV heads x head_dim {hd} = {kv * hd}"
    if leaf == "c_attn":
        return "q, k and v fused: 3 x d_model"
    if other == cfg.get("vocab_size"):
        return "vocabulary"
    if other == cfg.get("n_positions"):
        return "positions"
    if other == mlp:
        return "MLP width"
    if "head_dim" in cfg:
        return f"{cfg['num_attention_heads']} heads x head_dim {cfg['head_dim']}"
    return "not d_model x d_model"
