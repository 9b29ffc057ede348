"""Training-data formats (minilora.data.formats) and the order of work of `minilora train`, on tiny models.

Oracles: the byte path is today's encode_example (the demo's numbers must not move); the chat path is
ChatML written out by hand from its published format, tokenized by the `tokenizers` package itself.
"""
import json
import os

import numpy as np
import pytest

from minilora.config import LlamaConfig
from minilora.data import LABELS, ByteTokenizer, encode_example, load_jsonl, load_tokenizer
from minilora.data.formats import (
    candidate_labels,
    encode_record,
    encode_records,
    load_records,
    prompt_ids,
    row_format,
)
from minilora.errors import MiniLoraError
from minilora.runs.finlora import parse_run
from minilora.runs.recipes import ROOT

tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("jinja2")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CORPUS = ["Sentiment (negative/neutral/positive)? Acme profit rises", "negative neutral positive",
          "What is two plus two? Four.", "the quarter revenue shares guidance"] * 4
BYTE = ByteTokenizer()


@pytest.fixture(scope="module")
def chat_folder(tmp_path_factory):
    """tokenizer.json (a small byte-level BPE trained by the tokenizers package) + a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder = tmp_path_factory.mktemp("chat")
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
         "chat_template": CHATML}))
    return folder


@pytest.fixture(scope="module")
def chat_tok(chat_folder):
    return load_tokenizer(chat_folder)


def raw(folder, text):
    """The tokenizers package's own ids for text (no special tokens added)."""
    return tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text, add_special_tokens=False).ids


def test_byte_path_is_bit_identical_to_encode_example():
    rows = load_jsonl(os.path.join(ROOT, "data", "sentiment_train.jsonl"))
    assert encode_records(rows, BYTE, 128) == [encode_example(r["context"], r["target"], BYTE) for r in rows]


def test_chat_template_prompt_and_answer(chat_folder, chat_tok):
    ids, labels = encode_record({"context": "Acme profit rises", "target": "positive"}, chat_tok, 128)
    prompt = raw(chat_folder, "<|im_start|>user\nAcme profit rises<|im_end|>\n<|im_start|>assistant\n")
    answer = raw(chat_folder, "positive<|im_end|>")                  # through end-of-turn, not its newline
    assert ids == prompt + answer and labels == [-100] * len(prompt) + answer
    assert answer[-1] == chat_tok.eos_token_id
    same = encode_record({"prompt": "Acme profit rises", "completion": "positive"}, chat_tok, 128)
    chat = encode_record({"messages": [{"role": "user", "content": "Acme profit rises"},
                                       {"role": "assistant", "content": "positive"}]}, chat_tok, 128)
    assert same == chat == (ids, labels)
    assert prompt_ids("Acme profit rises", chat_tok) == prompt                # what generation continues from
    _, everything = encode_record({"context": "Acme profit rises", "target": "positive"}, chat_tok, 128,
                                  train_on_inputs=True)
    assert everything == [-100] + ids[1:]


def test_multi_turn_conversation_learns_every_assistant_turn(chat_folder, chat_tok):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "two plus two?"},
            {"role": "assistant", "content": "Four."}, {"role": "user", "content": "the quarter?"},
            {"role": "assistant", "content": "Q3."}]
    ids, labels = encode_record({"messages": msgs}, chat_tok, 256)
    parts = [("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\ntwo plus two?<|im_end|>\n"
              "<|im_start|>assistant\n", False), ("Four.<|im_end|>", True),
             ("\n<|im_start|>user\nthe quarter?<|im_end|>\n<|im_start|>assistant\n", False), ("Q3.<|im_end|>", True)]
    want_ids = [t for text, _ in parts for t in raw(chat_folder, text)]
    want_labels = [t if ans else -100 for text, ans in parts for t in raw(chat_folder, text)]
    assert ids == want_ids and labels == want_labels


def test_plain_formats_without_a_chat_template():
    ids, labels = encode_record({"prompt": "Q: 2+2?", "completion": " 4"}, BYTE, 64)
    assert ids == [BYTE.bos_token_id, *b"Q: 2+2? 4", BYTE.eos_token_id]
    assert labels == [-100] * 8 + [*b" 4", BYTE.eos_token_id]
    ids, labels = encode_record({"text": "ab"}, BYTE, 64)
    assert ids == [BYTE.bos_token_id, 97, 98, BYTE.eos_token_id] and labels == [-100, 97, 98, BYTE.eos_token_id]
    with pytest.raises(MiniLoraError, match="chat template"):
        encode_record({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, BYTE)
    with pytest.raises(MiniLoraError, match="row 2: example is .* longer than max_len=16"):
        encode_records([{"text": "a"}, {"text": "x" * 40}], BYTE, 16, where="data")


@pytest.mark.parametrize("row, match", [
    ({"context": "a"}, "no 'target'"), ({"prompt": "a", "completion": 3}, "'completion' must be a string"),
    ({"messages": []}, "non-empty list"), ({"messages": [{"role": "user", "content": "a"}]}, "no assistant"),
    ({"instruction": "a"}, "not a known row format"), ([1, 2], "expected a JSON object")])
def test_bad_rows_are_named(row, match):
    with pytest.raises(MiniLoraError, match=match):
        row_format(row, "f.jsonl: line 3")


def test_load_records_one_format_per_file(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a", "completion": "b"}\n\n{"text": "c"}\n')
    with pytest.raises(MiniLoraError, match="line 3: a 'text' row in a file of 'prompt' rows"):
        load_records(p)
    p.write_text('{"text": "c"}\n')
    assert load_records(p) == ([{"text": "c"}], "text")
    with pytest.raises(MiniLoraError, match="'text' rows cannot be used here"):
        load_records(p, formats=("context", "prompt"))


def test_candidate_labels():
    assert candidate_labels([{"context": "a", "target": "neutral"}]) == LABELS
    assert candidate_labels([{"prompt": "a", "completion": "yes"}, {"prompt": "b", "completion": "no"},
                             {"prompt": "c", "completion": "yes"}]) == ("yes", "no")


def test_train_on_inputs_is_a_checked_run_key():
    base = {"base_model": "m", "quant_bits": 8, "dataset_path": "d", "learning_rate": 1e-3, "num_epochs": 1,
            "batch_size": 2, "gradient_accumulation_steps": 1}
    assert parse_run("r", base).train_on_inputs is False
    assert parse_run("r", {**base, "train_on_inputs": True}).train_on_inputs is True
    with pytest.raises(MiniLoraError, match="train_on_inputs must be true or false"):
        parse_run("r", {**base, "train_on_inputs": "yes"})


# ---- minilora train: the model's own tokenizer, inputs checked first, adapter saved before evaluation ----------
def tiny_chat_model(folder, chat_folder, vocab):
    from minilora.io.hf import save_pretrained
    from minilora.model import LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    save_pretrained(LlamaForCausalLM.init(cfg, seed=0), str(folder))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if chat_folder is not None:
            (folder / f).write_bytes((chat_folder / f).read_bytes())
    return folder


def write_run(tmp_path, base, rows, test_rows=None, **kw):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = {"base_model": str(base), "dataset_path": "train.jsonl", "lora_r": 2, "quant_bits": 8,
           "learning_rate": 0.01, "num_epochs": 1, "batch_size": 2, "gradient_accumulation_steps": 1, **kw}
    if test_rows is not None:
        (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test_rows))
        run["test_dataset_path"] = "test.jsonl"
    (tmp_path / "cfg.json").write_text(json.dumps({"r": run}))
    return str(tmp_path / "cfg.json")


ROWS = [{"context": f"Acme profit rises {i}", "target": LABELS[i % 3]} for i in range(4)]


def test_train_uses_the_models_chat_template_and_evaluates_after_saving(tmp_path, chat_folder, chat_tok, monkeypatch):
    import minilora.runs.recipes as recipes

    base = tiny_chat_model(tmp_path / "base", chat_folder, chat_tok.vocab_size)
    cfg = write_run(tmp_path, base, ROWS, ROWS[:2])
    seen, out = {}, tmp_path / "out"

    def fake_fit(model, examples, *a, **k):
        seen["examples"] = examples
        return real_fit(model, examples, *a, **k)

    def fake_accuracy(model, rows, tok, labels, max_len):
        seen["adapter_saved_first"] = (out / "adapter_config.json").is_file()
        seen["tok"] = tok
        return real_acc(model, rows, tok, labels, max_len)

    real_fit, real_acc = recipes.fit, recipes.choice_accuracy
    monkeypatch.setattr(recipes, "fit", fake_fit)
    monkeypatch.setattr(recipes, "choice_accuracy", fake_accuracy)
    _, acc = recipes.train_run(cfg, "r", str(out), progress=False, log=lambda *_: None)
    assert seen["examples"] == [encode_record(r, chat_tok, 64) for r in ROWS]
    assert seen["examples"][0][0][-1] == chat_tok.eos_token_id             # the answer ends the assistant turn
    assert seen["adapter_saved_first"] and seen["tok"].chat_template == CHATML and 0 <= acc <= 1


@pytest.mark.parametrize("breakage, match", [
    ("no_data", "train.jsonl: no such file"), ("bad_test", "test.jsonl: line 1: not a known row format"),
    ("out_is_file", "output folder .* is a file, not a folder"), ("text_test", "'text' rows cannot be used here")])
def test_inputs_are_checked_before_any_model_is_loaded(tmp_path, monkeypatch, breakage, match):
    import minilora.runs.recipes as recipes

    monkeypatch.setattr(recipes, "from_pretrained", lambda *a, **k: pytest.fail("model loaded before the checks"))
    test_rows = {"bad_test": [{"label": "x"}], "text_test": [{"text": "x"}]}.get(breakage, ROWS)
    cfg = write_run(tmp_path, "minilora/tiny-sentiment-base", ROWS, test_rows)
    out = tmp_path / "out"
    if breakage == "no_data":
        os.remove(tmp_path / "train.jsonl")
    if breakage == "out_is_file":
        out.write_text("")
    with pytest.raises(MiniLoraError, match=match):
        recipes.train_run(cfg, "r", str(out), progress=False, log=lambda *_: None)


def test_cli_train_on_a_real_vocab_without_a_tokenizer_is_one_line_exit_2(tmp_path, capsys):
    from minilora.cli.main import main

    base = tiny_chat_model(tmp_path / "base", None, 1000)                 # vocab 1000, no tokenizer.json
    cfg = write_run(tmp_path, base, ROWS)
    assert main(["train", "--config", cfg, "--run", "r", "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "byte tokenizer" in err[0] and "vocab_size 1000" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("load, threads", [(0.0, 4), (1.9, 4), (2.0, 1), (6.5, 1)])
def test_real_demo_uses_every_idle_core_and_the_tiny_demo_one_thread(monkeypatch, load, threads):
    from minilora.cli.demo import blas_threads
    from minilora.cli.main import build_parser

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    p = build_parser()
    assert blas_threads(p.parse_args(["demo"])) == 1
    assert blas_threads(p.parse_args(["demo", "--model", "smollm2-135m-instruct"])) == threads
    with pytest.raises(MiniLoraError):
        p.parse_args(["demo", "--tiny", "--model", "x"])


def test_choice_accuracy_is_unchanged_on_the_byte_path():
    """The label-choice prompt for the byte tokenizer is still encode_example's (the tiny demo's numbers)."""
    from minilora.data.formats import pair_ids

    p, a = pair_ids("Sentiment?\nAcme", "neutral", BYTE)
    ids, labels = encode_example("Sentiment?\nAcme", "neutral", BYTE)
    assert p + a == ids and np.sum(np.asarray(labels) == -100) == len(p)
    assert prompt_ids("Sentiment?\nAcme", BYTE) == p
