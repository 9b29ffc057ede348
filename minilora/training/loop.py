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

import hashlib
import json
import math
import numbers
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field

from minilora.backend import asarray, backend_name, to_numpy
from minilora.data.batching import iterate_batches, num_batches
from minilora.errors import MiniLoraError, MiniLoraStateError
from minilora.io.destination import check_output_location
from minilora.training.checkpoint import checkpoint_rng, load_checkpoint, rng_restore, rng_snapshot, save_checkpoint
from minilora.training.optim import AdamW, clip_grad_norm, cosine_schedule


@dataclass
class TrainConfig:
    learning_rate: float = 1e-3           # peak learning rate
    num_epochs: int = 1                   # passes over the training examples
    batch_size: int = 8                   # examples per micro-batch
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    warmup_ratio: float = 0.1             # fraction of steps with linear warmup
    min_lr_ratio: float = 0.0             # the cosine decays to this fraction of the peak
    weight_decay: float = 0.0             # AdamW decoupled weight decay
    max_grad_norm: float = 1.0            # global gradient clipping (0: off)
    seed: int = 0                         # data order
    eval_every: int = 0                   # optimizer steps between evaluations (0: per epoch)

    def __post_init__(self):
        for name, low in (("num_epochs", 1), ("batch_size", 1), ("gradient_accumulation_steps", 1),
                          ("seed", 0), ("eval_every", 0)):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < low:
                raise MiniLoraError(f"TrainConfig.{name} must be an integer >= {low}, got {v!r}")
        for name, low, high, open_low in (("learning_rate", 0.0, math.inf, True),
                                          ("warmup_ratio", 0.0, 1.0, False), ("min_lr_ratio", 0.0, 1.0, False),
                                          ("weight_decay", 0.0, math.inf, False),
                                          ("max_grad_norm", 0.0, math.inf, False)):
            v = getattr(self, name)
            ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) \
                and (v > low if open_low else v >= low) and v <= high
            if not ok:
                span = f"> {low:g}" if open_low else (f"in [{low:g}, {high:g}]" if high < math.inf
                                                       else f">= {low:g}")
                raise MiniLoraError(f"TrainConfig.{name} must be a finite number {span}, got {v!r}")


@dataclass
class TrainResult:
    losses: list = field(default_factory=list)       # mean loss of each optimizer step
    evals: list = field(default_factory=list)        # (step, metric dict)
    steps: int = 0
    seconds: float = 0.0
    checkpoint: str | None = None                    # the last checkpoint written (or resumed from)
    resumed_from: int | None = None                  # the step a resumed run started at


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during fit, raised after the resumable checkpoint (if any) was written.

    .checkpoint: its folder (None without checkpoint_dir); .step: optimizer steps it holds.
    """

    def __init__(self, message: str, checkpoint=None, step: int = 0):
        super().__init__(message)
        self.checkpoint, self.step = checkpoint, step


def total_steps(n_examples: int, cfg: TrainConfig) -> int:
    per_epoch = math.ceil(num_batches(n_examples, cfg.batch_size) / cfg.gradient_accumulation_steps)
    return per_epoch * cfg.num_epochs


# settings that do not change the trajectory may differ between a run and its resume
_FREE_FIELDS = ("eval_every",)


def _data_sha256(examples) -> str:
    """A fingerprint of the training examples (token ids and labels, in order)."""
    h = hashlib.sha256()
    for ids, labels in examples:
        h.update(len(ids).to_bytes(8, "little"))
        h.update(json.dumps([list(map(int, ids)), list(map(int, labels))]).encode())
    return h.hexdigest()


def _identity(model, examples, cfg: TrainConfig) -> dict:
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


def _check_resume(state: dict, ident: dict, where):
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


def _restore(model, opt: AdamW, ckpt, where):
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


def _quiet_overflow(model):
    """NumPy's overflow / invalid-value warnings off (the loss check reports a non-finite step)."""
    if backend_name(model.xp) == "numpy":
        return model.xp.errstate(over="ignore", invalid="ignore", divide="ignore")
    return nullcontext()


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
               _identity(model, examples, cfg) if (checkpoint_dir or resume_from) else None)
    if resume_from is not None:
        _resume(run, resume_from)
    run.rng_snap = rng_snapshot(model.rng) if checkpoint_dir else None   # the generator at `pos`
    return run


def _resume(run: _Run, resume_from):
    """Check a checkpoint against this run, then restore weights, moments, generator and position."""
    ckpt, cfg, result = load_checkpoint(resume_from), run.cfg, run.result
    _check_resume(ckpt.state, run.ident, resume_from)
    pos = (ckpt.state["epoch"], ckpt.state["batch"])
    if pos[0] > cfg.num_epochs or pos[1] >= run.n_micro_epoch or pos[1] % cfg.gradient_accumulation_steps \
            or (pos[0] == cfg.num_epochs and pos[1]) or ckpt.state["step"] != len(ckpt.state["losses"]):
        raise MiniLoraError(f"{resume_from}: inconsistent checkpoint position "
                            f"(step {ckpt.state['step']}, epoch {pos[0]}, batch {pos[1]})")
    _check_counters(ckpt.state, run, pos, resume_from)
    _restore(run.model, run.opt, ckpt, resume_from)
    run.pos = pos
    result.losses = [float(x) for x in ckpt.state["losses"]]
    result.evals = [(int(s), e) for s, e in ckpt.state.get("evals", [])]
    result.steps = result.resumed_from = ckpt.state["step"]
    result.checkpoint = str(resume_from)


def _check_counters(state: dict, run: _Run, pos, where):
    """The step counters of a checkpoint agree with each other and with its data position."""
    per_epoch = math.ceil(run.n_micro_epoch / run.cfg.gradient_accumulation_steps)
    want = pos[0] * per_epoch + pos[1] // run.cfg.gradient_accumulation_steps
    counters = {"step": state["step"], "optimizer_step": state["optimizer_step"],
                "schedule_step": state.get("schedule_step", want), "total_steps": state.get("total_steps", run.n_total)}
    for key, value in counters.items():
        expected = run.n_total if key == "total_steps" else want
        if value != expected:
            raise MiniLoraError(f"{where}: inconsistent checkpoint: {key} is {value!r}, but epoch {pos[0]}, batch "
                                f"{pos[1]} means {expected} (the state was edited or is corrupt)")


def _micro_batch(run: _Run, ids, labels, epoch: int, k: int) -> bool:
    """Forward and backward of one micro-batch into run.accum; True when an optimizer step is due."""
    model = run.model
    with _quiet_overflow(model):                         # a NaN run: one error below, not 40 warnings
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
    with _quiet_overflow(run.model):
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

