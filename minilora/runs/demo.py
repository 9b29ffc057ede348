"""`minilora demo`: the main job. Fine-tune the tiny pretrained Llama on financial sentiment.

1. Load the shipped base (a Hugging Face folder) and the shipped data (FinLoRA JSONL).
2. Show that adding LoRA changes nothing at init (logits equal bit for bit).
3. Fine-tune LoRA r=8 on q/k/v over an 8-bit base (the FinLoRA-style run from
   configs/finetune_configs.json), then r=1, 2, 4 and full fine-tuning for comparison.
4. Table: trainable parameters, accuracy, time, peak memory - every number measured here.
5. Merge r=8: merged logits equal unmerged logits; merged forward time equals the base's.
6. Save the adapter (PEFT format), the loss curves (PNG) and a JSON summary to the output folder.
7. The param_calc summary for Llama-3.1-70B.
"""
from __future__ import annotations

import os
import time
import tracemalloc

import numpy as np

from minilora.adapters import (
    LoraConfig,
    add_lora,
    format_trainable,
    get_adapter,
    install_adapter,
    merge_lora,
    trainable_summary,
)
from minilora.bench.tools import interleaved, median
from minilora.data import LABELS, ByteTokenizer, encode_example, load_jsonl
from minilora.inference.evaluate import choice_accuracy
from minilora.io.atomic import write_json
from minilora.io.peft import save_adapter
from minilora.model import LlamaForCausalLM
from minilora.runs.finlora import get_run
from minilora.runs.recipes import default_config_path, load_model, resolve_base, train_config
from minilora.training.loop import fit

FULL_FT_LR = 5e-4            # full fine-tuning moves every weight: a smaller step than LoRA's


def measured_fit(model, examples, cfg, desc, progress):
    """fit() under tracemalloc: (result, peak bytes allocated during training, weights excluded)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        res = fit(model, examples, cfg, progress=progress, desc=desc)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return res, peak


TIMING_REPEATS = 15


def finetune_job(args) -> dict:
    """One fine-tune of the demo's table (LoRA of rank `job`, or "full"), evaluated on the test rows.

    A top-level function so that worker processes can run it. Returns the table row, the loss curve,
    PEFT's trainable line, and (for LoRA) the trained factors.
    """
    run, job, examples, test_rows, progress = args
    tok = ByteTokenizer()
    if job == "full":
        m = load_model(run, quant_bits=16)
        m.set_full_finetuning()
        res, peak = measured_fit(m, examples, train_config(run, lr=FULL_FT_LR), "full FT", progress)
        same, name, method = None, "full fine-tuning", "full fine-tuning (float32)"
    else:
        m = load_model(run)
        probe = np.asarray([e[0] for e in examples[:8] if len(e[0]) == len(examples[0][0])])
        before = m.forward(probe)
        add_lora(m, LoraConfig(r=job, lora_alpha=run.lora_alpha, target_modules=run.target_modules,
                               lora_dropout=run.lora_dropout, use_rslora=run.peft_use_rslora), seed=run.seed)
        same = bool(np.array_equal(m.forward(probe), before))
        res, peak = measured_fit(m, examples, train_config(run), f"LoRA r={job}", progress)
        name, method = f"LoRA r={job}", f"LoRA r={job} ({run.quant_bits}-bit base)"
    acc = choice_accuracy(m, test_rows, tok, LABELS)
    s = trainable_summary(m)
    row = dict(method=method, r=None if job == "full" else job, trainable=s["trainable"], percent=s["percent"],
               accuracy=acc, seconds=res.seconds, peak_mb=peak / 2**20, zero_at_init=same)
    factors = {n: m.params[n] for n in m.adapters.param_names()} if job != "full" else None
    return dict(row=row, name=name, losses=res.losses, trainable_line=format_trainable(m), factors=factors)


def run_jobs(jobs, workers: int) -> list:
    """finetune_job over jobs, in order; with workers > 1 in that many processes."""
    if workers == 1:
        return [finetune_job(j) for j in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(pool.map(finetune_job, jobs))


def run_demo(out_dir="demo_out", config_path=None, run_name="sentiment_tiny_8bits_r8", ranks=(1, 2, 4),
             full=True, progress=True, max_train=None, max_test=None, workers=None, log=print):
    """Run the whole demo; returns the summary dict (also written to out_dir/summary.json)."""
    t_start = time.perf_counter()
    run = get_run(config_path or default_config_path(), run_name)
    tok = ByteTokenizer()
    train_rows = load_jsonl(run.dataset_path)[:max_train]
    test_rows = load_jsonl(run.test_dataset_path)[:max_test]
    examples = [encode_example(r["context"], r["target"], tok) for r in train_rows]
    os.makedirs(out_dir, exist_ok=True)

    base = load_model(run, quant_bits=16)
    n_base = base.num_params()
    log(f"base: {resolve_base(run.base_model)}  ({n_base:,} parameters, "
        f"{base.config.num_hidden_layers} layers, hidden {base.config.hidden_size})")
    log(f"data: {len(train_rows)} train / {len(test_rows)} test rows ({run.dataset_path})")
    acc_zero = choice_accuracy(base, test_rows, tok, LABELS)
    log(f"zero-shot accuracy of the base: {100 * acc_zero:.1f}% (chance {100 / len(LABELS):.1f}%)")

    jobs = [run.lora_r, *ranks] + (["full"] if full else [])
    rows, curves, factors = finetune_table(run, jobs, examples, test_rows, workers, progress, log)
    log("")
    log(format_table(rows, acc_zero))
    adapter_dir = os.path.join(out_dir, f"adapter_r{run.lora_r}")
    merge = merge_check(run, factors, examples, adapter_dir, log)

    plot_path = os.path.join(out_dir, "loss_curves.png")
    save_loss_plot(curves, plot_path)
    lora_main = next(r for r in rows if r["r"] == run.lora_r)
    full_row = next((r for r in rows if r["r"] is None), None)
    summary = dict(base_params=n_base, zero_shot_accuracy=acc_zero, rows=rows, **merge,
                   adapter_dir=adapter_dir, plot=plot_path,
                   lora_vs_full_accuracy_points=None if full_row is None
                   else 100 * (lora_main["accuracy"] - full_row["accuracy"]),
                   seconds=time.perf_counter() - t_start)
    write_json(os.path.join(out_dir, "summary.json"), summary)
    log(f"wrote {adapter_dir}/ (PEFT adapter), {plot_path}, {os.path.join(out_dir, 'summary.json')}")
    log("")
    log(param_calc_summary())
    log(f"\ndemo finished in {summary['seconds']:.0f}s")
    return summary


def finetune_table(run, jobs, examples, test_rows, workers, progress, log):
    """The table's fine-tunes (ranks, "full"), several processes at a time: (rows, loss curves, the
    trained factors of the run's own rank)."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    log(f"fine-tuning {len(jobs)} models, {workers} at a time (one process per core, one BLAS thread each)")
    results = run_jobs([(run, job, examples, test_rows, progress and workers == 1) for job in jobs], workers)
    rows, curves, factors = [], {}, None
    for job, out in zip(jobs, results, strict=True):
        rows.append(out["row"])
        curves[out["name"]] = out["losses"]
        if job == run.lora_r:
            log(f"LoRA r={job} on {', '.join(run.target_modules)}, {run.quant_bits}-bit base: "
                f"logits at init equal the base's bit for bit: {out['row']['zero_at_init']}")
            log(out["trainable_line"])
            factors = out["factors"]
    return rows, curves, factors


def merge_check(run, factors, examples, adapter_dir, log) -> dict:
    """Save the run's adapter, merge it into a float copy of its base: merged vs unmerged logits, and
    the forward time of merged, unmerged and base (interleaved medians)."""
    m = load_model(run)
    add_lora(m, LoraConfig(r=run.lora_r, lora_alpha=run.lora_alpha, target_modules=run.target_modules,
                           lora_dropout=run.lora_dropout, use_rslora=run.peft_use_rslora), seed=run.seed)
    m.params.update(factors)
    save_adapter(m, adapter_dir, base_model_name_or_path=run.base_model)
    m.dequantize_base()
    batch = np.asarray([e[0][:48] for e in examples[:64] if len(e[0]) >= 48][:32])
    base_params = {n: w for n, w in m.params.items() if n not in m.adapters.param_names()}
    unmerged_model = LlamaForCausalLM(m.config, base_params, seed=run.seed)      # shares the arrays
    st = get_adapter(m, m.adapters.active)
    install_adapter(unmerged_model, m.adapters.active, st.config, st.lora, st.factors)
    unmerged = m.forward(batch)
    merge_lora(m)                                 # writes new merged arrays into m.params only
    merged = m.forward(batch)
    merge_err = float(np.max(np.abs(merged - unmerged)))
    rel = merge_err / float(np.max(np.abs(unmerged)))
    base_f = load_model(run, quant_bits=16)
    times = interleaved({"base": lambda: base_f.forward(batch), "merged": lambda: m.forward(batch),
                         "unmerged": lambda: unmerged_model.forward(batch)}, warmup=1, repeats=TIMING_REPEATS)
    t_base, t_merged, t_unmerged = (median(times[k]) for k in ("base", "merged", "unmerged"))
    log(f"merged vs unmerged logits: max abs diff {merge_err:.2e} (relative {rel:.1e}, float32)")
    log(f"forward time: merged / base = {t_merged / t_base:.3f}, unmerged / base = {t_unmerged / t_base:.3f} "
        f"(medians of {TIMING_REPEATS} interleaved runs, batch {batch.shape})")
    return dict(merge_max_abs_diff=merge_err, merge_rel_diff=rel, merged_vs_base_time=t_merged / t_base,
                unmerged_vs_base_time=t_unmerged / t_base)


def format_table(rows, acc_zero) -> str:
    head = f"{'method':<28} {'trainable':>11} {'%':>7} {'accuracy':>9} {'time s':>7} {'peak MB':>8}"
    lines = [head, "-" * len(head),
             f"{'base, zero-shot':<28} {0:>11,} {0:>7.3f} {100 * acc_zero:>8.1f}% {'-':>7} {'-':>8}"]
    for r in rows:
        lines.append(f"{r['method']:<28} {r['trainable']:>11,} {r['percent']:>7.3f} {100 * r['accuracy']:>8.1f}% "
                     f"{r['seconds']:>7.1f} {r['peak_mb']:>8.1f}")
    lines.append("peak MB: memory allocated during training (tracemalloc), the loaded weights excluded")
    return "\n".join(lines)


def save_loss_plot(curves: dict, path: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minilora.io.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, losses in curves.items():
        ax.plot(np.arange(1, len(losses) + 1), losses, label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (answer tokens)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("LoRA vs full fine-tuning on the tiny Llama")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


PARAM_CALC_ARGS = ["--model", "llama-3.1-70b", "--rank", "4", "--targets", "q_proj,k_proj,v_proj"]


def param_calc_summary() -> str:
    """The calculator's headline for Llama-3.1-70B, r=4 on q/k/v: what `param-calc` prints for
    PARAM_CALC_ARGS, without the memory estimate (through param_calc's API, not its CLI)."""
    from param_calc.counting import count_lora
    from param_calc.inputs import from_preset
    from param_calc.report import render, to_json

    source = from_preset("llama-3.1-70b")
    count = count_lora(source.arch, 4, ["q_proj", "k_proj", "v_proj"])
    doc = to_json(count, hf_id=source.hf_id, alpha=8)
    return f"$ param-calc {' '.join(PARAM_CALC_ARGS)}\n{render(doc, count, memory=False).rstrip()}"
