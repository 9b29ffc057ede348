"""The training loop: AdamW over the trainable names, accumulation, warmup + cosine, clipping,
checkpoints and exact resume.

One optimizer step averages the gradients of `gradient_accumulation_steps` micro-batches (each
micro-batch loss is a mean over its tokens, as in transformers' Trainer). The host reads the
loss once per micro-batch (`float(loss)`) for the log and the non-finite check.

Faults:
- A non-finite loss or gradient norm stops the run with MiniLoraError before the optimizer step,
  so the weights in memory are those of the last good step and the last checkpoint on disk is
  never overwritten (minilora.training.checkpoint also refuses to write non-finite arrays).
- Ctrl-C (KeyboardInterrupt) saves a resumable checkpoint of the last completed optimizer step
  to checkpoint_dir and re-raises as TrainingInterrupted (a KeyboardInterrupt). A Ctrl-C that
  arrives during an optimizer update or a save is held until it ends, so neither is torn.
- fit(..., resume_from=dir) restores the trainable weights, AdamW moments and step, the schedule
  step, the data position (epoch, batch) and the dropout generator's state, and continues the
  same trajectory bit for bit (tests/test_resume.py). On a GPU this holds for LoRA on the same GPU
  model; full fine-tuning's embedding gradient adds with float atomics (docs/backend.md, Determinism).
"""
from __future__ import annotations

import math
import numbers
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from minilora.backend import asarray, quiet_overflow, to_numpy
from minilora.data.batching import iterate_batches, num_batches
from minilora.errors import MiniLoraError, MiniLoraStateError
from minilora.io.destination import check_output_location
from minilora.training.checkpoint import load_checkpoint, rng_snapshot, save_checkpoint
from minilora.training.config import TrainConfig, TrainingInterrupted, TrainResult, total_steps
from minilora.training.optim import AdamW, clip_grad_norm, cosine_schedule
from minilora.training.resume import check_counters, check_resume, restore, run_identity


# settings that do not change the trajectory may differ between a run and its resume
@contextmanager
def _hold_interrupt():
    """Hold Ctrl-C until the block ends (main thread only), so an update or save is never torn."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    old = signal.signal(signal.SIGINT, lambda sig, frame: pending.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old if old is not None else signal.default_int_handler)
    if pending and callable(old):
        old(signal.SIGINT, pending[0])
    elif pending and old is None:
        raise KeyboardInterrupt


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, bool, int, float)) or obj is None:
        return obj
    try:
        return float(to_numpy(obj))
    except (TypeError, ValueError):
        return str(obj)


@dataclass
class _Run:
    """The state of one fit() call that its steps share (the loop's variables, named)."""
    model: object
    examples: list
    cfg: TrainConfig
    opt: AdamW
    checkpoint_dir: object
    n_total: int                              # optimizer steps of the whole run
    n_micro_epoch: int                        # micro-batches per epoch
    warmup: int                               # warmup steps of the schedule
    ident: dict | None                        # what a checkpoint must agree with
    result: TrainResult = field(default_factory=TrainResult)
    pos: tuple = (0, 0)                       # (epoch, batch) where the next optimizer step starts
    rng_snap: object = None                   # the dropout generator's state at `pos`
    accum: dict = field(default_factory=dict)  # gradients summed over the micro-batches so far
    micro: int = 0                            # micro-batches in accum
    acc_loss: float = 0.0                     # their summed losses


def fit(model, examples, cfg: TrainConfig, eval_fn=None, progress: bool = True, desc: str = "train",
        checkpoint_dir=None, checkpoint_every: int = 0, resume_from=None):
    """Train model.trainable on examples [(ids, labels), ...]. Returns a TrainResult.

    eval_fn(model) -> dict is called every cfg.eval_every steps and at the end of each epoch.
    checkpoint_dir: where checkpoints go (replaced atomically each time): every checkpoint_every
    optimizer steps (0: none on a schedule), at the end, and on Ctrl-C. resume_from: a checkpoint
    folder to continue from; the model (same config, adapter and trainable set), examples and cfg
    must be those of the run that wrote it. A non-finite loss or gradient norm stops the run with
    MiniLoraError and keeps the last good checkpoint. Ctrl-C raises TrainingInterrupted after saving.

    The steps, in order: _check_args, _prepare (and _resume), then per micro-batch _micro_batch and,
    every gradient_accumulation_steps of them, _optimizer_step; _save writes a checkpoint;
    _interrupted turns Ctrl-C into a saved, resumable stop.
    """
    _check_args(model, examples, cfg, checkpoint_dir, checkpoint_every)
    run = _prepare(model, examples, cfg, checkpoint_dir, resume_from)
    result, bar = run.result, _progress(run.n_total, desc, progress)
    bar.update(result.steps)
    t0 = time.perf_counter()
    try:
        for epoch in range(run.pos[0], cfg.num_epochs):
            start = run.pos[1] if epoch == run.pos[0] else 0
            batches = iterate_batches(examples, cfg.batch_size, cfg.seed, epoch, start_batch=start)
            for k, (ids, labels) in enumerate(batches, start=start):
                last_in_epoch = k == run.n_micro_epoch - 1
                if not _micro_batch(run, ids, labels, epoch, k) and not last_in_epoch:
                    continue                      # accumulate: no optimizer step yet
                _optimizer_step(run, epoch, k, last_in_epoch)
                bar.update(1)
                bar.set_postfix(loss=f"{result.losses[-1]:.4f}", refresh=False)
                if checkpoint_every and result.steps % checkpoint_every == 0:
                    _save(run)
                if eval_fn and cfg.eval_every and result.steps % cfg.eval_every == 0:
                    result.evals.append((result.steps, eval_fn(model)))
            if eval_fn and not cfg.eval_every:
                result.evals.append((result.steps, eval_fn(model)))
        if checkpoint_dir:
            _save(run)
    except KeyboardInterrupt as e:
        bar.close()
        _interrupted(run, e)
    bar.close()
    result.seconds = time.perf_counter() - t0
    return result


def _check_args(model, examples, cfg, checkpoint_dir, checkpoint_every):
    """One clear error for arguments or a model state that fit() cannot train."""
    if not isinstance(cfg, TrainConfig):
        raise MiniLoraError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if not examples:
        raise MiniLoraError("the training set is empty")
    if not model.trainable:
        raise MiniLoraStateError("nothing to train: add an adapter or enable full fine-tuning")
    if model.adapters.merged:
        raise MiniLoraStateError("cannot train while adapters are merged; unmerge first")
    if not isinstance(checkpoint_every, numbers.Integral) or isinstance(checkpoint_every, bool) \
            or checkpoint_every < 0:
        raise MiniLoraError(f"checkpoint_every must be an integer >= 0, got {checkpoint_every!r}")
    if checkpoint_every and checkpoint_dir is None:
        raise MiniLoraError("checkpoint_every needs a checkpoint_dir")
    if checkpoint_dir is not None:                       # before training, not at the first save
        check_output_location(checkpoint_dir, "checkpoint", what=f"checkpoint folder {checkpoint_dir}")


def _prepare(model, examples, cfg, checkpoint_dir, resume_from) -> _Run:
    """The optimizer, the step counts and, with resume_from, everything a checkpoint restores."""
    n_total = total_steps(len(examples), cfg)
    run = _Run(model, examples, cfg, AdamW(lr=cfg.learning_rate, weight_decay=cfg.weight_decay), checkpoint_dir,
               n_total, num_batches(len(examples), cfg.batch_size), int(cfg.warmup_ratio * n_total),
               run_identity(model, examples, cfg) if (checkpoint_dir or resume_from) else None)
    if resume_from is not None:
        _resume(run, resume_from)
    run.rng_snap = rng_snapshot(model.rng) if checkpoint_dir else None   # the generator at `pos`
    return run


def _resume(run: _Run, resume_from):
    """Check a checkpoint against this run, then restore weights, moments, generator and position."""
    ckpt, cfg, result = load_checkpoint(resume_from), run.cfg, run.result
    check_resume(ckpt.state, run.ident, resume_from)
    pos = (ckpt.state["epoch"], ckpt.state["batch"])
    if pos[0] > cfg.num_epochs or pos[1] >= run.n_micro_epoch or pos[1] % cfg.gradient_accumulation_steps \
            or (pos[0] == cfg.num_epochs and pos[1]) or ckpt.state["step"] != len(ckpt.state["losses"]):
        raise MiniLoraError(f"{resume_from}: inconsistent checkpoint position "
                            f"(step {ckpt.state['step']}, epoch {pos[0]}, batch {pos[1]})")
    check_counters(ckpt.state, pos, run.n_micro_epoch, run.n_total, cfg.gradient_accumulation_steps, resume_from)
    restore(run.model, run.opt, ckpt, resume_from)
    run.pos = pos
    result.losses = [float(x) for x in ckpt.state["losses"]]
    result.evals = [(int(s), e) for s, e in ckpt.state.get("evals", [])]
    result.steps = result.resumed_from = ckpt.state["step"]
    result.checkpoint = str(resume_from)


def _micro_batch(run: _Run, ids, labels, epoch: int, k: int) -> bool:
    """Forward and backward of one micro-batch into run.accum; True when an optimizer step is due."""
    model = run.model
    with _quiet(model):                         # a NaN run: one error below, not 40 warnings
        loss, grads = model.loss_and_grads(asarray(ids, model.xp), asarray(labels, model.xp))
    lv = float(loss)                                     # the one host read per micro-batch
    if not math.isfinite(lv):
        raise MiniLoraError(_fault(f"non-finite loss ({lv})", run.result, epoch, k, run.checkpoint_dir))
    for name, g in grads.items():
        run.accum[name] = run.accum[name] + g if name in run.accum else g
    run.micro += 1
    run.acc_loss += lv
    return run.micro >= run.cfg.gradient_accumulation_steps


def _optimizer_step(run: _Run, epoch: int, k: int, last_in_epoch: bool):
    """Average the accumulated gradients, clip, take one AdamW step at the schedule's lr."""
    cfg, result = run.cfg, run.result
    for g in run.accum.values():
        g *= 1.0 / run.micro
    with _quiet(run.model):
        norm = clip_grad_norm(run.accum, cfg.max_grad_norm)
    if not math.isfinite(norm):
        raise MiniLoraError(_fault(f"non-finite gradient norm ({norm})", result, epoch, k, run.checkpoint_dir))
    lr = cfg.learning_rate * cosine_schedule(result.steps, run.n_total, run.warmup, cfg.min_lr_ratio)
    with _hold_interrupt():                              # the update and its bookkeeping: all or nothing
        run.opt.step(run.model.params, run.accum, lr=lr)
        result.losses.append(run.acc_loss / run.micro)
        result.steps += 1
        run.accum, run.micro, run.acc_loss = {}, 0, 0.0
        run.pos = (epoch + 1, 0) if last_in_epoch else (epoch, k + 1)
        if run.checkpoint_dir:
            run.rng_snap = rng_snapshot(run.model.rng)


def _save(run: _Run):
    """A resumable checkpoint of the last completed optimizer step (Ctrl-C held while writing)."""
    result, model = run.result, run.model
    state = dict(step=result.steps, optimizer_step=run.opt.step_count, schedule_step=result.steps,
                 total_steps=run.n_total, epoch=run.pos[0], batch=run.pos[1], losses=result.losses,
                 evals=_jsonable(result.evals), **run.ident)
    with _hold_interrupt():
        save_checkpoint(run.checkpoint_dir, {n: model.params[n] for n in sorted(model.trainable)},
                        run.opt.state_dict(), state, run.rng_snap)
    result.checkpoint = str(run.checkpoint_dir)


def _interrupted(run: _Run, e: KeyboardInterrupt):
    """Ctrl-C: save the last completed step (when there is a checkpoint folder), then stop."""
    steps, n_total, folder = run.result.steps, run.n_total, run.checkpoint_dir
    if isinstance(e, TrainingInterrupted):
        raise e
    if folder is None:
        raise TrainingInterrupted(f"training stopped at step {steps} of {n_total}; no checkpoint "
                                  "was saved (no checkpoint directory)", None, steps) from None
    _save(run)
    raise TrainingInterrupted(f"training stopped at step {steps} of {n_total}; resumable "
                              f"checkpoint saved to {folder}", str(folder), steps) from None


def _quiet(model):
    """NumPy's overflow / invalid-value warnings off (the loss check reports a non-finite step)."""
    return quiet_overflow(model.xp, over="ignore", invalid="ignore", divide="ignore")


def _fault(what: str, result: TrainResult, epoch: int, batch: int, checkpoint_dir) -> str:
    where = f"{what} at step {result.steps + 1} (epoch {epoch}, batch {batch}); stopping"
    if result.checkpoint is not None:
        return f"{where}; the last good checkpoint is kept in {result.checkpoint}"
    if checkpoint_dir is not None:
        return f"{where}; no checkpoint had been written yet"
    return where


class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def _progress(total, desc, enabled):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)

