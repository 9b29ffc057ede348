"""`param-calc explain`: the seed document's derivation and the LoRA paper's GPT-3 figures, recomputed.

Every number here is computed from the presets by the same code as the main report; the
published figures are quoted next to them with the difference:

- the seed (FinLoRA's Vanilla LoRA page): Llama-3.1-70B, r = 4 on q_proj, k_proj, v_proj:
  139,264 per block, 11,141,120 in all, 70,553,706,496 base, "~6,337" / "~6,340x", and
  |Theta| = 2 x L x n x r;
- the LoRA paper (Hu et al. 2021): GPT-3 175B with W_q, W_v adapted: 4.7M (r = 1) and 37.7M
  (r = 8) trainable parameters (Table 4), the 18M budget "roughly 35MB in FP16" (Section 7.1), and
  the checkpoint "from 350GB to 35MB", "roughly 10,000x" (Section 4.2).
"""
from __future__ import annotations

from param_calc.architectures import build_architecture
from param_calc.counting import count_lora
from param_calc.fmt import n, nbytes, short, table
from param_calc.presets import preset_config
from param_calc.shortcuts import rounded_ratio, square_formula


def _aligned(items) -> list:
    """'   label ....... = value   (note)' lines with the values lined up."""
    w = max(len(label) for label, _, _ in items)
    vw = max(len(n(v)) for _, v, _ in items)
    return [f"   {label.ljust(w)} = {n(v).rjust(vw)}" + (f"   ({note})" if note else "") for label, v, note in items]


def _diff(ours: float, published: float) -> str:
    d = ours - published
    if d == 0:
        return "0"
    return f"{d:+,.0f} ({100 * d / published:+.2f}%)" if abs(d) >= 1 else f"{d:+,.1f} ({100 * d / published:+.2f}%)"


def seed_lines() -> list:
    """The seed document's Llama-3.1-70B derivation, step by step."""
    arch = build_architecture(preset_config("llama-3.1-70b"), "llama-3.1-70b")
    c = arch.config
    h, inter, L, v = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    kv_out = c["num_key_value_heads"] * c["head_dim"]
    count = count_lora(arch, 4, ["q_proj", "k_proj", "v_proj"])
    r = count.rank
    embed = v * h
    attn = h * h + 2 * h * kv_out + h * h
    mlp = 3 * h * inter
    layer = attn + mlp + 2 * h
    base = embed + L * layer + h + (0 if arch.tied else v * h)
    assert base == arch.base_params
    q, k = r * (h + h), r * (h + kv_out)
    per_block = q + 2 * k
    rr, sq = rounded_ratio(count), square_formula(count)
    lines = [
        "The seed document (FinLoRA's \"Vanilla LoRA\" page): Llama-3.1-70B, LoRA r = 4 on q_proj, k_proj, v_proj",
        "",
        f"1. Config: hidden n = {h}, intermediate {inter}, L = {L} layers, {c['num_attention_heads']} heads "
        f"of {c['head_dim']}, {c['num_key_value_heads']} KV heads, vocab {v}, untied embeddings.",
        f"   k_proj and v_proj map {h} -> {c['num_key_value_heads']} x {c['head_dim']} = {kv_out} "
        "(grouped-query attention), so they are not square.",
        "2. Base parameters:",
        *_aligned([
            (f"embed_tokens {v} x {h}", embed, ""),
            (f"per layer: q, o {h} x {h}; k, v {h} x {kv_out}", attn, ""),
            (f"           gate, up, down 3 x {h} x {inter}", mlp, ""),
            (f"           two RMSNorm weights 2 x {h}", 2 * h, ""),
            ("           layer total", layer, ""),
            (f"{L} layers", L * layer, ""),
            (f"final norm {h} + lm_head {v} x {h}", h + v * h, ""),
            ("total", base, "seed: 70,553,706,496"),
        ]),
        "3. LoRA adds A (r x in) and B (out x r) to each adapted matrix: r x (in + out).",
        *_aligned([
            (f"q_proj: {r} x ({h} + {h})", q, "seed: 65,536"),
            (f"k_proj: {r} x ({h} + {kv_out})", k, "seed: 36,864"),
            (f"v_proj: {r} x ({h} + {kv_out})", k, "seed: 36,864"),
            ("per block", per_block, "seed: 139,264"),
            (f"x {L} blocks", count.lora_params, "seed: 11,141,120"),
        ]),
        f"4. Ratio: {n(base)} / {n(count.lora_params)} = {count.ratio:,.4f}, i.e. {count.ratio:,.1f}x.",
        f"   The seed's \"~6,337\" divides rounded figures: {rr['base_rounded']} / {rr['lora_rounded']} = "
        f"{rr['rounded_ratio']:,.4f}, cut to 6,337;",
        f"   \"~6,340x\" rounds that again. Exact minus seed: {count.ratio - 6337:+,.1f} "
        f"({100 * (count.ratio - 6337) / 6337:+.3f}%).",
        f"5. The seed's |Theta| = 2 x L x n x r with L = {sq['L']} adapted matrices, n = {h}, r = {r}:",
        f"   2 x {sq['L']} x {h} x {r} = {n(sq['formula_params'])}, but the exact count is "
        f"{n(sq['exact_params'])} ({sq['difference']:+,}, {100 * sq['difference'] / sq['exact_params']:+.1f}%).",
        f"   The formula counts every matrix as n x n; k_proj and v_proj are {h} x {kv_out}.",
        "   Exact: |Theta| = sum over adapted matrices of r x (in + out).",
        f"6. PEFT reports trainable params {n(count.lora_params)} || all params {n(count.peft_all_params)} "
        f"|| trainable% {count.trainable_percent:.4f}",
        "",
    ]
    rows = [
        ["LoRA params, q/k/v r=4", n(count.lora_params), "11,141,120", _diff(count.lora_params, 11_141_120)],
        ["base params", n(base), "70,553,706,496", _diff(base, 70_553_706_496)],
        ["ratio", f"{count.ratio:,.1f}", "~6,337", _diff(count.ratio, 6337)],
        ["ratio (quick facts)", f"{count.ratio:,.1f}", "~6,340", _diff(count.ratio, 6340)],
        ["2 x L x n x r", n(sq["formula_params"]), "(formula)", _diff(sq["formula_params"], count.lora_params)
         + " vs exact"],
    ]
    return lines + table(["quantity", "exact", "seed", "exact - seed"], rows, right={1, 2, 3})


def gpt3_lines() -> list:
    """The LoRA paper's GPT-3 175B trainable-parameter and checkpoint-size figures."""
    arch = build_architecture(preset_config("gpt3-175b"), "gpt3-175b")
    d, L = arch.hidden_size, arch.num_layers
    qv = ["q_proj", "v_proj"]
    c1, c4, c8 = (count_lora(arch, r, qv) for r in (1, 4, 8))
    q8 = count_lora(arch, 8, ["q_proj"])
    all4 = count_lora(arch, 4, ["q_proj", "k_proj", "v_proj", "o_proj"])
    base = arch.base_params
    fp16_adapter, fp16_base = 2 * c4.lora_params, 2 * base
    lines = [
        "The LoRA paper (Hu et al. 2021): GPT-3 175B",
        "",
        f"Config (GPT-3 paper, Table 2.1): d_model = {d}, {L} layers, {arch.config['n_head']} heads, "
        f"MLP {4 * d}, context {arch.config['n_positions']}, vocab {arch.config['vocab_size']}, tied head.",
        "The paper treats W_q, W_k, W_v, W_o each as one d_model x d_model matrix (Section 4.2), so",
        f"|Theta| = 2 x L_LoRA x d_model x r is exact here: W_q, W_v in all {L} layers gives L_LoRA = {2 * L}.",
        f"Base parameters in this layout: {n(base)} ({short(base)[0]}); the paper rounds to 175B.",
        "",
    ]
    rows = [
        ["W_q, W_v, r = 1", f"2 x {2 * L} x {d} x 1", n(c1.lora_params), "4.7M (Table 4)",
         _diff(c1.lora_params, 4.7e6)],
        ["W_q, W_v, r = 8 (or all four, r = 4)", f"2 x {2 * L} x {d} x 8", n(c8.lora_params), "37.7M (Table 4)",
         _diff(c8.lora_params, 37.7e6)],
        ["budget: W_q r = 8 or W_q, W_v r = 4", f"2 x {L} x {d} x 8", n(q8.lora_params), "18M (Section 7.1)",
         _diff(q8.lora_params, 18e6)],
        ["adapter at fp16, W_q, W_v r = 4", f"2 bytes x {n(c4.lora_params)}", n(fp16_adapter) + " B",
         "35MB (Sections 4.2, 7.1)", _diff(fp16_adapter, 35e6)],
        ["base checkpoint at fp16", f"2 bytes x {n(base)}", n(fp16_base) + " B", "350GB (Section 4.2)",
         _diff(fp16_base, 350e9)],
        ["checkpoint reduction", f"{fp16_base / 1e9:.1f} GB / {fp16_adapter / 1e6:.1f} MB",
         f"{fp16_base / fp16_adapter:,.0f}x", "~10,000x (Section 4.2)", _diff(fp16_base / fp16_adapter, 1e4)],
        ["trainable-parameter reduction, r = 4", f"{short(base)[0]} / {short(c4.lora_params)[0]}",
         f"{c4.ratio:,.0f}x", "10,000x (abstract)", _diff(c4.ratio, 1e4)],
    ]
    assert all4.lora_params == c8.lora_params and q8.lora_params == c4.lora_params
    lines += table(["figure", "formula", "computed", "published", "computed - published"], rows,
                   right={2, 4})
    lines += [
        "",
        f"The paper's 35MB is {short(c4.lora_params)[0]} parameters x 2 bytes = {nbytes(fp16_adapter)};",
        f"its 18M truncates {short(q8.lora_params)[0]}; 350GB is 175B x 2 bytes (this layout: "
        f"{fp16_base / 1e9:.1f} GB); \"10,000x\" is the order",
        f"of magnitude of the exact {fp16_base / fp16_adapter:,.0f}x.",
    ]
    return lines


def explain_text(topic: str = "all") -> str:
    """The explain view: 'seed', 'gpt3' or 'all'."""
    parts = []
    if topic in ("seed", "all"):
        parts.append("\n".join(seed_lines()))
    if topic in ("gpt3", "all"):
        parts.append("\n".join(gpt3_lines()))
    return "\n\n".join(parts)
