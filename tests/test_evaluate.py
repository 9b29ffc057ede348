"""The cached label-choice evaluation equals scoring every full sequence."""
import numpy as np
import pytest

from minilora.config import LlamaConfig
from minilora.data import LABELS, ByteTokenizer, collate, encode_example, sequence_logprob
from minilora.errors import MiniLoraError
from minilora.inference.evaluate import choice_accuracy, choice_scores
from minilora.model import LlamaForCausalLM

ROWS = [{"context": f"Sentiment?\nAcme {w} {i}", "target": LABELS[i % 3]}
        for i, w in enumerate(["rises", "falls", "holds", "beats estimates", "misses", "x"])]


def full_sequence_scores(model, rows, tok):
    seqs = [encode_example(r["context"], lab, tok) for r in rows for lab in LABELS]
    ids, lab = collate(seqs, tok.pad_token_id)
    return np.asarray(sequence_logprob(model.forward(ids), lab)).reshape(len(rows), len(LABELS))


def test_cached_scores_equal_full_sequence_scores():
    cfg = LlamaConfig(vocab_size=259, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM.init(cfg, seed=0, dtype="float64", initializer_range=0.5)
    tok = ByteTokenizer()
    cached = np.asarray(choice_scores(model, ROWS, tok, LABELS))
    np.testing.assert_allclose(cached, full_sequence_scores(model, ROWS, tok), rtol=1e-10, atol=1e-10)
    best = [LABELS[int(np.argmax(s))] for s in cached]
    expected = np.mean([b == r["target"] for b, r in zip(best, ROWS, strict=True)])
    assert choice_accuracy(model, ROWS, tok, LABELS) == expected
    with pytest.raises(MiniLoraError, match="no rows"):
        choice_accuracy(model, [], tok, LABELS)
