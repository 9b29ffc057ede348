"""Data: tokenizer round trip, the sentiment generator's determinism and label rules, batching."""
import collections
import json
import os
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilora.data import (
    INSTRUCTION,
    LABELS,
    ByteTokenizer,
    accuracy,
    classify,
    collate,
    encode_example,
    format_prompt,
    generate_sentiment,
    iterate_batches,
    label_choice_batches,
    lm_batches,
    load_jsonl,
    permutation,
    pretraining_corpus,
    sequence_logprob,
    write_jsonl,
)
from minilora.data import sentiment as S
from minilora.errors import MiniLoraError

TOK = ByteTokenizer()


@pytest.fixture(scope="module")
def data():
    return generate_sentiment(1500, 300, seed=0)


def headline(row):
    return row["context"].split("\n", 1)[1]


# ---------------------------------------------------------------- tokenizer

@given(st.text(max_size=200))
def test_tokenizer_round_trip(text):
    ids = TOK.encode(text, add_bos=True, add_eos=True)
    assert ids[0] == TOK.bos_token_id and ids[-1] == TOK.eos_token_id
    assert all(0 <= i < 256 for i in ids[1:-1])
    assert TOK.decode(ids) == text


@given(st.lists(st.integers(0, 258), max_size=100))
def test_decode_skips_specials_and_replaces_bad_utf8(ids):
    assert TOK.decode(ids) == bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def test_tokenizer_contract():
    assert (TOK.vocab_size, TOK.bos_token_id, TOK.eos_token_id, TOK.pad_token_id) == (259, 256, 257, 258)
    assert TOK.encode("hé", add_bos=False) == [104, 0xC3, 0xA9]
    with pytest.raises(MiniLoraError, match="str"):
        TOK.encode(b"bytes")
    with pytest.raises(MiniLoraError, match="UTF-8"):
        TOK.encode("\ud800")
    with pytest.raises(MiniLoraError, match="259"):
        TOK.decode([65, 259])


# ---------------------------------------------------------------- generator

def test_same_seed_same_bytes_different_seed_different(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(a, generate_sentiment(200, 50, seed=7)[0])
    write_jsonl(b, generate_sentiment(200, 50, seed=7)[0])
    assert a.read_bytes() == b.read_bytes()
    assert generate_sentiment(200, 50, seed=8)[0] != generate_sentiment(200, 50, seed=7)[0]


def test_splits_are_disjoint(data):
    train, test = data
    assert len(train) == 1500 and len(test) == 300
    heads_train, heads_test = {headline(r) for r in train}, {headline(r) for r in test}
    assert len(heads_train) == 1500 and len(heads_test) == 300      # no duplicates inside a split
    assert not heads_train & heads_test


def test_classes_balanced_within_one_row(data):
    for rows in data:
        counts = collections.Counter(r["target"] for r in rows)
        assert set(counts) == set(LABELS)
        assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_rows_have_finlora_format_and_fit_128_tokens(data):
    for row in data[0] + data[1]:
        assert list(row) == ["context", "target"] and row["target"] in LABELS
        assert row["context"].startswith(INSTRUCTION + "\n") and "\n" not in headline(row)
        assert len(headline(row)) <= S.MAX_HEADLINE_CHARS and headline(row).isascii()
        assert len(encode_example(row["context"], row["target"], TOK)[0]) <= 118


@pytest.mark.parametrize("made, text, label", [
    (S.movement_headline("Acme", "revenue", "rise", " 8%", "Q3 "), "Acme Q3 revenue rises 8%", "positive"),
    (S.movement_headline("Acme", "costs", "rise", " 8%", "Q3 "), "Acme Q3 costs rise 8%", "negative"),
    (S.movement_headline("Acme", "debt", "fall"), "Acme debt falls", "positive"),
    (S.movement_headline("Acme", "losses", "narrow"), "Acme losses narrow", "positive"),
    (S.movement_headline("Acme", "margins", "narrow"), "Acme margins narrow", "negative"),
    (S.failed_movement_headline("Acme", "sales", "grow"), "Acme sales fail to grow", "negative"),
    (S.failed_movement_headline("Acme", "debt", "rise"), "Acme debt fails to rise", "positive"),
    (S.expectation_headline("Acme", "profit", "miss", "forecasts", "rise"),
     "Acme profit rises but misses forecasts", "negative"),
    (S.expectation_headline("Acme", "revenue", "beat", "estimates", "fall", " 3%"),
     "Acme revenue falls 3% but beats estimates", "positive"),
    (S.expectation_headline("Acme", "sales", "fail to beat", "estimates"),
     "Acme sales fail to beat estimates", "negative"),
    (S.expectation_headline("Acme", "profit", "in line with", "forecasts", "rise", " 5%"),
     "Acme profit rises 5%, in line with forecasts", "neutral"),
    (S.action_headline("Acme", "cut dividend", "not expected to"),
     "Acme not expected to cut dividend", "positive"),
    (S.action_headline("Acme", "cut costs", "to"), "Acme to cut costs", "positive"),
    (S.action_headline("Acme", "cut jobs", "plans to"), "Acme plans to cut jobs", "negative"),
    (S.action_headline("Acme", "win contract", "fails to"), "Acme fails to win contract", "negative"),
    (S.steady_headline("Acme", "revenue", "hold steady"), "Acme revenue holds steady", "neutral"),
    (S.steady_headline("Acme", "costs", "flat", "Q2 "), "Acme Q2 costs flat", "neutral"),
])
def test_label_rules(made, text, label):
    assert made == (text, label)


@pytest.mark.parametrize("call", [
    lambda: S.movement_headline("Acme", "revenue", "widen"),
    lambda: S.movement_headline("Acme", "vibes", "rise"),
    lambda: S.action_headline("Acme", "cut jobs", "fails to"),
    lambda: S.expectation_headline("Acme", "costs", "beat"),
])
def test_rule_builders_reject_bad_parts(call):
    with pytest.raises(MiniLoraError):
        call()


def test_label_is_a_function_of_the_headline():
    seen = {}
    for seed in range(3):
        for rows in generate_sentiment(600, 0, seed=seed):
            for r in rows:
                assert seen.setdefault(headline(r), r["target"]) == r["target"], headline(r)


def words(text):
    return set(re.findall(r"[a-z0-9%-]+|,", text.lower()))


def test_same_words_appear_under_different_labels(data):
    by_word = collections.defaultdict(set)
    for r in data[0]:
        for w in words(headline(r)):
            by_word[w].add(r["target"])
    for w in ("rises", "rise", "falls", "cut", "fails", "fail", "but", "revenue", "costs", "not"):
        assert len(by_word[w]) >= 2, (w, by_word[w])


def test_no_single_word_predicts_the_label(data):
    """Best one-word rule (word present -> label a, absent -> label b) on the training rows.
    The brief's bound is 80%; the generated set reaches about 46%, so 60% catches drift."""
    rows = data[0]
    ws, ys = [words(headline(r)) for r in rows], [r["target"] for r in rows]
    best = 0.0
    for w in set().union(*ws):
        present = collections.Counter(y for s, y in zip(ws, ys, strict=True) if w in s)
        absent = collections.Counter(y for s, y in zip(ws, ys, strict=True) if w not in s)
        best = max(best, (max(present.values()) + max(absent.values(), default=0)) / len(rows))
    assert best < 0.6


def test_pretraining_corpus_knows_the_domain_not_the_task():
    texts = pretraining_corpus(500, seed=1)
    assert texts == pretraining_corpus(500, seed=1) and texts != pretraining_corpus(500, seed=2)
    assert len(texts) == 500 and any(t.endswith(".") for t in texts) and any(" profit " in t for t in texts)
    for t in texts:
        assert "Answer" not in t and INSTRUCTION not in t and "\n" not in t
        assert not words(t) & set(LABELS)


# ---------------------------------------------------------------- jsonl

def test_jsonl_round_trip_is_atomic(tmp_path):
    rows = generate_sentiment(30, 0, seed=3)[0]
    path = tmp_path / "sub" / "train.jsonl"
    write_jsonl(path, rows)
    assert load_jsonl(path) == rows
    with pytest.raises(MiniLoraError, match="row 1"):
        write_jsonl(path, [rows[0], {"context": "x"}])
    assert load_jsonl(path) == rows                                   # old file untouched
    assert os.listdir(path.parent) == ["train.jsonl"]                 # no temp file left


@pytest.mark.parametrize("lines, match", [
    (['{"context": "a", "target": "b"}', '{"context": "a"', ''], "line 2: invalid JSON"),
    (['{"context": "a", "target": "b"}', '', '{"context": "a"}'], "line 3: missing 'target'"),
    (['{"context": 3, "target": "b"}'], "line 1: 'context' must be a string"),
    (['["context", "target"]'], "line 1: expected a JSON object"),
    (['', ''], "empty file"),
])
def test_load_jsonl_errors_name_the_line(tmp_path, lines, match):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(MiniLoraError, match=match):
        load_jsonl(path)


def test_load_jsonl_missing_file(tmp_path):
    with pytest.raises(MiniLoraError, match="no such file"):
        load_jsonl(tmp_path / "nope.jsonl")


# ---------------------------------------------------------------- batching

def test_encode_example_masks_exactly_the_prompt():
    context = f"{INSTRUCTION}\nAcme profit rises"
    ids, labels = encode_example(context, "positive", TOK)
    n_prompt = 1 + len(format_prompt(context).encode())
    assert ids[:n_prompt] == TOK.encode(format_prompt(context)) and ids[-1] == TOK.eos_token_id
    assert all(lab == -100 for lab in labels[:n_prompt])
    assert labels[n_prompt:] == ids[n_prompt:] and -100 not in labels[n_prompt:]
    assert TOK.decode(ids) == format_prompt(context) + " positive"
    with pytest.raises(MiniLoraError, match="max_len=20"):
        encode_example(context, "positive", TOK, max_len=20)


def test_collate_right_pads():
    a, b = ([1, 2, 3], [-100, 2, 3]), ([4], [4])
    x, y = collate([a, b], pad_id=258)
    assert x.dtype == y.dtype == np.int64 and x.shape == y.shape == (2, 3)
    assert x.tolist() == [[1, 2, 3], [4, 258, 258]]
    assert y.tolist() == [[-100, 2, 3], [4, -100, -100]]
    with pytest.raises(MiniLoraError, match="same non-zero length"):
        collate([([1, 2], [1])])
    with pytest.raises(MiniLoraError):
        collate([])


def test_batch_order_reproducible_per_epoch_and_resumable():
    examples = [([i], [i]) for i in range(23)]

    def run(epoch, **kw):
        return [x[:, 0].tolist() for x, _ in iterate_batches(examples, 5, 11, epoch, **kw)]

    e0, e1 = run(0), run(1)
    assert e0 == run(0) and e0 != e1
    assert sorted(sum(e0, [])) == list(range(23)) and [len(b) for b in e0] == [5, 5, 5, 5, 3]
    assert sum(e0, []) == permutation(23, 11, 0).tolist()
    assert run(0, start_batch=2) == e0[2:]
    assert run(0, drop_last=True) == e0[:4]
    assert sum(run(0, shuffle=False), []) == list(range(23))


def test_lm_batches_pack_every_text():
    texts = ["Acme profit rises", "Trading was light.", "Zenith debt falls 5%"]
    batches = list(lm_batches(texts, TOK, seq_len=8, batch_size=3, seed=0))
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert x.shape[1] == 8 and x.dtype == np.int64
    assert [len(b[0]) for b in batches] == [3, 3, 2]                 # 55 bytes + 6 specials -> 8 rows
    stream = x.reshape(-1)
    n_real = sum(len(t) + 2 for t in texts)
    assert (stream[n_real:] == TOK.pad_token_id).all() and (y.reshape(-1)[n_real:] == -100).all()
    assert (y.reshape(-1)[:n_real] == stream[:n_real]).all()
    order = permutation(3, 0, 0)
    assert TOK.decode(stream) == "".join(texts[i] for i in order)
    again = np.concatenate([b[0] for b in lm_batches(texts, TOK, 8, 3, seed=0)])
    assert (again == x).all()


def test_sequence_logprob_matches_a_loop():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7))
    labels = np.array([[-100, -100, 3, 1, 6], [-100, 2, 0, -100, -100]])
    want = np.zeros(2)
    for b in range(2):
        for t in range(1, 5):
            if labels[b, t] != -100:
                z = logits[b, t - 1]
                want[b] += z[labels[b, t]] - np.log(np.exp(z).sum())
    np.testing.assert_allclose(sequence_logprob(logits, labels), want, rtol=1e-12)


def test_label_choice_classify_and_accuracy(data):
    rows = data[1][:30]
    batches = list(label_choice_batches(rows, TOK))
    x, y = batches[0]
    assert x.shape[0] == 3 and [TOK.decode(r[r != -100]) for r in y] == [" negative", " neutral", " positive"]
    truth = {format_prompt(r["context"]): r["target"] for r in rows}

    def oracle(input_ids, labels):                     # scores 1 for the true candidate
        texts = [TOK.decode(i) for i in input_ids]
        return [float(truth.get(t[:t.rindex(" ")]) == t[t.rindex(" ") + 1:]) for t in texts]

    assert accuracy(classify(oracle, rows, TOK), rows) == 1.0
    always_neutral = classify(lambda i, lab: [0.0, 1.0, 0.0], rows, TOK)
    assert accuracy(always_neutral, rows) == sum(r["target"] == "neutral" for r in rows) / 30
    assert accuracy([1] * 30, rows) == accuracy(always_neutral, rows)
    with pytest.raises(MiniLoraError, match="one prediction per row"):
        accuracy(["neutral"], rows)
    with pytest.raises(MiniLoraError, match="scores"):
        classify(lambda i, lab: [0.0, 1.0], rows, TOK)


def test_written_rows_are_plain_json(tmp_path, data):
    write_jsonl(tmp_path / "t.jsonl", data[1][:3])
    first = json.loads((tmp_path / "t.jsonl").read_text().splitlines()[0])
    assert first == data[1][0]
