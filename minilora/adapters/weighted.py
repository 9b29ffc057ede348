"""A weighted combination of named adapters, as PEFT's add_weighted_adapter builds it.

For adapters i with weights w_i, scales s_i and factors A_i (r_i, in), B_i (out, r_i), on each
module that any of them adapts (an adapter without that module contributes nothing):

combination_type="cat" (exact): the ranks add up, r = sum_i r_i, and the factors are stacked
    A = [w_1 s_1 A_1; w_2 s_2 A_2; ...]   (r, in)       B = [B_1, B_2, ...]   (out, r)
    B A = sum_i w_i s_i B_i A_i            exactly the weighted sum of the updates
combination_type="linear" (not exact): needs equal ranks r; with c_i = sqrt(|w_i s_i|)
    A = sum_i sign(w_i s_i) c_i A_i        B = sum_i c_i B_i
    B A = sum_i w_i s_i B_i A_i + cross terms c_i c_j B_i A_j (i != j), so it equals the weighted
    sum only when the cross terms vanish (e.g. one adapter); it is PEFT's "linear" all the same.
The new adapter has lora_alpha = r, so its scale is 1 (use_rslora off: PEFT keeps the first
adapter's use_rslora, which would scale the result by sqrt(r)). Like PEFT, the combination is stored
under a new name and becomes active only by set_adapter (or if no adapter is active).
PEFT's svd, ties and dare variants are not implemented.
"""
from __future__ import annotations

import math
import re
from dataclasses import replace

from minilora.adapters.named import get_adapter, install_adapter
from minilora.errors import MiniLoraError
from minilora.model import LoraModule

COMBINATIONS = ("cat", "linear")


def _targets(configs, modules):
    """target_modules for the combination: the union of name lists, else a regex of the exact names."""
    if all(isinstance(c.target_modules, list) for c in configs):
        return sorted({t for c in configs for t in c.target_modules})
    return "(" + "|".join(re.escape(m) for m in modules) + ")"


def add_weighted_adapter(model, adapters, weights, adapter_name: str, combination_type: str = "cat"):
    """Store sum_i weights[i] * adapter_i as a new adapter `adapter_name` (see the module docstring).

    adapters: names of adapters on the model; weights: numbers (negative allowed), one per adapter.
    Returns the new adapter's rank.
    """
    adapters, weights = list(adapters), [float(w) for w in weights]
    if not adapters or len(adapters) != len(weights):
        raise MiniLoraError(f"need one weight per adapter, got {len(adapters)} adapters and {len(weights)} weights")
    if combination_type not in COMBINATIONS:
        raise MiniLoraError(f"combination_type {combination_type!r} is not implemented; "
                            f"choose one of {', '.join(COMBINATIONS)}")
    if len(adapters) == 1:
        combination_type = "linear"                       # as PEFT: one adapter is a plain rescale
    states = [get_adapter(model, n) for n in adapters]
    order = list(model.config.linear_modules())
    modules = sorted({m for st in states for m in st.lora}, key=order.index)
    if combination_type == "linear":
        ranks = {(n, m): lm.r for n, st in zip(adapters, states, strict=True) for m, lm in st.lora.items()}
        if len(set(ranks.values())) > 1:
            (n1, m1), r1 = next(iter(ranks.items()))
            (n2, m2), r2 = next((k, r) for k, r in ranks.items() if r != r1)
            raise MiniLoraError(f"combination_type 'linear' needs equal ranks: adapter {n1!r} has r={r1} on "
                                f"{m1}, {n2!r} has r={r2} on {m2}; use combination_type='cat'")
        new_r = next(iter(ranks.values()))
    else:                                                  # as PEFT: sum of each adapter's largest rank
        new_r = sum(max(lm.r for lm in st.lora.values()) for st in states)
    xp, dtype = model.xp, model.dtype
    factors, lora = {}, {}
    for m in modules:
        fin, fout = model.config.linear_modules()[m]
        if new_r > min(fin, fout):
            raise MiniLoraError(f"combined rank {new_r} exceeds min(in, out) = {min(fin, fout)} for {m}")
        a = xp.zeros((new_r, fin), dtype=dtype)            # (r, in)
        b = xp.zeros((fout, new_r), dtype=dtype)           # (out, r)
        row = 0
        for w, st in zip(weights, states, strict=True):
            lm = st.lora.get(m)
            if lm is None:
                continue
            a_i, b_i = st.factors[m + ".lora_A.weight"], st.factors[m + ".lora_B.weight"]
            if combination_type == "cat":
                a[row:row + lm.r] = w * lm.scale * a_i
                b[:, row:row + lm.r] = b_i
                row += lm.r
            else:
                ws = w * lm.scale
                c = math.sqrt(abs(ws))
                a += math.copysign(c, ws) * a_i
                b += c * b_i
        factors[m + ".lora_A.weight"], factors[m + ".lora_B.weight"] = a, b
        lora[m] = LoraModule(new_r, float(new_r), 1.0, states[0].lora[next(iter(states[0].lora))].dropout)
    config = replace(states[0].config, r=new_r, lora_alpha=float(new_r), target_modules=_targets(
        [st.config for st in states], modules), rank_pattern={}, alpha_pattern={}, use_rslora=False)
    install_adapter(model, adapter_name, config, lora, factors)
    return new_r
