"""Label-choice evaluation: which answer does the model find most likely after each prompt?

For a row with prompt p and candidate answers c_1..c_K (each ending in eos), the score of c_k is
    log P(c_k | p) = sum_j log softmax(logits(p + c_k[:j]))[c_k[j]]
and the prediction is the candidate with the highest score. The prompt is shared by every
candidate, so it runs once: rows with prompts of equal length are prefilled together into a KV
cache (minilora.inference.generate), the cache is copied per candidate, and only the answer tokens run
again. This gives the same scores as running every full sequence (tests/test_evaluate.py) for
about a third of the work.

Rows are {context, target} or {prompt, completion}; prompt and candidates are tokenized exactly as
training tokenizes them (minilora.data.formats.pair_ids): in the model's chat template when its
tokenizer has one (the candidate as the assistant turn, through the end-of-turn token), else in
minilora's plain format.
"""
from __future__ import annotations

from minilora.backend import asarray
from minilora.data.formats import pair_ids, prompt_and_answer
from minilora.errors import MiniLoraError
from minilora.inference.generate import KVCache, forward_cached


def _log_softmax(z, xp):
    z = z - xp.max(z, axis=-1, keepdims=True)
    return z - xp.log(xp.sum(xp.exp(z), axis=-1, keepdims=True))


def choice_scores(model, rows, tokenizer, labels, max_len: int = 128, group: int = 64):
    """Scores (len(rows) lists of len(labels) floats): the log-likelihood of each candidate answer."""
    xp = model.xp
    prompts, answers = [], []
    for r in rows:
        prompt, _ = prompt_and_answer(r)
        per = [pair_ids(prompt, lab, tokenizer, style="context" if "context" in r else "prompt") for lab in labels]
        longest = max(len(p) + len(a) for p, a in per)
        if longest > max_len:
            raise MiniLoraError(f"example is {longest} tokens, longer than max_len={max_len}; shorten the context")
        prompts.append(per[0][0])
        answers.append([a for _, a in per])
    by_len: dict = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    scores = [None] * len(rows)
    for length, idx_all in sorted(by_len.items()):
        for s in range(0, len(idx_all), group):
            idx = idx_all[s:s + group]
            longest = max(len(a) for i in idx for a in answers[i])
            cache = KVCache.allocate(model, len(idx), length + longest)
            last = forward_cached(model, asarray([prompts[i] for i in idx], xp), cache, last_only=True)
            first_logp = _log_softmax(last[:, 0], xp)                              # (G, V)
            for k in range(len(labels)):
                ans = [answers[i][k] for i in idx]
                if len({len(a) for a in ans}) != 1:          # labels tokenize alike for every row
                    raise MiniLoraError("candidate answers differ in length between rows")
                ans_ids = asarray(ans, xp)                                         # (G, n)
                total = xp.take_along_axis(first_logp, ans_ids[:, :1], axis=-1)[:, 0]
                if ans_ids.shape[1] > 1:
                    c = KVCache([a.copy() for a in cache.k], [a.copy() for a in cache.v], cache.length)
                    logp = _log_softmax(forward_cached(model, ans_ids[:, :-1], c), xp)    # (G, n-1, V)
                    total = total + xp.take_along_axis(logp, ans_ids[:, 1:, None], axis=-1)[..., 0].sum(-1)
                for j, i in enumerate(idx):
                    scores[i] = scores[i] or [0.0] * len(labels)
                    scores[i][k] = float(total[j])
    return scores


def choice_accuracy(model, rows, tokenizer, labels, max_len: int = 128):
    """Fraction of rows whose highest-scoring candidate is the row's target."""
    if not rows:
        raise MiniLoraError("no rows to evaluate")
    scores = choice_scores(model, rows, tokenizer, labels, max_len)
    best = [labels[max(range(len(labels)), key=s.__getitem__)] for s in scores]
    hits = sum(b == prompt_and_answer(r)[1] for b, r in zip(best, rows, strict=True))
    return hits / len(rows)
