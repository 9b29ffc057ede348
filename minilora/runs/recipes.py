"""Recipes: a FinLoRA run's base model, training settings and the whole `minilora train` run.

Used by the CLI, the demos, the analysis command, tests and notebooks (the library side of a run).
"""
from __future__ import annotations

import os

from minilora.adapters import LoraConfig, add_lora, format_trainable
from minilora.data.formats import CHOICE_FORMATS, candidate_labels, encode_records, load_records
from minilora.data.hf_tokenizer import load_tokenizer
from minilora.inference.evaluate import choice_accuracy
from minilora.io import from_pretrained
from minilora.io.destination import check_output_location
from minilora.io.peft import save_adapter
from minilora.runs.finlora import FinLoraRun, get_run
from minilora.runs.registry import BASE_NAME, ROOT, base_dir, default_config_path, resolve_base  # noqa: F401
from minilora.training.config import TrainConfig
from minilora.training.loop import fit


def train_config(run: FinLoraRun, lr=None) -> TrainConfig:
    return TrainConfig(learning_rate=lr or run.learning_rate, num_epochs=run.num_epochs,
                       batch_size=run.batch_size, gradient_accumulation_steps=run.gradient_accumulation_steps,
                       warmup_ratio=run.warmup_ratio, seed=run.seed)


def load_model(run: FinLoraRun, quant_bits=None, path=None):
    """The run's base model (path: its resolved file or folder, default resolve_base(run.base_model)),
    its frozen decoder linears stored at quant_bits (default the run's) in the run's quant_format."""
    bits = run.quant_bits if quant_bits is None else quant_bits
    keep = run.quant_format == "gguf" and bits != 16
    model = from_pretrained(path or resolve_base(run.base_model), seed=run.seed, quant="gguf" if keep else None)
    if not keep:
        model.quantize_base(bits, fmt=run.quant_format)
    return model


def check_inputs(run: FinLoraRun, out_dirs=()) -> tuple:
    """Every input a run needs, checked before any model is loaded: the training rows (any format of
    minilora.data.formats), the test rows (context/target or prompt/completion: label choice), and
    that each of out_dirs [(what, path, kind)] may be written (minilora.io.destination's rule).
    Returns (train rows, test rows or None)."""
    train_rows, _ = load_records(run.dataset_path)
    test_rows = None
    if run.test_dataset_path:
        test_rows, _ = load_records(run.test_dataset_path, formats=CHOICE_FORMATS)
    for what, d, kind in out_dirs:
        if d:
            check_output_location(d, kind, what=f"{what} {d}")
    return train_rows, test_rows


def model_and_tokenizer(run: FinLoraRun, quant_bits=None):
    """(model, its own tokenizer, resolved path): a registry name is fetched when missing; a model whose
    vocabulary has no usable tokenizer is a MiniLoraError (never the byte tokenizer for a real vocab)."""
    path = resolve_base(run.base_model)
    model = load_model(run, quant_bits, path)
    return model, load_tokenizer(path, model.config), path


def train_run(config_path, run_name, out_dir=None, progress=True, log=print, checkpoint_dir=None,
              checkpoint_every=0, resume_from=None):
    """`minilora train`: one FinLoRA run end to end; returns (model, test accuracy or None).

    Order: every input checked (data files, test file, output and checkpoint folders writable), the
    model and its own tokenizer loaded, every example tokenized, then training; the adapter is saved
    before the evaluation, so a failing evaluation never costs the trained adapter.
    checkpoint_dir / checkpoint_every / resume_from are passed to train.fit: checkpoints every N
    steps, at the end and on Ctrl-C; resume_from continues a run exactly where it stopped.
    """
    run = get_run(config_path, run_name)
    out = out_dir or os.path.join("out", run.name)
    rows, test_rows = check_inputs(run, [("output folder", out, "adapter"),
                                         ("checkpoint folder", checkpoint_dir, "checkpoint")])
    model, tok, _ = model_and_tokenizer(run)
    max_len = model.config.max_position_embeddings
    examples = encode_records(rows, tok, max_len, run.train_on_inputs, where=run.dataset_path)
    labels = candidate_labels(test_rows) if test_rows else None
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
    save_adapter(model, out, base_model_name_or_path=run.base_model)
    log(f"adapter written to {out}/")
    acc = None
    if test_rows:
        acc = choice_accuracy(model, test_rows, tok, labels, max_len)
        log(f"test accuracy: {100 * acc:.1f}%")
    return model, acc
