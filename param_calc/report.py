"""The readable report and the JSON document for one LoRA configuration, and the rank sweep."""
from __future__ import annotations

from param_calc.counting import LoraCount, count_lora
from param_calc.fmt import n, nbytes, table
from param_calc.memory import adapter_file_bytes, memory_assumptions, memory_estimate
from param_calc.shortcuts import rounded_ratio, square_formula, why_not_square

# The seed document's headline (Llama-3.1-70B, r = 4 on q/k/v), which the report points back to.
SEED_BASE, SEED_LORA = 70_553_706_496, 11_141_120


def describe_arch(arch) -> str:
    """One line of the shape-fixing config values."""
    c = arch.config
    tied = "tied embeddings" if arch.tied else "untied embeddings"
    if "hidden_size" in c:
        kv = c.get("num_key_value_heads") or c["num_attention_heads"]
        return (f"hidden {c['hidden_size']}, intermediate {c['intermediate_size']}, {c['num_hidden_layers']} "
                f"layers, {c['num_attention_heads']} heads ({kv} KV, head_dim {c['head_dim']}), "
                f"vocab {c['vocab_size']}, {tied}")
    return (f"d_model {c['n_embd']}, {c['n_layer']} layers, {c['n_head']} heads, MLP "
            f"{c.get('n_inner') or 4 * c['n_embd']}, context {c['n_positions']}, vocab {c['vocab_size']}, {tied}")


def targets_text(targets, arch) -> str:
    if targets is None:
        return f"{', '.join(arch.default_targets)} (PEFT's default for {arch.model_type})"
    if isinstance(targets, str):
        return targets
    return ", ".join(targets)


def per_layer(count: LoraCount):
    """LoRA parameters in one layer, if every layer has the same; else None."""
    sums = {}
    for a in count.adapted:
        parts = a.module.name.split(".")
        idx = next((p for p in parts if p.isdigit()), None)
        if idx is None:
            return None
        sums[idx] = sums.get(idx, 0) + a.params
    vals = set(sums.values())
    return vals.pop() if len(sums) == count.arch.num_layers and len(vals) == 1 else None


def sweep(count: LoraCount, ranks, adapter_dtype="fp32") -> list:
    """The same targets at each rank (rank_pattern entries keep their ranks)."""
    out = []
    for r in ranks:
        c = count_lora(count.arch, r, count.targets, count.rank_pattern, dora=count.dora)
        out.append({"rank": r, "lora_params": c.lora_params, "peft_all_params": c.peft_all_params,
                    "ratio": c.ratio, "trainable_percent": c.trainable_percent,
                    "adapter_file_bytes": adapter_file_bytes(c, adapter_dtype)})
    return out


def to_json(count: LoraCount, *, hf_id=None, alpha=None, quant_bits=16, adapter_dtype="fp32",
            optimizer="adamw", ranks=None, run=None) -> dict:
    """The JSON document: counts, per-module rows, shortcuts, memory and an optional sweep."""
    arch = count.arch
    doc = {
        "model": arch.name, "hf_id": hf_id, "model_type": arch.model_type, "config": arch.config,
        "rank": count.rank, "lora_alpha": alpha, "targets": count.targets, "rank_pattern": count.rank_pattern,
        "dora": count.dora, "adapted_modules": len(count.adapted),
        "base_params": count.base_params, "lora_params": count.lora_params,
        "peft_all_params": count.peft_all_params, "ratio": count.ratio,
        "trainable_percent": count.trainable_percent, "per_layer": per_layer(count),
        "per_module": count.rows(),
        "rounded": rounded_ratio(count), "square_formula": square_formula(count),
        "memory": {"quant_bits": quant_bits, "adapter_dtype": adapter_dtype, "optimizer": optimizer,
                   "bytes": memory_estimate(count, quant_bits, adapter_dtype, optimizer),
                   "assumptions": memory_assumptions(count, quant_bits, adapter_dtype, optimizer)},
    }
    if run is not None:
        doc["run"] = run
    if ranks:
        doc["sweep"] = sweep(count, ranks, adapter_dtype)
    return doc


def render(doc: dict, count: LoraCount, memory: bool = True) -> str:
    """The readable report for a to_json document (memory=False leaves out the memory estimate)."""
    arch = count.arch
    src = f" ({doc['hf_id']})" if doc.get("hf_id") else ""
    lines = [f"{arch.name}{src}, model_type {arch.model_type}", f"  {describe_arch(arch)}"]
    if doc.get("run"):
        lines.append(f"  FinLoRA run {doc['run']['name']}: " +
                     ", ".join(f"{k} {v}" for k, v in doc["run"].items() if k != "name"))
    alpha = doc["lora_alpha"]
    scale = f", alpha {alpha:g} (scale alpha/r = {alpha / count.rank:g})" if alpha is not None else ""
    pattern = f", rank_pattern {count.rank_pattern}" if count.rank_pattern else ""
    lines.append(f"LoRA: r = {count.rank}{scale}{pattern}{', DoRA' if count.dora else ''}; targets "
                 f"{targets_text(count.targets, arch)} -> {len(count.adapted)} modules")
    lines.append("")
    rows = [[r["module"], f"{r['in']} x {r['out']}", r["rank"], r["count"], n(r["params_per_module"]),
             n(r["total"])] for r in doc["per_module"]]
    rows.append(["total", "", "", len(count.adapted), "", n(count.lora_params)])
    head = ["module", "in x out", "r", "count", "A+B per module", "total"]
    lines += table(head, rows, right={2, 3, 4, 5})
    if doc["per_layer"] is not None:
        lines.append(f"per layer: {n(doc['per_layer'])} x {arch.num_layers} layers = {n(count.lora_params)}")
    lines.append("")
    pct = doc["trainable_percent"]
    lines += [
        f"LoRA params          {n(count.lora_params)}",
        f"base params          {n(count.base_params)}" + ("  (tied head counted once)" if arch.tied else ""),
        f"PEFT all params      {n(count.peft_all_params)}  (base + LoRA)",
        f"ratio base / LoRA    {count.ratio:,.1f}x",
        f"trainable %          {pct:.4f}%  (LoRA / PEFT all params)",
        "",
    ]
    lines += shortcut_lines(doc, count)
    lines += memory_lines(doc) if memory else []
    if doc.get("sweep"):
        lines += [""] + sweep_lines(doc["sweep"])
    return "\n".join(lines)


def shortcut_lines(doc: dict, count: LoraCount) -> list:
    """Where rounded ratios and |Theta| = 2 L n r come from, for this configuration."""
    rr, sq = doc["rounded"], doc["square_formula"]
    lines = ["Where the shortcut figures come from:",
             f"  rounded first:  {rr['base_rounded']} / {rr['lora_rounded']} = {rr['rounded_ratio']:,.1f}x "
             f"(exact {rr['exact_ratio']:,.1f}x, {rr['difference']:+,.1f}); dividing rounded figures moves the ratio"]
    if count.base_params == SEED_BASE and count.lora_params == SEED_LORA:
        lines.append(" " * 18 + "this is the \"~6,337\" of FinLoRA's \"Vanilla LoRA\" page (6,337.5 cut to 6,337)")
        lines.append(f"                  and its \"~6,340x\" (rounded again); the exact ratio is {count.ratio:,.1f}x")
    r = sq["r"] if sq["r"] is not None else "r_i"
    lines.append(f"  2 x L x n x r:  2 x {sq['L']} x {sq['n']} x {r} = {n(sq['formula_params'])} "
                 f"(exact {n(sq['exact_params'])}, {sq['difference']:+,})")
    if sq["non_square"]:
        for ns in sq["non_square"]:
            lines.append(f"                  {ns['module']} is {ns['in']} x {ns['out']}, not {sq['n']} x {sq['n']} "
                         f"({why_not_square(count, ns['module'], ns['in'], ns['out'])})")
        lines.append("                  the formula holds only for n x n matrices; exact is sum of r*(in + out)")
    else:
        lines.append("                  exact here: every adapted matrix is n x n")
    return lines + [""]


def memory_lines(doc: dict) -> list:
    mem = doc["memory"]
    b = mem["bytes"]
    rows = [
        [f"frozen base at {mem['quant_bits']} bits", nbytes(b["base_weights"])],
        [f"LoRA weights ({mem['adapter_dtype']})", nbytes(b["lora_weights"])],
        [f"LoRA gradients ({mem['adapter_dtype']})", nbytes(b["lora_gradients"])],
        [f"optimizer states ({mem['optimizer']})", nbytes(b["optimizer_states"])],
        ["total (weights, grads, optimizer)", nbytes(b["total"])],
        ["adapter file (adapter_model.safetensors)", nbytes(b["adapter_file"])],
    ]
    lines = ["Memory estimate for training:"] + ["  " + ln for ln in table(["component", "bytes"], rows)]
    lines.append("  assumptions:")
    lines += [f"  - {a}" for a in mem["assumptions"]]
    return lines


def sweep_lines(rows: list) -> list:
    body = [[r["rank"], n(r["lora_params"]), f"{r['ratio']:,.1f}x", f"{r['trainable_percent']:.4f}%",
             n(r["adapter_file_bytes"])] for r in rows]
    return ["Rank sweep:"] + ["  " + ln for ln in table(
        ["rank", "LoRA params", "ratio", "trainable %", "adapter file bytes"], body)]
