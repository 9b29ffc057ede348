"""Data: the byte tokenizer, the financial-sentiment data set, JSONL, batching and label-choice evaluation."""
from .batching import (
    IGNORE_INDEX,
    accuracy,
    classify,
    collate,
    encode_example,
    iterate_batches,
    label_choice_batches,
    lm_batches,
    num_batches,
    permutation,
    sequence_logprob,
)
from .hf_tokenizer import HFTokenizer, check_vocab, load_tokenizer
from .jsonl import load_jsonl, write_jsonl
from .sentiment import (
    INSTRUCTION,
    LABELS,
    format_answer,
    format_prompt,
    generate_sentiment,
    make_context,
    pretraining_corpus,
)
from .tokenizer import ByteTokenizer

__all__ = ["IGNORE_INDEX", "accuracy", "classify", "collate", "encode_example", "iterate_batches",
           "label_choice_batches", "lm_batches", "num_batches", "permutation", "sequence_logprob",
           "load_jsonl", "write_jsonl", "INSTRUCTION", "LABELS", "format_answer", "format_prompt",
           "generate_sentiment", "make_context", "pretraining_corpus", "ByteTokenizer",
           "HFTokenizer", "check_vocab", "load_tokenizer"]
