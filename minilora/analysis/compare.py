"""The paper's Figure-3 experiment on the tiny model: LoRA at two ranks, and a second seed.

Three adapters are trained on the same data from the same float base: (r1, seed0), (r2, seed0)
and (r1, seed1); the seed sets both the factors' initialisation and the data order. Each is saved
as a PEFT folder and read back, and two pairs are compared with phi (subspace.py):
r1 vs r2 at one seed, and seed0 vs seed1 at r1. As a control, phi is also computed between the
A matrices at initialisation: a top direction shared after training but not at init was learned.
(With one seed, add_lora draws the first module's A of both ranks from the same fresh generator,
so A_r2[:r1] = A_r1 there at init; the control shows it.)
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import replace

from minilora.adapters import LoraConfig, add_lora
from minilora.analysis.amplification import amplification_table
from minilora.analysis.plots import save_phi_heatmaps, save_spectra
from minilora.analysis.report import PHI_KINDS, phi_section, save_grids, short_name, short_rows
from minilora.analysis.spectra import module_spectra
from minilora.backend import to_numpy
from minilora.data import ByteTokenizer, encode_example, load_jsonl
from minilora.io import from_pretrained, load_weights
from minilora.io.atomic import write_json, write_text
from minilora.io.peft import read_adapter_factors, save_adapter
from minilora.training.loop import fit


def _mean(xs) -> float:
    return float(sum(xs) / len(xs))


def compare_ranks(out, ranks, seeds, targets, run, base_folder, train_cfg, max_train=None,
                  init="kaiming", max_plots=8, progress=True, log=print) -> dict:
    """Train, save, compare; writes summary.json, summary.md and plots into out. Returns the summary.

    run: a FinLoraRun (data, lora_alpha, dropout, rsLoRA); base_folder: its base as a Hugging Face
    folder, used in float32; train_cfg: the TrainConfig (its seed is replaced by each adapter's);
    init: A's initialisation, 'kaiming' (PEFT's default and the LoRA paper's code: U(+-1/sqrt(in)),
    a scale independent of r, so both ranks start alike) or 'gaussian' (N(0, 1/r^2)).
    """
    t0, j = time.perf_counter(), os.path.join
    tok = ByteTokenizer()
    rows = load_jsonl(run.dataset_path)[:max_train]
    examples = [encode_example(r["context"], r["target"], tok) for r in rows]
    plan = [(ranks[0], seeds[0]), (ranks[1], seeds[0]), (ranks[0], seeds[1])]
    labels = [f"r{r}_seed{s}" for r, s in plan]
    models, init_a, notes = _adapted_models(labels, plan, run, targets, base_folder, init)
    for n in notes:
        log(f"note: {n}")
    log(f"training {', '.join(labels)} on {len(examples)} rows of {run.dataset_path}: "
        f"{train_cfg.num_epochs} epoch(s), batch {train_cfg.batch_size} x "
        f"{train_cfg.gradient_accumulation_steps} accumulation, lr {train_cfg.learning_rate}, "
        f"lora_alpha {run.lora_alpha}, {init} init, targets {', '.join(targets)}, "
        f"float32 base {base_folder}")
    adapters, info = _train_and_read(models, labels, plan, examples, run, base_folder, train_cfg, out,
                                     progress, log)
    files = [save_spectra(short_rows(info[lb]["spectra"][:max_plots]), j(out, f"spectra_{lb}.png"),
                          title=f"Singular values of delta W, {lb}") for lb in labels]
    pairs = {}
    for pair, (p, q) in ((f"r{ranks[0]}_vs_r{ranks[1]}", labels[:2]),
                         (f"seed{seeds[0]}_vs_seed{seeds[1]}", (labels[0], labels[2]))):
        pairs[pair] = _phi_pair(adapters, init_a, p, q, pair, out, max_plots, files)
    summary = {"command": "minilora analyze --compare-ranks", "training": {
        "run": run.name, "rows": len(examples), "epochs": train_cfg.num_epochs,
        "batch_size": train_cfg.batch_size, "accumulation": train_cfg.gradient_accumulation_steps,
        "learning_rate": train_cfg.learning_rate, "lora_alpha": run.lora_alpha, "init": init,
        "targets": targets, "warmup_ratio": train_cfg.warmup_ratio,
        "base": base_folder, "notes": notes}, "adapters": info, "pairs": pairs,
        "seconds": time.perf_counter() - t0, "files": [os.path.basename(f) for f in files]}
    write_json(j(out, "summary.json"), summary)
    md = compare_markdown(summary)
    write_text(j(out, "summary.md"), md)
    log(md.rstrip("\n"))
    log(f"wrote {out}/: 3 adapters, {len(files)} plots/grids, summary.json, summary.md "
        f"({summary['seconds']:.0f}s)")
    return summary


def _adapted_models(labels, plan, run, targets, base_folder, init):
    """Every adapter first (a bad rank fails fast): ({label: model}, {label: A at init}, warnings)."""
    models, init_a, notes = {}, {}, []
    for label, (r, seed) in zip(labels, plan, strict=True):
        m = from_pretrained(base_folder, seed=seed)
        cfg = LoraConfig(r=r, lora_alpha=run.lora_alpha, target_modules=targets, init_lora_weights=init,
                         lora_dropout=run.lora_dropout, use_rslora=run.peft_use_rslora)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            add_lora(m, cfg, seed=seed)
        notes += [str(w.message) for w in caught if str(w.message) not in notes]
        models[label] = m
        init_a[label] = {mod: (to_numpy(m.params[mod + ".lora_A.weight"]).copy(), None, 1.0)
                         for mod in m.adapters.modules}
    return models, init_a, notes


def _train_and_read(models, labels, plan, examples, run, base_folder, train_cfg, out, progress, log):
    """Train each adapter, save it (PEFT), read it back: ({label: AdapterFactors}, {label: info})."""
    adapters, info = {}, {}
    weights = load_weights(base_folder)
    for label, (r, seed) in zip(labels, plan, strict=True):
        res = fit(models[label], examples, replace(train_cfg, seed=seed), progress=progress, desc=label)
        folder = os.path.join(out, f"adapter_{label}")
        save_adapter(models[label], folder, base_model_name_or_path=run.base_model)
        adapters[label] = read_adapter_factors(folder)
        k = max(1, len(res.losses) // 10)
        info[label] = {"r": r, "seed": seed, "path": folder, "steps": res.steps,
                       "seconds": res.seconds, "loss_first": _mean(res.losses[:k]),
                       "loss_last": _mean(res.losses[-k:]), "spectra": module_spectra(adapters[label].modules),
                       "amplification": amplification_table(
                           {mod: weights[mod + ".weight"] for mod in adapters[label].modules},
                           adapters[label].modules)}
        log(f"{label}: {res.steps} steps in {res.seconds:.1f}s, loss (mean of {k} steps) "
            f"{info[label]['loss_first']:.4f} -> {info[label]['loss_last']:.4f}")
    return adapters, info


def _phi_pair(adapters, init_a, p, q, pair, out, max_plots, files) -> dict:
    """phi between adapters p and q (and between their A at init); heat maps and grids into files."""
    prow, grids = phi_section(adapters[p].modules, adapters[q].modules)
    init_rows, _ = phi_section(init_a[p], init_a[q], kinds=("A",))
    for row, irow in zip(prow, init_rows, strict=True):
        row["A_init"] = irow["A"]
    for kind, per in grids.items():
        shown = {short_name(m): g for m, g in list(per.items())[:max_plots]}
        files.append(save_phi_heatmaps(shown, os.path.join(out, f"phi_{kind}_{pair}.png"),
                                       title=f"phi(i, j), {p} (i) vs {q} (j): {PHI_KINDS[kind]}"))
    files.append(save_grids(grids, os.path.join(out, f"phi_grids_{pair}.npz")))
    return {"adapters": [p, q], "rows": prow}


def compare_markdown(summary: dict) -> str:
    """The tables of a compare_ranks summary: training, phi(1, 1) per module, effective ranks."""
    t = summary["training"]
    lines = ["# LoRA subspaces: two ranks and two seeds on the tiny model", "",
             f"Run {t['run']}: {t['rows']} rows, {t['epochs']} epoch(s), batch {t['batch_size']} x "
             f"{t['accumulation']}, lr {t['learning_rate']}, lora_alpha {t['lora_alpha']}, targets "
             f"{', '.join(t['targets'])}.", "",
             "| adapter | steps | loss first -> last | mean entropy rank | mean amplification |",
             "|---|---|---|---|---|"]
    for lb, a in summary["adapters"].items():
        er = _mean([row["entropy_rank"] for row in a["spectra"]])
        amp = _mean([row["amplification"] for row in a["amplification"]])
        lines.append(f"| {lb} | {a['steps']} | {a['loss_first']:.4f} -> {a['loss_last']:.4f} "
                     f"| {er:.2f} | {amp:.3g} |")
    for pr in summary["pairs"].values():
        p, q = pr["adapters"]
        lines += ["", f"## phi(i = 1, j = 1): {p} vs {q}", "",
                  "| module | A | A at init | delta W right | delta W left | chance 1/d_in |",
                  "|---|---|---|---|---|---|"]
        for row in pr["rows"]:
            v = [row[k]["phi_11"] if row[k] else None for k in ("A", "A_init", "right", "left")]
            lines.append(f"| {row['module']} | " + " | ".join("-" if x is None else f"{x:.3f}" for x in v)
                         + f" | {1 / row['d_in']:.4f} |")
        n = sum(row["A"]["phi_11"] > 0.5 for row in pr["rows"])
        lines.append(f"\nphi_A(1, 1) > 0.5 in {n} of {len(pr['rows'])} modules.")
    return "\n".join(lines) + "\n"
