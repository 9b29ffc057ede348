"""Training: AdamW over the trainable names, the loop (accumulation, schedule, clipping), checkpoints
and exact resume."""
from minilora.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from minilora.training.config import TrainConfig, TrainingInterrupted, TrainResult, total_steps
from minilora.training.loop import fit
from minilora.training.optim import AdamW, clip_grad_norm, cosine_schedule

__all__ = ["Checkpoint", "load_checkpoint", "save_checkpoint", "TrainConfig", "TrainingInterrupted",
           "TrainResult", "fit", "total_steps", "AdamW", "clip_grad_norm", "cosine_schedule"]
