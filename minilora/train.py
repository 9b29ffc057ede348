"""The training loop: AdamW over the trainable names, accumulation, warmup + cosine, clipping.

One optimizer step averages the gradients of `gradient_accumulation_steps` micro-batches (each
micro-batch loss is a mean over its tokens, as in transformers' Trainer). The host reads the
loss once per micro-batch (`float(loss)`) for the log and the non-finite check.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from .backend import asarray
from .data.batching import collate, iterate_batches, num_batches, sequence_logprob
from .errors import MiniLoraError
from .optim import AdamW, clip_grad_norm, cosine_schedule


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


@dataclass
class TrainResult:
    losses: list = field(default_factory=list)       # mean loss of each optimizer step
    evals: list = field(default_factory=list)        # (step, metric dict)
    steps: int = 0
    seconds: float = 0.0


def total_steps(n_examples: int, cfg: TrainConfig) -> int:
    per_epoch = math.ceil(num_batches(n_examples, cfg.batch_size) / cfg.gradient_accumulation_steps)
    return per_epoch * cfg.num_epochs


def fit(model, examples, cfg: TrainConfig, eval_fn=None, progress: bool = True, desc: str = "train"):
    """Train model.trainable on examples [(ids, labels), ...]. Returns a TrainResult.

    eval_fn(model) -> dict is called every cfg.eval_every steps and at the end of each epoch.
    A non-finite loss or gradient norm stops the run with MiniLoraError.
    """
    if not examples:
        raise MiniLoraError("the training set is empty")
    if not model.trainable:
        raise MiniLoraError("nothing to train: add an adapter or enable full fine-tuning")
    if model.merged:
        raise MiniLoraError("cannot train while adapters are merged; unmerge first")
    opt = AdamW(lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    n_total = total_steps(len(examples), cfg)
    warmup = int(cfg.warmup_ratio * n_total)
    result = TrainResult()
    bar = _progress(n_total, desc, progress)
    t0 = time.perf_counter()
    accum, micro, acc_loss = {}, 0, 0.0
    n_micro_epoch = num_batches(len(examples), cfg.batch_size)
    for epoch in range(cfg.num_epochs):
        for k, (ids, labels) in enumerate(iterate_batches(examples, cfg.batch_size, cfg.seed, epoch)):
            loss, grads = model.loss_and_grads(asarray(ids, model.xp), asarray(labels, model.xp))
            lv = float(loss)
            if not math.isfinite(lv):
                raise MiniLoraError(f"non-finite loss ({lv}) at step {result.steps}, epoch {epoch}; stopping")
            for name, g in grads.items():
                accum[name] = accum[name] + g if name in accum else g
            micro += 1
            acc_loss += lv
            last_in_epoch = k == n_micro_epoch - 1
            if micro < cfg.gradient_accumulation_steps and not last_in_epoch:
                continue
            for g in accum.values():
                g *= 1.0 / micro
            norm = clip_grad_norm(accum, cfg.max_grad_norm)
            if not math.isfinite(norm):
                raise MiniLoraError(f"non-finite gradient norm at step {result.steps}; stopping")
            lr = cfg.learning_rate * cosine_schedule(result.steps, n_total, warmup, cfg.min_lr_ratio)
            opt.step(model.params, accum, lr=lr)
            result.losses.append(acc_loss / micro)
            result.steps += 1
            accum, micro, acc_loss = {}, 0, 0.0
            bar.update(1)
            bar.set_postfix(loss=f"{result.losses[-1]:.4f}", refresh=False)
            if eval_fn and cfg.eval_every and result.steps % cfg.eval_every == 0:
                result.evals.append((result.steps, eval_fn(model)))
        if eval_fn and not cfg.eval_every:
            result.evals.append((result.steps, eval_fn(model)))
    bar.close()
    result.seconds = time.perf_counter() - t0
    return result


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


def choice_accuracy(model, rows, tokenizer, labels, max_len: int = 128, chunk: int = 96):
    """Accuracy of picking, per row, the label whose answer tokens the model finds most likely.

    All candidates of all rows are scored in batches of `chunk` sequences (one forward each).
    """
    from .data.batching import encode_example

    seqs = [encode_example(r["context"], lab, tokenizer, max_len) for r in rows for lab in labels]
    scores = []
    for s in range(0, len(seqs), chunk):
        ids, lab = collate(seqs[s:s + chunk], tokenizer.pad_token_id)
        ids, lab = asarray(ids, model.xp), asarray(lab, model.xp)
        scores.extend(float(x) for x in sequence_logprob(model.forward(ids), lab))
    k = len(labels)
    hits = 0
    for i, r in enumerate(rows):
        row_scores = scores[i * k:(i + 1) * k]
        hits += labels[max(range(k), key=row_scores.__getitem__)] == r["target"]
    return hits / len(rows)


