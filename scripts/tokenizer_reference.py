"""Write transformers' token ids for SmolLM2's GGUF tokenizer: the oracle tests/test_hf_tokenizer.py compares with.

Runs in the oracle environment (transformers + gguf; NOT minilora's runtime), reads the GGUF through
`AutoTokenizer.from_pretrained(folder, gguf_file=name)`, and writes tests/reference/smollm2_tokenizer.json:
the ids of tricky strings (spaces, tabs, newlines, accents, quotes, emoji, CJK, digits, currency),
their decoded text, and the chat-template text and ids of two conversations, with and without the
generation prompt. minilora is not imported: every value in the file comes from transformers.

    /work/oracle-venv/bin/python scripts/tokenizer_reference.py /tmp/smol/SmolLM2-135M-Instruct.Q4_1.gguf
    /work/oracle-venv/bin/python scripts/tokenizer_reference.py MODEL.gguf --out tests/reference/x.json
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile

STRINGS = [
    "Hello world",
    " Hello world",
    "   three leading spaces",
    "trailing spaces   ",
    "tab\tseparated\tvalues",
    "\tleading tab",
    "line one\nline two\n\nline four",
    "\n\n\nnewlines first",
    "Windows\r\nline end",
    "Café crème brûlée, naïve façade, Ångström",
    "“curly quotes” and ‘single’ — em dash … ellipsis",
    "emoji: 😀 👍🏽 🇫🇷 👨‍👩‍👧",
    "中文字符 日本語のテキスト 한국어",
    "digits 0123456789 and 3.14159 and 1e-9",
    "$1,234.56",
    "€5 and £3.50 and ¥1000",
    "Revenue rose 12% to $4.5bn in Q3 2024 (vs. €3.9bn).",
    "it's we're they'll I'm you've he'd DON'T",
    "def f(x):\n    return x**2  # square",
    "<|im_start|>user\nliteral special tokens<|im_end|>",
    "Mixed: Ünïcödé 🙂 tabs\t\tand  spaces\n\t end",
    "",
]

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a financial sentiment classifier. Answer with one word."},
     {"role": "user", "content": "Shares of Quanta fell 8% after the guidance cut."},
     {"role": "assistant", "content": "negative"},
     {"role": "user", "content": "Revenue beat estimates by €1.2bn; the stock rose 5%."}],
]


def _ids(out):
    """apply_chat_template's result -> list[int] (transformers 5 may return a BatchEncoding)."""
    if hasattr(out, "keys") and "input_ids" in out:
        out = out["input_ids"]
    return [int(i) for i in out]


def build(gguf_path):
    import transformers
    from transformers import AutoTokenizer

    folder, name = os.path.split(os.path.abspath(gguf_path))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    with open(gguf_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    strings = []
    for s in STRINGS:
        ids = [int(i) for i in tok.encode(s, add_special_tokens=False)]
        strings.append({"text": s, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
    chats = []
    for messages in CONVERSATIONS:
        for gen in (True, False):
            text = tok.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False)
            ids = _ids(tok.apply_chat_template(messages, add_generation_prompt=gen, tokenize=True))
            chats.append({"messages": messages, "add_generation_prompt": gen, "text": text, "ids": ids})
    return {
        "source": {"gguf": name, "sha256": sha, "transformers": transformers.__version__,
                   "tokenizer_class": type(tok).__name__,
                   "how": "AutoTokenizer.from_pretrained(folder, gguf_file=name); encode(add_special_tokens=False)"},
        "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
        "vocab_size": len(tok),
        "strings": strings,
        "chats": chats,
    }


def _dumps(ref) -> str:
    """JSON with one line per string / chat entry, so a diff of the file shows which one changed."""
    lines = []
    for key, value in ref.items():
        if isinstance(value, list):
            items = ",\n".join("  " + json.dumps(v, ensure_ascii=False) for v in value)
            lines.append(f" {json.dumps(key)}: [\n{items}\n ]")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("gguf", help="path of SmolLM2-135M-Instruct.Q4_1.gguf")
    p.add_argument("--out", default="tests/reference/smollm2_tokenizer.json", help="JSON file to write")
    args = p.parse_args(argv)
    if not os.path.isfile(args.gguf):
        print(f"error: {args.gguf}: no such file", file=sys.stderr)
        return 2
    ref = build(args.gguf)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.out)), suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(_dumps(ref))
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {len(ref['strings'])} strings, {len(ref['chats'])} chats "
          f"(transformers {ref['source']['transformers']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
