"""Exact resume: what a checkpoint must agree with, and putting its state back into a run.

A checkpoint records the run's identity (training settings, model config, dtype, LoRA settings,
trainable shapes, how the base is stored, a fingerprint of the examples); resuming checks each
against this run, checks the step counters against the data position, and only then restores
the trainable weights, the AdamW moments and the dropout generator.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict

from minilora.backend import asarray
from minilora.errors import MiniLoraError
from minilora.training.checkpoint import checkpoint_rng, rng_restore
from minilora.training.config import TrainConfig
from minilora.training.optim import AdamW

# settings that do not change the trajectory may differ between a run and its resume
_FREE_FIELDS = ("eval_every",)


def _data_sha256(examples) -> str:
    """A fingerprint of the training examples (token ids and labels, in order)."""
    h = hashlib.sha256()
    for ids, labels in examples:
        h.update(len(ids).to_bytes(8, "little"))
        h.update(json.dumps([list(map(int, ids)), list(map(int, labels))]).encode())
    return h.hexdigest()


def run_identity(model, examples, cfg: TrainConfig) -> dict:
    """What a checkpoint must agree with to be resumed by this run (JSON-normalised)."""
    ident = dict(
        train_config={k: v for k, v in asdict(cfg).items() if k not in _FREE_FIELDS},
        model_config=model.config.to_dict(),
        dtype=str(model.dtype),
        lora={m: [lm.r, lm.alpha, lm.scale, lm.dropout] for m, lm in sorted(model.adapters.modules.items())},
        trainable={n: list(model.params[n].shape) for n in sorted(model.trainable)},
        quantized=sorted(model.quantized),
        quant_formats=_quant_formats(model),
        n_examples=len(examples),
        data_sha256=_data_sha256(examples),
    )
    return json.loads(json.dumps(ident))


def _quant_formats(model) -> list:
    """The formats the frozen base is stored in (minilora.quant.formats), sorted."""
    if not model.quantized:
        return []
    from minilora.quant import format_of

    return sorted({format_of(qt) for qt in model.quantized.values()})


def check_resume(state: dict, ident: dict, where):
    for key, want in ident.items():
        have = state.get(key)
        if key == "quant_formats" and have is None:       # checkpoints from before formats: absmax only
            have = ["absmax"] if state.get("quantized") else []
        if key == "train_config" and isinstance(have, dict):
            for k, v in want.items():
                if have.get(k) != v:
                    raise MiniLoraError(f"{where}: checkpoint was made with {k}={have.get(k)!r}, this run has "
                                        f"{k}={v!r}; resume with the same training settings")
            continue
        if have != want:
            what = {"model_config": "a different model config", "dtype": f"dtype {have}, this model is {want}",
                    "lora": "different LoRA settings (modules, r, alpha or dropout)",
                    "trainable": "a different set of trainable parameters or shapes",
                    "quantized": "a differently quantized base",
                    "quant_formats": f"a base stored as {have}, this one is stored as {want}",
                    "n_examples": f"{have} training examples, this run has {want}",
                    "data_sha256": "different training examples"}[key]
            raise MiniLoraError(f"{where}: checkpoint was made for {what}; cannot resume exactly")


def restore(model, opt: AdamW, ckpt, where):
    """Put the checkpoint's weights, moments and generator state into model and opt."""
    for name in model.trainable:
        arr = ckpt.params.get(name)
        if arr is None:
            raise MiniLoraError(f"{where}: checkpoint lacks trainable parameter {name}")
        have = model.params[name]
        if tuple(arr.shape) != tuple(have.shape) or arr.dtype != have.dtype:
            raise MiniLoraError(f"{where}: {name} is {arr.dtype}{tuple(arr.shape)} in the checkpoint, "
                                f"the model needs {have.dtype}{tuple(have.shape)}")
    extra = sorted(set(ckpt.params) - set(model.trainable))
    if extra:
        raise MiniLoraError(f"{where}: checkpoint holds {extra[0]}, which this model does not train")
    moments = {}
    for key, arr in ckpt.optimizer.items():
        name = key[2:]
        if key[:2] not in ("m.", "v.") or name not in model.trainable \
                or tuple(arr.shape) != tuple(model.params[name].shape):
            raise MiniLoraError(f"{where}: unexpected optimizer entry {key} {tuple(arr.shape)}")
        moments[key] = asarray(arr, model.xp)
    if ckpt.state["optimizer_step"] and len(moments) != 2 * len(model.trainable):
        raise MiniLoraError(f"{where}: optimizer moments are missing for some trainable parameters")
    snap = checkpoint_rng(ckpt)
    if snap is not None:
        rng_restore(model.rng, snap)          # first: it is the last check that can fail
    for name in model.trainable:
        model.params[name] = asarray(ckpt.params[name], model.xp).copy()
    opt.load_state_dict(moments, step_count=ckpt.state["optimizer_step"])


def check_counters(state: dict, pos, n_micro_epoch: int, n_total: int, accumulation: int, where):
    """The step counters of a checkpoint agree with each other and with its data position."""
    per_epoch = math.ceil(n_micro_epoch / accumulation)
    want = pos[0] * per_epoch + pos[1] // accumulation
    counters = {"step": state["step"], "optimizer_step": state["optimizer_step"],
                "schedule_step": state.get("schedule_step", want), "total_steps": state.get("total_steps", n_total)}
    for key, value in counters.items():
        expected = n_total if key == "total_steps" else want
        if value != expected:
            raise MiniLoraError(f"{where}: inconsistent checkpoint: {key} is {value!r}, but epoch {pos[0]}, batch "
                                f"{pos[1]} means {expected} (the state was edited or is corrupt)")
