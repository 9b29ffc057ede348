"""A GGUF file's vocabulary -> a Hugging Face `tokenizers.Tokenizer` (byte-level BPE only).

GGUF files carry no tokenizer.json: llama.cpp stores the tokenizer as metadata keys.

    tokenizer.ggml.model        "gpt2" = byte-level BPE (the one read here); "llama" = SentencePiece
    tokenizer.ggml.pre          which split regex cuts text into chunks before BPE ("smollm", "llama-bpe", ...)
    tokenizer.ggml.tokens       id -> token, in GPT-2's byte-to-unicode spelling ("Ġthe" is " the")
    tokenizer.ggml.merges       "a b" strings, in merge-priority order
    tokenizer.ggml.token_type   1 normal, 3 control (<|im_start|>, ...), 6 byte, ...
    tokenizer.ggml.{bos,eos,padding,unknown}_token_id, tokenizer.ggml.add_{bos,eos}_token, tokenizer.chat_template

The tokenizer is assembled the way transformers' GGUF converter (GGUFGPTConverter, built on its
GPT2Converter) assembles it, so the ids are equal to transformers' on the same file
(tests/test_hf_tokenizer.py checks SmolLM2's against committed transformers output):
BPE(vocab, merges) with no unknown token; a ByteLevel pre-tokenizer (GPT-2's split regex, or the
file's own regex in front of it when `tokenizer.ggml.pre` names one that differs); a ByteLevel
decoder; control tokens registered as special added tokens (matched whole in text, skipped when
decoding), user-defined ones as plain added tokens; a post-processor that adds bos / eos when
add_bos_token / add_eos_token say so (used by encode(add_special_tokens=True)).

Reference: llama.cpp `gguf-py` (the keys) and transformers 5's `integrations/gguf/gguf_tokenizer_mapping.py`
(the assembly; `integrations/ggml.py` in transformers 4).
"""
from __future__ import annotations

import os

from minilora.errors import MiniLoraError

TOKEN_TYPE_CONTROL = 3                      # llama.cpp's LLAMA_TOKEN_TYPE_CONTROL
TOKEN_TYPE_USER_DEFINED = 4                 # an added token that is not special (e.g. <think>)

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

    info holds bos/eos/pad/unk_token_id (int or None), chat_template (str or None), add_bos/eos_token (bool).
    Raises MiniLoraError for a SentencePiece ("llama") or other non-BPE vocabulary, or missing keys.
    """
    from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers
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
    split = SPLIT_REGEX.get(fields.get("tokenizer.ggml.pre"))
    if split is None:               # add_space_prefix is a SentencePiece setting: llama.cpp and transformers 5
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)    # ignore it for BPE, so do we
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    info = _special_ids(fields, len(tokens), path)
    tok.post_processor = _post_processor(fields, tokens, info)
    _add_special_tokens(tok, tokens, fields.get("tokenizer.ggml.token_type") or [1] * len(tokens), path)
    info["chat_template"] = fields.get("tokenizer.chat_template") or None
    return tok, info


def _post_processor(fields: dict, tokens, info: dict):
    """bos before / eos after the text when the file's add_bos_token / add_eos_token say so (a no-op otherwise)."""
    from tokenizers import processors

    info["add_bos_token"] = bool(fields.get("tokenizer.ggml.add_bos_token", False)) and info["bos_token_id"] is not None
    info["add_eos_token"] = bool(fields.get("tokenizer.ggml.add_eos_token", False)) and info["eos_token_id"] is not None
    if not (info["add_bos_token"] or info["add_eos_token"]):
        return processors.ByteLevel(trim_offsets=False)
    bos, eos = tokens[info["bos_token_id"] or 0], tokens[info["eos_token_id"] or 0]
    head, tail = f"{bos}:0 " * info["add_bos_token"], f" {eos}:0" * info["add_eos_token"]
    specials = {bos: info["bos_token_id"]} if info["add_bos_token"] else {}
    specials.update({eos: info["eos_token_id"]} if info["add_eos_token"] else {})
    return processors.TemplateProcessing(single=f"{head}$A:0{tail}", pair=f"{head}$A:0{tail} {head}$B:1{tail}",
                                         special_tokens=list(specials.items()))


def _add_special_tokens(tok, tokens, types, path: str) -> None:
    """Control tokens (type 3) become special added tokens, user-defined ones (type 4) plain added tokens:
    both are then matched whole in the text. A control token outside the byte alphabet is a mislabelled byte
    sequence and stays an ordinary token."""
    from tokenizers import AddedToken, pre_tokenizers

    if len(types) != len(tokens):
        raise MiniLoraError(f"{path}: {len(types)} token types for {len(tokens)} tokens")
    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    control = [AddedToken(t, normalized=False, special=True) for t, kind in zip(tokens, types, strict=True)
               if int(kind) == TOKEN_TYPE_CONTROL and set(t) <= alphabet]
    user = [AddedToken(t, normalized=False, special=False) for t, kind in zip(tokens, types, strict=True)
            if int(kind) == TOKEN_TYPE_USER_DEFINED and set(t) <= alphabet]
    if control:
        tok.add_special_tokens(control)
    if user:
        tok.add_tokens(user)


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
