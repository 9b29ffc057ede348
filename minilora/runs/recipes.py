"""Recipes: a FinLoRA run's base model, training settings and the whole `minilora train` run.

Used by the CLI, the demos, the analysis command, tests and notebooks (the library side of a run).
"""
from __future__ import annotations

import os

from minilora.adapters import LoraConfig, add_lora, format_trainable
from minilora.data import LABELS, ByteTokenizer, encode_example, load_jsonl
from minilora.inference.evaluate import choice_accuracy
from minilora.io import from_pretrained
from minilora.io.peft import save_adapter
from minilora.runs.finlora import FinLoraRun, get_run
from minilora.runs.registry import BASE_NAME, ROOT, base_dir, default_config_path, resolve_base  # noqa: F401
from minilora.training.loop import TrainConfig, fit


def train_config(run: FinLoraRun, lr=None) -> TrainConfig:
    return TrainConfig(learning_rate=lr or run.learning_rate, num_epochs=run.num_epochs,
                       batch_size=run.batch_size, gradient_accumulation_steps=run.gradient_accumulation_steps,
                       warmup_ratio=run.warmup_ratio, seed=run.seed)


def load_model(run: FinLoraRun, quant_bits=None):
    """The run's base, its frozen weights stored at quant_bits in the run's quant_format."""
    bits = run.quant_bits if quant_bits is None else quant_bits
    keep = run.quant_format == "gguf" and bits != 16
    model = from_pretrained(resolve_base(run.base_model), seed=run.seed, quant="gguf" if keep else None)
    if not keep:
        model.quantize_base(bits, fmt=run.quant_format)
    return model


def train_run(config_path, run_name, out_dir=None, progress=True, log=print, checkpoint_dir=None,
              checkpoint_every=0, resume_from=None):
    """`minilora train`: one FinLoRA run end to end; returns (model, test accuracy or None).

    checkpoint_dir / checkpoint_every / resume_from are passed to train.fit: checkpoints every N
    steps, at the end and on Ctrl-C; resume_from continues a run exactly where it stopped.
    """
    run = get_run(config_path, run_name)
    tok = ByteTokenizer()
    rows = load_jsonl(run.dataset_path)
    examples = [encode_example(r["context"], r["target"], tok) for r in rows]
    model = load_model(run)
    cfg = LoraConfig(r=run.lora_r, lora_alpha=run.lora_alpha, target_modules=run.target_modules,
                     lora_dropout=run.lora_dropout, use_rslora=run.peft_use_rslora)
    matched = add_lora(model, cfg, seed=run.seed)
    log(f"run {run.name}: {run.quant_bits}-bit base, targets matched {matched}")
    log(format_trainable(model))
    res = fit(model, examples, train_config(run), progress=progress, desc=run.name,
              checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume_from=resume_from)
    if res.resumed_from is not None:
        log(f"resumed from {resume_from} at step {res.resumed_from}")
    log(f"{res.steps} steps in {res.seconds:.1f}s, loss {res.losses[0]:.4f} -> {res.losses[-1]:.4f}")
    if res.checkpoint:
        log(f"checkpoint: {res.checkpoint}/")
    acc = None
    if run.test_dataset_path:
        acc = choice_accuracy(model, load_jsonl(run.test_dataset_path), tok, LABELS)
        log(f"test accuracy: {100 * acc:.1f}%")
    out = out_dir or os.path.join("out", run.name)
    save_adapter(model, out, base_model_name_or_path=run.base_model)
    log(f"adapter written to {out}/")
    return model, acc
