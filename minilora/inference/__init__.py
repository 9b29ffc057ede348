"""Inference: KV-cache generation and sampling; label-choice evaluation."""
from minilora.inference.evaluate import choice_accuracy, choice_scores
from minilora.inference.generate import KVCache, filter_logits, forward_cached, generate, sample_next

__all__ = ["choice_accuracy", "choice_scores", "KVCache", "filter_logits", "forward_cached", "generate",
           "sample_next"]
