"""SmolLM2's GGUF tokenizer against transformers: ids of tricky strings and of chat templates.

The expected values are transformers' own output (tests/reference/smollm2_tokenizer.json, written by
scripts/tokenizer_reference.py in the oracle environment); minilora does not produce them. Skips
when the GGUF has not been fetched; with transformers installed, also compares live.
"""
import json
import os
from pathlib import Path

import pytest

from minilora.data import load_tokenizer

pytest.importorskip("tokenizers")
pytest.importorskip("jinja2")
pytest.importorskip("gguf")

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
REFERENCE = Path(__file__).parent / "reference" / "smollm2_tokenizer.json"


def smollm2_gguf():
    """Where the SmolLM2 GGUF is, or None: $MINILORA_CACHE, ~/.cache/minilora, /tmp/smol (one place to switch
    to minilora's model registry)."""
    dirs = [os.environ.get("MINILORA_CACHE"), os.path.join(os.path.expanduser("~"), ".cache", "minilora"), "/tmp/smol"]
    for d in filter(None, dirs):
        path = os.path.join(d, GGUF_NAME)
        if os.path.isfile(path):
            return path
    return None


@pytest.fixture(scope="module")
def ref():
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tok():
    path = smollm2_gguf()
    if path is None:
        pytest.skip(f"{GGUF_NAME} not fetched (minilora fetch smollm2-135m-instruct)")
    return load_tokenizer(path)


def test_reference_covers_the_tricky_cases(ref):
    texts = "".join(e["text"] for e in ref["strings"])
    for piece in ("   ", "\t", "\n", "é", "“", "😀", "中", "0123456789", "$1,234.56", "€5"):
        assert piece in texts
    assert {c["add_generation_prompt"] for c in ref["chats"]} == {True, False}
    assert any(m["role"] == "system" for c in ref["chats"] for m in c["messages"])


def test_special_ids_and_vocab_equal_transformers(tok, ref):
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == \
        (ref["bos_token_id"], ref["eos_token_id"], ref["pad_token_id"])
    assert tok.vocab_size == ref["vocab_size"]


def test_ids_equal_transformers(tok, ref):
    mismatches = [(e["text"], tok.encode(e["text"]), e["ids"]) for e in ref["strings"]
                  if tok.encode(e["text"]) != e["ids"]]
    assert not mismatches, mismatches


def test_decode_equals_transformers(tok, ref):
    for e in ref["strings"]:
        assert tok.decode(e["ids"], skip_special_tokens=False) == e["decoded"]


def test_chat_template_equals_transformers(tok, ref):
    for c in ref["chats"]:
        assert tok.apply_chat_template(c["messages"], c["add_generation_prompt"], tokenize=False) == c["text"]
        assert tok.apply_chat_template(c["messages"], c["add_generation_prompt"]) == c["ids"]


def test_live_against_transformers(tok, ref):
    transformers = pytest.importorskip("transformers")
    path = smollm2_gguf()
    hf = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    extra = ["  x  y\t\tz\r\n", "naïve 😀👍 中文 ¥1000 12,345.678", "<|im_end|><|endoftext|> after"]
    for text in [e["text"] for e in ref["strings"]] + extra:
        assert tok.encode(text) == list(hf.encode(text, add_special_tokens=False)), text
