"""Data: the byte tokenizer, the financial-sentiment data set, JSONL, batching and label-choice evaluation."""
from minilora.data.batching import (
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
from minilora.data.hf_tokenizer import HFTokenizer, check_vocab, load_tokenizer
from minilora.data.jsonl import load_jsonl, write_jsonl
from minilora.data.sentiment import (
    INSTRUCTION,
    LABELS,
    format_answer,
    format_prompt,
    generate_sentiment,
    make_context,
    pretraining_corpus,
)
from minilora.data.tokenizer import ByteTokenizer

__all__ = ["IGNORE_INDEX", "accuracy", "classify", "collate", "encode_example", "iterate_batches",
           "label_choice_batches", "lm_batches", "num_batches", "permutation", "sequence_logprob",
           "load_jsonl", "write_jsonl", "INSTRUCTION", "LABELS", "format_answer", "format_prompt",
           "generate_sentiment", "make_context", "pretraining_corpus", "ByteTokenizer",
           "HFTokenizer", "check_vocab", "load_tokenizer"]
