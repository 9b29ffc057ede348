"""One tokenizer interface: tokenizer.json folders, GGUF vocabularies, the byte tokenizer; chat templates; errors.

The oracles: a byte-level BPE trained here by the `tokenizers` package (its own encode is the
reference for our tokenizer.json and GGUF loaders, the GGUF written with the `gguf` package's
GGUFWriter); ChatML written out by hand from its published format; and, for the real SmolLM2
GGUF, transformers' ids committed in tests/reference/smollm2_tokenizer.json by
scripts/tokenizer_reference.py (run in the oracle environment).
"""
import json
import os

import pytest

from minilora.data import ByteTokenizer, HFTokenizer, check_vocab, load_tokenizer
from minilora.errors import MiniLoraError

tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("jinja2")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CORPUS = ["The quick brown fox jumps over the lazy dog.", "Revenue rose 12% to $4.5bn in the third quarter.",
          "Shares of the company fell after the guidance cut.", "Café crème, naïve façade: “quotes” and emoji 😀.",
          "line one\nline two\tand a tab", "the the the quarter quarter revenue revenue shares"] * 4
SAMPLES = ["The quick fox", " leading space", "tabs\tand\nnewlines\n\n", "Café “x” 😀 中文", "$1,234.56 €5", "",
           "<|im_start|>user\nhi<|im_end|>"]


def _train():
    """A small byte-level BPE (GPT-2 style), trained by the tokenizers package itself."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok


@pytest.fixture(scope="module")
def trained():
    return _train()


@pytest.fixture
def hf_folder(tmp_path, trained):
    """tokenizer.json + tokenizer_config.json (specials as a str and as AddedToken dicts, a ChatML template)."""
    trained.save(str(tmp_path / "tokenizer.json"))
    cfg = {"bos_token": "<|im_start|>", "pad_token": "<|endoftext|>", "unk_token": None, "chat_template": CHATML,
           "eos_token": {"__type": "AddedToken", "content": "<|im_end|>", "special": True, "lstrip": False}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    return tmp_path


def _write_gguf(path, trained, model="gpt2", template=CHATML, add_bos=False):
    """A GGUF holding only the trained tokenizer's vocabulary, merges and chat template (no tensors)."""
    gguf = pytest.importorskip("gguf")
    spec = json.loads(trained.to_str())
    vocab = trained.get_vocab(with_added_tokens=True)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_tokenizer_model(model)
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    w.add_bos_token_id(vocab["<|im_start|>"])
    w.add_eos_token_id(vocab["<|im_end|>"])
    w.add_pad_token_id(vocab["<|endoftext|>"])
    w.add_add_bos_token(add_bos)
    if template is not None:
        w.add_chat_template(template)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


class Cfg:
    def __init__(self, vocab_size, eos_token_id=None):
        self.vocab_size, self.eos_token_id = vocab_size, eos_token_id


# ---------------------------------------------------------------- tokenizer.json folders

def test_folder_ids_equal_the_trained_tokenizer(hf_folder, trained):
    tok = load_tokenizer(hf_folder)
    assert isinstance(tok, HFTokenizer)
    for s in SAMPLES:
        assert tok.encode(s) == trained.encode(s, add_special_tokens=False).ids
        assert tok.decode(tok.encode(s), skip_special_tokens=False) == s      # byte-level: every text round-trips
    assert tok.vocab_size == trained.get_vocab_size(with_added_tokens=True)


def test_folder_special_tokens_from_str_and_addedtoken_dicts(hf_folder, trained):
    tok = load_tokenizer(hf_folder)
    v = trained.get_vocab()
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == \
        (v["<|im_start|>"], v["<|im_end|>"], v["<|endoftext|>"], None)
    ids = tok.encode("<|im_start|>hi<|im_end|>")
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id      # matched whole, not cut into bytes
    assert tok.decode(ids) == "hi"                                            # specials skipped by default
    assert tok.encode("hi", add_bos=True, add_eos=True) == [tok.bos_token_id, *tok.encode("hi"), tok.eos_token_id]


def test_chatml_template_renders_like_the_format(hf_folder):
    tok = load_tokenizer(hf_folder)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Revenue rose?"}]
    expected = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nRevenue rose?<|im_end|>\n"
    assert tok.apply_chat_template(msgs, add_generation_prompt=False, tokenize=False) == expected
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == expected + "<|im_start|>assistant\n"
    ids = tok.apply_chat_template(msgs)
    assert ids == tok.encode(text, add_special_tokens=False)
    assert ids.count(tok.bos_token_id) == 3 and ids.count(tok.eos_token_id) == 2


def test_chat_template_jinja_file_and_named_list(hf_folder):
    (hf_folder / "chat_template.jinja").write_text("{{ bos_token }}{% for m in messages %}[{{ m['content'] }}]"
                                                   "{% if loop.index == 1 %}{% break %}{% endif %}{% endfor %}")
    tok = load_tokenizer(hf_folder)
    assert tok.apply_chat_template([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                                   tokenize=False) == "<|im_start|>[a]"       # loopcontrols' break: "b" never shown
    os.remove(hf_folder / "chat_template.jinja")
    cfg = json.loads((hf_folder / "tokenizer_config.json").read_text())
    cfg["chat_template"] = [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "{{ 'x' }}"}]
    (hf_folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert load_tokenizer(hf_folder).apply_chat_template([{"role": "user", "content": "a"}], tokenize=False) == "x"


def test_template_raise_exception_and_strftime(hf_folder):
    cfg = json.loads((hf_folder / "tokenizer_config.json").read_text())
    cfg["chat_template"] = ("{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}"
                            "{{ strftime_now('%Y') | length }}")
    (hf_folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = load_tokenizer(hf_folder)
    assert tok.apply_chat_template([{"role": "user", "content": "a"}], tokenize=False) == "4"
    with pytest.raises(MiniLoraError, match="refused these messages: user first"):
        tok.apply_chat_template([{"role": "assistant", "content": "a"}])
    with pytest.raises(MiniLoraError, match="messages must be a non-empty list"):
        tok.apply_chat_template("hello")
    with pytest.raises(MiniLoraError, match="message 0 must be a dict"):
        tok.apply_chat_template([{"content": "no role"}])


def test_missing_template_is_an_error(hf_folder):
    cfg = json.loads((hf_folder / "tokenizer_config.json").read_text())
    del cfg["chat_template"]
    (hf_folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = load_tokenizer(hf_folder)
    assert tok.chat_template is None
    with pytest.raises(MiniLoraError, match="has no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])


def test_tokenizer_json_alone_takes_special_ids_from_config(tmp_path, trained):
    trained.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path / "tokenizer.json", config=Cfg(400, eos_token_id=2))
    assert tok.eos_token_id == 2 and tok.bos_token_id is None and tok.chat_template is None


# ---------------------------------------------------------------- GGUF vocabularies

def test_gguf_ids_equal_the_trained_tokenizer(tmp_path, trained):
    tok = load_tokenizer(_write_gguf(tmp_path / "t.gguf", trained))
    v = trained.get_vocab()
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == \
        (v["<|im_start|>"], v["<|im_end|>"], v["<|endoftext|>"])
    for s in SAMPLES:
        assert tok.encode(s) == trained.encode(s, add_special_tokens=False).ids
        assert tok.decode(tok.encode(s), skip_special_tokens=False) == s
    assert tok.decode(tok.encode("<|im_start|>hi<|im_end|>")) == "hi"
    msgs = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(msgs, tokenize=False) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_gguf_from_an_open_reader(tmp_path, trained):
    from gguf import GGUFReader

    from minilora.data.hf_tokenizer import tokenizer_from_gguf_reader

    path = _write_gguf(tmp_path / "t.gguf", trained)
    tok = tokenizer_from_gguf_reader(GGUFReader(str(path)), path)
    assert tok.encode(SAMPLES[3]) == trained.encode(SAMPLES[3], add_special_tokens=False).ids


def test_gguf_add_bos_token_flag(tmp_path, trained):
    tok = load_tokenizer(_write_gguf(tmp_path / "t.gguf", trained, add_bos=True))
    assert tok.encode("hi", add_special_tokens=True) == [tok.bos_token_id, *tok.encode("hi")]
    assert tok.encode("hi")[0] != tok.bos_token_id


def test_gguf_sentencepiece_is_unsupported(tmp_path, trained):
    with pytest.raises(MiniLoraError, match="tokenizer.ggml.model is 'llama'.*only 'gpt2'"):
        load_tokenizer(_write_gguf(tmp_path / "t.gguf", trained, model="llama"))


def test_gguf_without_template(tmp_path, trained):
    tok = load_tokenizer(_write_gguf(tmp_path / "t.gguf", trained, template=None))
    with pytest.raises(MiniLoraError, match="has no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])


def test_not_a_gguf(tmp_path):
    pytest.importorskip("gguf")
    (tmp_path / "x.gguf").write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(MiniLoraError, match="not a readable GGUF file"):
        load_tokenizer(tmp_path / "x.gguf")


# ---------------------------------------------------------------- byte tokenizer, vocab checks, bad input

def test_byte_tokenizer_has_the_interface():
    tok = ByteTokenizer()
    assert tok.encode("hé") == [256, 104, 0xC3, 0xA9]                        # historical default: bos first
    assert tok.encode("hé", add_special_tokens=False) == [104, 0xC3, 0xA9]
    assert tok.encode("a", add_bos=False, add_eos=True) == [97, 257]
    assert tok.decode([256, 104, 257]) == "h"
    assert tok.decode([256, 104, 257], skip_special_tokens=False) == "<|bos|>h<|eos|>"
    assert tok.chat_template is None
    with pytest.raises(MiniLoraError, match="byte tokenizer has no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])


def test_folder_without_tokenizer_is_the_byte_tokenizer_when_it_fits(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 259}))
    assert isinstance(load_tokenizer(tmp_path), ByteTokenizer)
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 49152}))
    with pytest.raises(MiniLoraError, match="byte tokenizer .* does not fit a model with vocab_size 49152"):
        load_tokenizer(tmp_path)
    with pytest.raises(MiniLoraError, match="does not fit a model with vocab_size 23"):
        load_tokenizer(tmp_path, config=Cfg(23))
    os.remove(tmp_path / "config.json")
    with pytest.raises(MiniLoraError, match="no tokenizer.json, and no config.json"):
        load_tokenizer(tmp_path)


def test_vocab_mismatch_is_an_error(hf_folder):
    tok = load_tokenizer(hf_folder)
    check_vocab(tok, Cfg(tok.vocab_size))                                     # fits exactly
    check_vocab(tok, {"vocab_size": tok.vocab_size + 64})                     # a padded embedding fits too
    with pytest.raises(MiniLoraError, match="more than the model's vocab_size 259"):
        load_tokenizer(hf_folder, config=Cfg(259))
    with pytest.raises(MiniLoraError, match="no valid vocab_size"):
        check_vocab(tok, Cfg(None))
    with pytest.raises(MiniLoraError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])


@pytest.mark.parametrize("name, content, match", [
    ("tokenizer_config.json", "{not json", "not valid JSON"),
    ("tokenizer_config.json", json.dumps({"eos_token": "<|nope|>"}), "eos_token '<|nope|>' is not in"),
    ("tokenizer_config.json", json.dumps({"bos_token": 5}), "neither a str nor"),
    ("tokenizer_config.json", json.dumps({"chat_template": 5}), "chat_template is not a string"),
    ("tokenizer.json", "{}", "cannot read tokenizer"),
])
def test_bad_files_are_one_clear_error(hf_folder, name, content, match):
    (hf_folder / name).write_text(content)
    with pytest.raises(MiniLoraError, match=match):
        load_tokenizer(hf_folder)


def test_missing_paths_and_sentencepiece_folders(tmp_path):
    with pytest.raises(MiniLoraError, match="no such tokenizer folder or file"):
        load_tokenizer(tmp_path / "nowhere")
    (tmp_path / "tokenizer.model").write_bytes(b"\x00")
    with pytest.raises(MiniLoraError, match="only a SentencePiece tokenizer.model"):
        load_tokenizer(tmp_path)


def test_encode_rejects_non_text(hf_folder):
    with pytest.raises(MiniLoraError, match="expects a str"):
        load_tokenizer(hf_folder).encode(b"bytes")


def test_small_gguf_equals_transformers(tmp_path, trained):
    transformers = pytest.importorskip("transformers")
    path = _write_gguf(tmp_path / "t.gguf", trained)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="t.gguf")
    tok = load_tokenizer(path)
    for s in SAMPLES:
        assert tok.encode(s) == list(hf.encode(s, add_special_tokens=False)), s
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Revenue rose?"}]
    for gen in (True, False):                   # transformers' default is False, ours True (a prompt to answer)
        assert tok.apply_chat_template(msgs, gen, tokenize=False) == \
            hf.apply_chat_template(msgs, add_generation_prompt=gen, tokenize=False)


def test_folder_equals_transformers(hf_folder):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(hf_folder))
    tok = load_tokenizer(hf_folder)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Café “x” 😀\tok"}]
    for gen in (True, False):
        out = hf.apply_chat_template(msgs, add_generation_prompt=gen, tokenize=True)
        out = out["input_ids"] if hasattr(out, "keys") else out
        assert tok.apply_chat_template(msgs, gen) == list(out)
