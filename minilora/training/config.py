"""What a training run is told (TrainConfig) and what it gives back (TrainResult, TrainingInterrupted)."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from minilora.data.batching import num_batches
from minilora.errors import MiniLoraError


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
