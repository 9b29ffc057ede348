"""A GGUF file's vocabulary -> a Hugging Face `tokenizers.Tokenizer` (byte-level BPE only).

GGUF files carry no tokenizer.json: llama.cpp stores the tokenizer as metadata keys.

    tokenizer.ggml.model        "gpt2" = byte-level BPE (the one read here); "llama" = SentencePiece
    tokenizer.ggml.pre          which split regex cuts text into chunks before BPE ("smollm", "llama-bpe", ...)
    tokenizer.ggml.tokens       id -> token, in GPT-2's byte-to-unicode spelling ("Ġthe" is " the")
    tokenizer.ggml.merges       "a b" strings, in merge-priority order
    tokenizer.ggml.token_type   1 normal, 3 control (<|im_start|>, ...), 6 byte, ...
    tokenizer.ggml.{bos,eos,padding,unknown}_token_id, tokenizer.ggml.add_bos_token, tokenizer.chat_template

The tokenizer is assembled the way transformers' GGUF converter (GGUFGPTConverter, built on its
GPT2Converter) assembles it, so the ids are equal to transformers' on the same file
(tests/test_hf_tokenizer.py checks SmolLM2's against committed transformers output):
BPE(vocab, merges) with no unknown token; a ByteLevel pre-tokenizer (GPT-2's split regex, or the
file's own regex in front of it when `tokenizer.ggml.pre` names one that differs); a ByteLevel
decoder; control tokens registered as special added tokens (matched whole in text, skipped when
decoding); a post-processor that prepends bos when add_bos_token is set.

Reference: llama.cpp `gguf-py` (the keys) and transformers `integrations/ggml.py` (the assembly).
"""
from __future__ import annotations

import os

from ..errors import MiniLoraError

TOKEN_TYPE_CONTROL = 3                      # llama.cpp's LLAMA_TOKEN_TYPE_CONTROL

# Split regexes that differ from GPT-2's, by the `tokenizer.ggml.pre` names llama.cpp gives them.
# Any other name (SmolLM2's "smollm" included) gets GPT-2's regex, applied by ByteLevel itself.
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPLIT_REGEX = {"llama3": _LLAMA3, "llama-v3": _LLAMA3, "llama-bpe": _LLAMA3, "falcon3": _LLAMA3,
               "dbrx": _LLAMA3, "smaug-bpe": _LLAMA3, "qwen2": _QWEN2, "deepseek-r1-qwen": _QWEN2}


def read_gguf_tokenizer_fields(path: str) -> dict:
    """path of a .gguf file -> its tokenizer metadata as a dict keyed by the GGUF names (plus general.*)."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise MiniLoraError(f"{path}: reading GGUF files needs the 'gguf' package (pip install gguf)") from None
    if not os.path.isfile(path):
        raise MiniLoraError(f"{path}: no such GGUF file")
    try:
        reader = GGUFReader(path)
    except (ValueError, OSError, IndexError, KeyError) as e:
        raise MiniLoraError(f"{path}: not a readable GGUF file ({e})") from None
    return gguf_tokenizer_fields(reader)


def gguf_tokenizer_fields(reader) -> dict:
    """An open gguf.GGUFReader -> {key: value} for the tokenizer.* and general.architecture keys."""
    return {k: f.contents() for k, f in reader.fields.items()
            if k.startswith("tokenizer.") or k == "general.architecture"}


def build_gguf_tokenizer(fields: dict, path: str = "GGUF file"):
    """Tokenizer metadata (from gguf_tokenizer_fields) -> (tokenizers.Tokenizer, info dict).

    info holds bos/eos/pad/unk_token_id (int or None), chat_template (str or None) and add_bos_token (bool).
    Raises MiniLoraError for a SentencePiece ("llama") or other non-BPE vocabulary, or missing keys.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE

    kind = fields.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise MiniLoraError(f"{path}: tokenizer.ggml.model is {kind!r}; minilora reads only 'gpt2' (byte-level "
                            f"BPE with merges) GGUF vocabularies, not SentencePiece ('llama') or others")
    tokens, merges = fields.get("tokenizer.ggml.tokens"), fields.get("tokenizer.ggml.merges")
    if not tokens or merges is None:
        raise MiniLoraError(f"{path}: the GGUF has no tokenizer.ggml.tokens / tokenizer.ggml.merges")
    vocab = _byte_level_vocab(tokens)
    pairs = [tuple(m.split(" ")) for m in merges]
    if any(len(p) != 2 for p in pairs):
        raise MiniLoraError(f"{path}: a merge is not two tokens separated by one space")
    tok = Tokenizer(BPE(vocab=vocab, merges=pairs, dropout=None, continuing_subword_prefix="",
                        end_of_word_suffix="", fuse_unk=False))
    prefix = bool(fields.get("tokenizer.ggml.add_space_prefix", False))
    split = SPLIT_REGEX.get(fields.get("tokenizer.ggml.pre"))
    if split is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    info = _special_ids(fields, len(tokens), path)
    info["add_bos_token"] = bool(fields.get("tokenizer.ggml.add_bos_token", False)) and info["bos_token_id"] is not None
    if info["add_bos_token"]:
        bos = tokens[info["bos_token_id"]]
        tok.post_processor = processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                                                           special_tokens=[(bos, info["bos_token_id"])])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    types = fields.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    if len(types) != len(tokens):
        raise MiniLoraError(f"{path}: {len(types)} token types for {len(tokens)} tokens")
    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    control = [AddedToken(t, normalized=False, special=True) for t, kind in zip(tokens, types, strict=True)
               if int(kind) == TOKEN_TYPE_CONTROL and set(t) <= alphabet]
    if control:
        tok.add_special_tokens(control)
    info["chat_template"] = fields.get("tokenizer.chat_template") or None
    return tok, info


def _byte_level_vocab(tokens) -> dict:
    """id -> token list as {token: id}, a token outside the byte-level alphabet respelled byte by byte."""
    from tokenizers import pre_tokenizers

    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    spelling = _bytes_to_unicode()
    return {t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
            for i, t in enumerate(tokens)}


def _bytes_to_unicode() -> dict:
    """GPT-2's byte -> printable character table: printable Latin-1 bytes stay, the rest map to 256 + n."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, n = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b], n = chr(256 + n), n + 1
    return table


def _special_ids(fields: dict, n_tokens: int, path: str) -> dict:
    """The bos/eos/pad/unk ids the file states (None when absent), each checked to be a valid id."""
    out = {}
    for name, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown")):
        value = fields.get(f"tokenizer.ggml.{key}_token_id")
        if value is not None and not 0 <= int(value) < n_tokens:
            raise MiniLoraError(f"{path}: tokenizer.ggml.{key}_token_id {value} is outside the vocabulary "
                                f"[0, {n_tokens})")
        out[f"{name}_token_id"] = None if value is None else int(value)
    return out
