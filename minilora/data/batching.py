"""From rows and texts to (input_ids, labels) int64 batches, and the label-choice evaluation.

Labels follow transformers' LlamaForCausalLM: they are aligned with input_ids and the model
shifts them inside, so labels[t] is the target of the prediction made at position t-1, and -100
marks a position that is not a target.

    ids    = [bos] + prompt + answer + [eos]        prompt = format_prompt(context)
    labels = [-100] * (1 + len(prompt)) + answer + [eos]     answer = format_answer(target)

Batches are right-padded with pad_id (labels -100). Under a causal mask, padding on the right
never changes the logits of the real positions, so no attention mask is needed.

Examples that do not fit max_len raise MiniLoraError rather than being truncated: cutting a
headline could drop the "not" or "but misses" that decides its label, silently making the
label wrong. The generated data set always fits 128 tokens (see sentiment.py).

Order is reproducible: epoch e of a run with seed s visits examples in permutation(n, s, e),
so a run resumed at (epoch, start_batch) sees exactly the batches it would have seen.
"""
from __future__ import annotations

import numpy as np

from minilora.backend import array_module, asarray, to_numpy
from minilora.data.sentiment import LABELS, format_answer, format_prompt
from minilora.data.tokenizer import PAD_ID
from minilora.errors import MiniLoraError

IGNORE_INDEX = -100


def _check_positive_int(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise MiniLoraError(f"{name} must be a positive int, got {value!r}")


def encode_example(context: str, target: str, tokenizer, max_len: int = 128):
    """(ids, labels), two lists of equal length <= max_len; labels are -100 exactly on bos + prompt."""
    _check_positive_int("max_len", max_len)
    prompt = tokenizer.encode(format_prompt(context), add_bos=True, add_eos=False)
    answer = tokenizer.encode(format_answer(target), add_bos=False, add_eos=True)
    ids = prompt + answer
    if len(ids) > max_len:
        raise MiniLoraError(
            f"example is {len(ids)} tokens (prompt {len(prompt)}, answer {len(answer)}), "
            f"longer than max_len={max_len}; shorten the context")
    return ids, [IGNORE_INDEX] * len(prompt) + answer


def collate(examples, pad_id: int = PAD_ID):
    """[(ids, labels), ...] -> (input_ids (B, T), labels (B, T)) int64, right-padded to the longest."""
    examples = list(examples)
    if not examples:
        raise MiniLoraError("collate needs at least one example")
    for i, (ids, labels) in enumerate(examples):
        if len(ids) != len(labels) or not len(ids):
            raise MiniLoraError(f"example {i}: ids ({len(ids)}) and labels ({len(labels)}) "
                                "must have the same non-zero length")
    T = max(len(ids) for ids, _ in examples)
    input_ids = np.full((len(examples), T), pad_id, dtype=np.int64)        # (B, T)
    labels = np.full((len(examples), T), IGNORE_INDEX, dtype=np.int64)     # (B, T)
    for b, (ids, lab) in enumerate(examples):
        input_ids[b, :len(ids)] = ids
        labels[b, :len(lab)] = lab
    return input_ids, labels


def permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of one epoch: a function of (seed, epoch) only."""
    for name, value in (("n", n), ("seed", seed), ("epoch", epoch)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise MiniLoraError(f"{name} must be a non-negative int, got {value!r}")
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches iterate_batches yields for n examples."""
    return n // batch_size if drop_last else -(-n // batch_size)


def iterate_batches(examples, batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                    pad_id: int = PAD_ID, drop_last: bool = False, start_batch: int = 0):
    """Yield collated (input_ids, labels) batches of one epoch, in permutation(n, seed, epoch) order
    (input order when shuffle=False). start_batch skips that many batches, for resuming."""
    _check_positive_int("batch_size", batch_size)
    examples = list(examples)
    if not examples:
        raise MiniLoraError("iterate_batches needs at least one example")
    order = permutation(len(examples), seed, epoch) if shuffle else np.arange(len(examples))
    for k in range(start_batch, num_batches(len(examples), batch_size, drop_last)):
        idx = order[k * batch_size:(k + 1) * batch_size]
        yield collate([examples[i] for i in idx], pad_id)


def lm_batches(texts, tokenizer, seq_len: int, batch_size: int, seed: int, epoch: int = 0,
               drop_last: bool = False):
    """Pretraining batches: texts in permutation order, each as bos + bytes + eos, packed into one
    stream cut into rows of seq_len; labels = input_ids (the model shifts), -100 on the padding
    of the last row. Yields (input_ids (B, seq_len), labels (B, seq_len)) int64."""
    _check_positive_int("seq_len", seq_len)
    _check_positive_int("batch_size", batch_size)
    texts = list(texts)
    if not texts:
        raise MiniLoraError("lm_batches needs at least one text")
    stream = []
    for i in permutation(len(texts), seed, epoch):
        stream += tokenizer.encode(texts[i], add_bos=True, add_eos=True)
    n_rows = -(-len(stream) // seq_len)
    input_ids = np.full((n_rows, seq_len), tokenizer.pad_token_id, dtype=np.int64)  # (N, T)
    input_ids.reshape(-1)[:len(stream)] = stream
    labels = input_ids.copy()                                                        # (N, T)
    labels.reshape(-1)[len(stream):] = IGNORE_INDEX
    for k in range(num_batches(n_rows, batch_size, drop_last)):
        yield input_ids[k * batch_size:(k + 1) * batch_size], labels[k * batch_size:(k + 1) * batch_size]


def label_choice_batches(rows, tokenizer, labels=LABELS, max_len: int = 128):
    """For each row, one batch holding its prompt followed by every candidate label:
    yields (input_ids (len(labels), T), labels (len(labels), T)), row by row."""
    if not labels:
        raise MiniLoraError("labels must name at least one candidate")
    for row in rows:
        yield collate([encode_example(row["context"], lab, tokenizer, max_len) for lab in labels],
                      tokenizer.pad_token_id)


def sequence_logprob(logits, labels):
    """Summed log-probability of each row's labelled tokens, with the causal shift:
    logits (B, T, V), labels (B, T) -> (B,); position t-1's logits score labels[t].
    labels may be host (NumPy) arrays or lists: they are moved to the logits' array module."""
    xp = array_module(logits)
    labels = asarray(labels, xp)                                                      # (B, T) on xp
    z = logits[:, :-1] - logits[:, :-1].max(axis=-1, keepdims=True)                  # (B, T-1, V)
    logp = z - xp.log(xp.exp(z).sum(axis=-1, keepdims=True))                          # (B, T-1, V)
    target = labels[:, 1:]                                                            # (B, T-1)
    mask = target != IGNORE_INDEX
    picked = xp.take_along_axis(logp, xp.where(mask, target, 0)[..., None], axis=-1)[..., 0]
    return (picked * mask).sum(axis=-1)                                               # (B,)


def classify(score_fn, rows, tokenizer, labels=LABELS, max_len: int = 128) -> list[str]:
    """Predicted label per row: the candidate whose (input_ids, labels) score_fn rates highest.
    score_fn(input_ids (K, T), labels (K, T)) -> K scores, e.g. sequence_logprob of the logits."""
    predicted = []
    for input_ids, lab in label_choice_batches(rows, tokenizer, labels, max_len):
        scores = to_numpy(score_fn(input_ids, lab)).astype(np.float64).reshape(-1)
        if scores.shape != (len(labels),):
            raise MiniLoraError(f"score_fn returned {scores.shape[0]} scores for {len(labels)} labels")
        predicted.append(labels[int(np.argmax(scores))])
    return predicted


def accuracy(predicted, rows, labels=LABELS) -> float:
    """Fraction of rows whose target equals the prediction (a label, or an index into labels)."""
    predicted, rows = list(predicted), list(rows)
    if not rows or len(predicted) != len(rows):
        raise MiniLoraError(
            f"accuracy needs one prediction per row, got {len(predicted)} for {len(rows)} rows")
    hits = 0
    for p, row in zip(predicted, rows, strict=True):
        if row["target"] not in labels:
            raise MiniLoraError(f"target {row['target']!r} is not one of {tuple(labels)}")
        if isinstance(p, (int, np.integer)) and not isinstance(p, bool):
            if not 0 <= p < len(labels):
                raise MiniLoraError(f"predicted index {p} is outside 0..{len(labels) - 1}")
            p = labels[p]
        hits += p == row["target"]
    return hits / len(rows)
