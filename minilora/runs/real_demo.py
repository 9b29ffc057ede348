"""`minilora demo --model smollm2-135m-instruct`: LoRA on a real pretrained model, start to finish.

1. Check the inputs (data, output folder), fetch the model if needed, load the GGUF (time, peak
   memory) and its own tokenizer and chat template.
2. Quantize the frozen base (the run's quant_bits, absmax), then measure the instruct model's
   zero-shot label-choice accuracy on held-out sentiment rows, prompts in its chat template.
3. Three greedy answers before fine-tuning.
4. LoRA (the run's rank and targets) trained on the answer tokens; the adapter written in PEFT's
   format before anything is evaluated.
5. Accuracy after, and the same three answers with the adapter, side by side with those before.
6. Merge: the adapter folded into a float copy of the base; merged vs unmerged logits.
Evaluation and generation run on float_view(model): the quantized weights dequantized once.
7. A summary table; summary.json beside the adapter.

The run's settings come from configs/finetune_configs.json (sentiment_smollm2_135m_8bits_r8);
max_train / max_test pick the first rows of its data files (the demo's budget: 60 steps of 8).
"""
from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import replace

import numpy as np

from minilora.adapters import LoraConfig, add_lora, get_adapter, install_adapter, merge_lora, trainable_summary
from minilora.data.formats import candidate_labels, encode_records, prompt_and_answer, prompt_ids
from minilora.errors import MiniLoraError
from minilora.inference.evaluate import choice_accuracy
from minilora.inference.generate import generate
from minilora.io.atomic import write_json
from minilora.io.peft import save_adapter
from minilora.runs.demo import measured_fit
from minilora.runs.finlora import get_run
from minilora.runs.recipes import check_inputs, default_config_path, model_and_tokenizer, train_config
from minilora.runs.registry import resolve_base

RUN_NAME = "sentiment_smollm2_135m_8bits_r8"
GEN_TOKENS = 12


def _peak_rss_mb() -> float:
    """The process's peak resident memory so far (MB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20        # macOS reports bytes


def float_view(m):
    """A model over the same arrays whose quantized base weights are dequantized once, for inference.

    Its weights are the values the quantized model computes with (model.weight dequantizes them on
    every call), so its outputs are the same, without dequantizing 210 matrices per decoded token.
    The active adapter's factors are shared, not copied: training m changes the view too.
    """
    from minilora.model import LlamaForCausalLM

    params = {n: w for n, w in m.params.items() if n not in m.adapters.param_names()}
    params.update({n: m.weight(n) for n in m.quantized})
    view = LlamaForCausalLM(m.config, params, seed=0)
    if m.adapters.active is not None:
        st = get_adapter(m, m.adapters.active)
        install_adapter(view, m.adapters.active, st.config, st.lora, st.factors)
    return view


def answers(model, tok, rows) -> list[str]:
    """Greedy answers (at most GEN_TOKENS tokens, stopping at end-of-turn) to each row's prompt."""
    out = []
    for r in rows:
        ids = prompt_ids(prompt_and_answer(r)[0], tok, "context" if "context" in r else "prompt")
        new = [int(t) for t in generate(model, np.asarray(ids), GEN_TOKENS, eos_token_id=tok.eos_token_id)[len(ids):]]
        new = new[:-1] if new and new[-1] == tok.eos_token_id else new
        out.append(tok.decode(new).strip())
    return out


def _pick_generation_rows(rows, n=3):
    """The first row of each label, then the next rows: answers worth comparing."""
    picked, seen = [], set()
    for r in rows:
        if prompt_and_answer(r)[1] not in seen:
            picked.append(r)
            seen.add(prompt_and_answer(r)[1])
    return (picked + [r for r in rows if r not in picked])[:n]


def run_real_demo(model="smollm2-135m-instruct", out_dir="demo_real_out", config_path=None, run_name=RUN_NAME,
                  max_train=480, max_test=60, progress=True, log=print) -> dict:
    """Run the real-model demo (see the module docstring); returns the summary (also out_dir/summary.json)."""
    t_start, cpu_start = time.perf_counter(), time.process_time()
    run = replace(get_run(config_path or default_config_path(), run_name), base_model=model)
    adapter_dir = os.path.join(out_dir, f"adapter_r{run.lora_r}")
    train_rows, test_rows = check_inputs(run, [("output folder", out_dir, "folder")])
    if not test_rows:
        raise MiniLoraError(f"run {run_name!r} has no test_dataset_path to measure accuracy on")
    train_rows, test_rows = train_rows[:max_train], test_rows[:max_test]
    m, tok, info = _load(run, model, log)
    times = info["times"]
    labels, max_len = candidate_labels(test_rows), m.config.max_position_embeddings
    examples = encode_records(train_rows, tok, max_len, run.train_on_inputs, where=run.dataset_path)
    log(f"data: {len(examples)} train rows ({sum(len(e[0]) for e in examples) / len(examples):.0f} tokens each "
        f"in the chat template), {len(test_rows)} held-out rows; labels {', '.join(labels)}")

    t = time.perf_counter()
    acc0 = choice_accuracy(float_view(m), test_rows, tok, labels, max_len)
    times["eval zero-shot"] = time.perf_counter() - t
    log(f"zero-shot accuracy: {100 * acc0:.1f}% (chance {100 / len(labels):.1f}%), {times['eval zero-shot']:.1f}s")
    gen_rows = _pick_generation_rows(test_rows)
    before = answers(float_view(m), tok, gen_rows)
    s, res, peak = _finetune(m, run, examples, adapter_dir, progress, log)
    times["train"] = res.seconds

    t = time.perf_counter()
    view = float_view(m)
    acc = choice_accuracy(view, test_rows, tok, labels, max_len)
    times["eval LoRA"] = time.perf_counter() - t
    after = answers(view, tok, gen_rows)
    merge = merged_vs_unmerged(view, [e[0] for e in examples[:2]])
    del view

    log("")
    log(format_results(run, s, acc0, acc, res.seconds, peak / 2**20))
    log("")
    log(format_generations(gen_rows, before, after))
    log("")
    log(f"merged vs unmerged logits (float32 base): max abs diff {merge['max_abs_diff']:.2e}, "
        f"relative {merge['rel_diff']:.1e}")
    summary = dict(model=model, path=info["path"], parameters=m.num_params(), load_seconds=times["load"],
                   load_peak_rss_mb=info["load_rss"], weights_float32_mb=info["float_mb"], zero_shot_accuracy=acc0,
                   lora_accuracy=acc, trainable=s["trainable"], train_seconds=res.seconds, train_peak_mb=peak / 2**20,
                   losses=res.losses, n_train=len(examples), n_test=len(test_rows), times=times,
                   generations=[dict(zip(("prompt", "label"), prompt_and_answer(r), strict=True), before=b, after=a)
                                for r, b, a in zip(gen_rows, before, after, strict=True)],
                   merge_max_abs_diff=merge["max_abs_diff"], merge_rel_diff=merge["rel_diff"],
                   adapter_dir=adapter_dir, peak_rss_mb=_peak_rss_mb(), seconds=time.perf_counter() - t_start,
                   cpu_seconds=time.process_time() - cpu_start, load_average=os.getloadavg(),
                   blas_threads=os.environ.get("OPENBLAS_NUM_THREADS"))
    write_json(os.path.join(out_dir, "summary.json"), summary)
    log(f"peak RSS {summary['peak_rss_mb']:.0f} MB; wrote {os.path.join(out_dir, 'summary.json')}")
    log(f"\nreal-model demo finished in {summary['seconds']:.0f}s (CPU time {summary['cpu_seconds']:.0f}s with "
        f"{summary['blas_threads']} BLAS threads; load average {summary['load_average'][0]:.1f})")
    return summary


def _load(run, model, log):
    """(model with its frozen base quantized, its tokenizer, {path, times, load_rss, float_mb}); fetched if needed."""
    times = {}
    t = time.perf_counter()
    path = resolve_base(model)
    times["fetch"] = time.perf_counter() - t
    t = time.perf_counter()
    m, tok, _ = model_and_tokenizer(run, quant_bits=16)
    times["load"], load_rss = time.perf_counter() - t, _peak_rss_mb()
    float_mb = m.num_params() * m.dtype.itemsize / 2**20
    m.quantize_base(run.quant_bits, fmt=run.quant_format if run.quant_format != "gguf" else "absmax")
    c = m.config
    log(f"model: {path}\n  {m.num_params():,} parameters, {c.num_hidden_layers} layers, hidden {c.hidden_size}, "
        f"vocab {c.vocab_size}; loaded in {times['load']:.1f}s (fetch {times['fetch']:.1f}s), peak RSS "
        f"{load_rss:.0f} MB; weights {float_mb:.0f} MB float32, decoder linears now {run.quant_bits}-bit")
    log(f"tokenizer: {type(tok).__name__}, vocab {tok.vocab_size}, chat template: {bool(tok.chat_template)}")
    return m, tok, dict(path=path, times=times, load_rss=load_rss, float_mb=float_mb)


def _finetune(m, run, examples, adapter_dir, progress, log):
    """LoRA on m, trained on examples, saved (PEFT) before anything evaluates it: (summary, result, peak bytes)."""
    add_lora(m, LoraConfig(r=run.lora_r, lora_alpha=run.lora_alpha, target_modules=run.target_modules,
                           lora_dropout=run.lora_dropout, use_rslora=run.peft_use_rslora), seed=run.seed)
    s = trainable_summary(m)
    log(f"LoRA r={run.lora_r} on {', '.join(run.target_modules)}: {s['trainable']:,} trainable "
        f"({s['percent']:.3f}%); {len(examples) // run.batch_size} steps of {run.batch_size}, lr {run.learning_rate}")
    res, peak = measured_fit(m, examples, train_config(run), f"LoRA r={run.lora_r}", progress)
    log(f"trained in {res.seconds:.1f}s, loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f}")
    save_adapter(m, adapter_dir, base_model_name_or_path=run.base_model)
    log(f"adapter written to {adapter_dir}/ (PEFT format)")
    return s, res, peak


def merged_vs_unmerged(m, seqs) -> dict:
    """Logits of a float model with its adapter unmerged, then merged (m is merged after)."""
    n = min(len(s) for s in seqs)
    batch = np.asarray([s[:n] for s in seqs])                                     # (B, n)
    unmerged = m.forward(batch)                                                   # (B, n, V)
    merge_lora(m)
    diff = float(np.max(np.abs(m.forward(batch) - unmerged)))
    return dict(max_abs_diff=diff, rel_diff=diff / float(np.max(np.abs(unmerged))))


def format_results(run, s, acc0, acc, seconds, peak_mb) -> str:
    head = f"{'SmolLM2-135M-Instruct':<34} {'trainable':>10} {'%':>6} {'accuracy':>9} {'train s':>8} {'peak MB':>8}"
    return "\n".join([
        head, "-" * len(head),
        f"{'zero-shot (chat template)':<34} {0:>10,} {0:>6.2f} {100 * acc0:>8.1f}% {'-':>8} {'-':>8}",
        f"{f'LoRA r={run.lora_r} {run.quant_bits}-bit base':<34} {s['trainable']:>10,} {s['percent']:>6.2f} "
        f"{100 * acc:>8.1f}% {seconds:>8.1f} {peak_mb:>8.1f}",
        "peak MB: memory allocated during training (tracemalloc), the loaded weights excluded"])


def format_generations(rows, before, after, width=30) -> str:
    def cut(text):
        text = " ".join(text.split())
        return text if len(text) <= width else text[:width - 3] + "..."

    lines = [f"{'headline':<44} {'label':<9} {'before':<{width}} | after", "-" * (58 + 2 * width)]
    for r, b, a in zip(rows, before, after, strict=True):
        prompt, label = prompt_and_answer(r)
        lines.append(f"{cut(prompt.split(chr(10))[-1])[:44]:<44} {label:<9} {cut(b):<{width}} | {cut(a)}")
    return "\n".join(lines)
