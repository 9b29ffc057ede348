"""Markdown tables for the two labs (labs.py), as `minilora analyze --lab ...` writes them."""
from __future__ import annotations


def intrinsic_rank_markdown(res: dict) -> str:
    """Loss, best rank-r loss, phi and effective ranks per student rank r."""
    c = res["config"]
    lines = ["# Intrinsic-rank lab", "",
             f"Planted rank k = {c['k']} update (sigmas {', '.join(f'{s:.3g}' for s in res['sigmas'])}) "
             f"on a {c['d_out']}x{c['d_in']} base; {c['n_samples']} samples, {c['steps']} full-batch "
             f"AdamW steps, {c['init']} init, seed {c['seed']}. Untrained loss {res['zero_loss']:.4g}.", "",
             "| r | loss | loss / untrained | best rank-r loss | phi_left | phi_right | coverage_left "
             "| coverage_right | entropy rank | energy rank 99% |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['r']} | {r['loss']:.3g} | {r['rel_loss']:.3g} | {r['floor']:.3g} "
                     f"| {r['phi_left']:.4f} | {r['phi_right']:.4f} | {r['coverage_left']:.3f} "
                     f"| {r['coverage_right']:.3f} | {r['entropy_rank']:.2f} | {r['energy_rank_0.99']} |")
    return "\n".join(lines) + "\n"


def precision_markdown(res: dict) -> str:
    """The merge-error, cycle-drift and quantized-merge tables."""
    lines = ["# Precision lab", "", "## Merged vs unmerged outputs", "",
             "| dtype | size | ‖ΔW‖/‖W‖ | rel. error | merged vs float64 | unmerged vs float64 | eps |",
             "|---|---|---|---|---|---|---|"]
    for r in res["merge"]:
        lines.append(f"| {r['dtype']} | {r['size']} | {r['magnitude']:g} | {r['rel_err']:.2e} "
                     f"| {r['merged_vs_exact']:.2e} | {r['unmerged_vs_exact']:.2e} | {r['eps']:.1e} |")
    lines += ["", "## Drift after N merge/unmerge cycles", "",
              "| dtype | N | max abs drift | rel. drift | bound N eps (max abs W + max abs ΔW) |",
              "|---|---|---|---|---|"]
    for r in res["cycles"]:
        lines.append(f"| {r['dtype']} | {r['cycles']} | {r['max_abs_drift']:.2e} | {r['rel_drift']:.2e} "
                     f"| {r['bound']:.2e} |")
    lines += ["", "## Merging into a quantized base (requantized)", "",
              "| bits | group | ‖ΔW‖/‖W‖ | base quant. error | error / ‖ΔW‖ | vs float merge "
              "| max abs vs dequant | bound |", "|---|---|---|---|---|---|---|---|"]
    for r in res["quant"]:
        lines.append(f"| {r['bits']} | {r['group_size'] or 'row'} | {r['magnitude']:g} "
                     f"| {r['base_rel_err']:.2e} | {r['update_rel_err']:.3g} | {r['rel_vs_float']:.2e} "
                     f"| {r['max_abs_vs_dequant']:.2e} | {r['requant_bound']:.2e} |")
    return "\n".join(lines) + "\n"
