"""One tokenizer interface for every model: tokenizer.json folders, GGUF vocabularies, the byte tokenizer.

    tok = load_tokenizer(path, config=None)
    tok.encode(text, add_special_tokens=False) -> list[int]
    tok.decode(ids, skip_special_tokens=True) -> str
    tok.bos_token_id, tok.eos_token_id, tok.pad_token_id (int or None), tok.vocab_size (ids are < it)
    tok.chat_template (str or None)
    tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True) -> list[int] (or str)

`path` is a Hugging Face folder (tokenizer.json + tokenizer_config.json [+ chat_template.jinja]),
a tokenizer.json file, a .gguf file (its byte-level BPE vocabulary, gguf_tokenizer.py), or a folder
with no tokenizer file at all: minilora's tiny models, which use the byte tokenizer (tokenizer.py).
With `config` (a LlamaConfig or anything with vocab_size), the tokenizer is checked against the
model with check_vocab: a vocabulary that does not fit is an error, never a silent fallback.

Both HFTokenizer and ByteTokenizer also take encode(text, add_bos=..., add_eos=...), the keywords
minilora's batching uses; portable callers pass every keyword explicitly, since the byte tokenizer
adds bos by default (its historical behaviour) and a Hugging Face tokenizer adds nothing by default.
"""
from __future__ import annotations

import json
import os

from minilora.data.chat_template import render_chat_template
from minilora.data.tokenizer import VOCAB_SIZE as BYTE_VOCAB_SIZE
from minilora.data.tokenizer import ByteTokenizer
from minilora.errors import MiniLoraError

BYTE_VOCAB_MAX = 512    # a model with more ids than this was trained with a tokenizer of its own, not bytes
_SPECIALS = ("bos", "eos", "pad", "unk")


class HFTokenizer:
    """A `tokenizers.Tokenizer` plus the special tokens and chat template a model ships with it."""

    def __init__(self, tokenizer, bos_token_id=None, eos_token_id=None, pad_token_id=None, unk_token_id=None,
                 chat_template=None, source="tokenizer"):
        self.tok = tokenizer                                        # tokenizers.Tokenizer
        self.bos_token_id, self.eos_token_id = bos_token_id, eos_token_id
        self.pad_token_id, self.unk_token_id = pad_token_id, unk_token_id
        self.chat_template = chat_template
        self.source = str(source)
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values()) + 1 if vocab else 0  # one past the largest id

    def _text(self, token_id):
        return None if token_id is None else self.tok.id_to_token(token_id)

    @property
    def bos_token(self):
        return self._text(self.bos_token_id)

    @property
    def eos_token(self):
        return self._text(self.eos_token_id)

    def encode(self, text: str, add_special_tokens: bool = False, *, add_bos: bool = False,
               add_eos: bool = False) -> list[int]:
        """text -> ids. add_special_tokens: what tokenizer.json's post-processor adds (e.g. a Llama bos);
        add_bos / add_eos: prepend bos / append eos explicitly (when the tokenizer has them)."""
        if not isinstance(text, str):
            raise MiniLoraError(f"encode expects a str, got {type(text).__name__}")
        ids = self.tok.encode(text, add_special_tokens=bool(add_special_tokens)).ids
        head = [self.bos_token_id] if add_bos and self.bos_token_id is not None else []
        tail = [self.eos_token_id] if add_eos and self.eos_token_id is not None else []
        return head + ids + tail

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """ids (any iterable of ints) -> text; special tokens are dropped unless skip_special_tokens=False."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise MiniLoraError(f"token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
        return self.tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages, add_generation_prompt: bool = True, tokenize: bool = True):
        """[{"role", "content"}, ...] -> the prompt ids (its text if tokenize=False), rendered as transformers does."""
        if not self.chat_template:
            raise MiniLoraError(f"{self.source} has no chat template; write the prompt as plain text instead")
        text = render_chat_template(self.chat_template, messages, add_generation_prompt,
                                    bos_token=self.bos_token, eos_token=self.eos_token,
                                    pad_token=self._text(self.pad_token_id), unk_token=self._text(self.unk_token_id))
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def __repr__(self) -> str:
        return (f"HFTokenizer({self.source}, vocab_size={self.vocab_size}, bos={self.bos_token_id}, "
                f"eos={self.eos_token_id}, pad={self.pad_token_id}, chat_template={self.chat_template is not None})")


def load_tokenizer(path, config=None):
    """A model's tokenizer from a folder, a tokenizer.json, or a .gguf file (see the module docstring).

    config: optional model config (anything with vocab_size, optionally bos/eos/pad_token_id); when
    given, the tokenizer must fit it (check_vocab) and fills in special ids the tokenizer files omit.
    Returns an HFTokenizer, or a ByteTokenizer for a folder with no tokenizer file.
    """
    path = os.fspath(path)
    if os.path.isfile(path) and path.lower().endswith(".gguf"):
        tok = _from_gguf(path)
    elif os.path.isfile(path):
        tok = _from_tokenizer_json(path, os.path.dirname(path) or ".", config)
    elif os.path.isdir(path):
        tj = os.path.join(path, "tokenizer.json")
        if os.path.isfile(tj):
            tok = _from_tokenizer_json(tj, path, config)
        elif os.path.isfile(os.path.join(path, "tokenizer.model")):
            raise MiniLoraError(f"{path} has only a SentencePiece tokenizer.model; minilora reads tokenizer.json "
                                f"(save one with transformers' tokenizer.save_pretrained) or a GGUF vocabulary")
        else:
            config = config if config is not None else _folder_config(path)
            if config is None:
                raise MiniLoraError(f"{path} has no tokenizer.json, and no config.json to tell whether minilora's "
                                    f"byte tokenizer fits its model")
            tok = ByteTokenizer()
    else:
        raise MiniLoraError(f"{path}: no such tokenizer folder or file")
    if config is not None:
        check_vocab(tok, config)
    return tok


def check_vocab(tokenizer, config) -> None:
    """Raise MiniLoraError unless every id the tokenizer can produce is an id of the model (config.vocab_size).

    The byte tokenizer also fits only byte-level models (vocab_size in [259, 512]): a real model's
    vocabulary would accept its ids and learn nonsense from them, silently.
    """
    n = getattr(config, "vocab_size", None)
    if n is None and isinstance(config, dict):
        n = config.get("vocab_size")
    if not isinstance(n, int) or n <= 0:
        raise MiniLoraError(f"cannot check the tokenizer: the model config has no valid vocab_size ({n!r})")
    if isinstance(tokenizer, ByteTokenizer):
        if not BYTE_VOCAB_SIZE <= n <= BYTE_VOCAB_MAX:
            raise MiniLoraError(f"the byte tokenizer (ids < {BYTE_VOCAB_SIZE}) does not fit a model with vocab_size "
                                f"{n}; a model with its own vocabulary needs its tokenizer.json or GGUF vocabulary")
        return
    if tokenizer.vocab_size > n:
        raise MiniLoraError(f"the tokenizer ({getattr(tokenizer, 'source', 'tokenizer')}) has ids up to "
                            f"{tokenizer.vocab_size - 1}, more than the model's vocab_size {n} holds: "
                            f"they are not the same model's files")


def _from_gguf(path) -> HFTokenizer:
    from minilora.data.gguf_tokenizer import read_gguf_tokenizer_fields

    return _from_gguf_fields(read_gguf_tokenizer_fields(path), path)


def tokenizer_from_gguf_reader(reader, source="GGUF file") -> HFTokenizer:
    """The tokenizer of a GGUF file already open as a gguf.GGUFReader (opening one costs seconds: share it)."""
    from minilora.data.gguf_tokenizer import gguf_tokenizer_fields

    return _from_gguf_fields(gguf_tokenizer_fields(reader), str(source))


def _from_gguf_fields(fields, path) -> HFTokenizer:
    from minilora.data.gguf_tokenizer import build_gguf_tokenizer

    tok, info = build_gguf_tokenizer(fields, path)
    return HFTokenizer(tok, **{f"{s}_token_id": info[f"{s}_token_id"] for s in _SPECIALS},
                       chat_template=info["chat_template"], source=path)


def _from_tokenizer_json(path, folder, config) -> HFTokenizer:
    """tokenizer.json + the folder's tokenizer_config.json (special tokens, chat template) -> HFTokenizer."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise MiniLoraError(f"{path} needs the 'tokenizers' package (pip install tokenizers)") from None
    try:
        tok = Tokenizer.from_file(path)
    except Exception as e:  # noqa: BLE001 - the package raises its own exception type
        raise MiniLoraError(f"{path}: cannot read tokenizer ({str(e).splitlines()[0] if str(e) else e})") from None
    tc = _read_json(os.path.join(folder, "tokenizer_config.json"))
    ids = {}
    for s in _SPECIALS:
        text = _token_text(tc.get(f"{s}_token"), path)
        ids[s] = tok.token_to_id(text) if text is not None else None
        if text is not None and ids[s] is None:
            raise MiniLoraError(f"{folder}: tokenizer_config.json's {s}_token {text!r} is not in {path}")
        if ids[s] is None and isinstance(getattr(config, f"{s}_token_id", None), int):
            ids[s] = getattr(config, f"{s}_token_id")
    return HFTokenizer(tok, **{f"{s}_token_id": ids[s] for s in _SPECIALS},
                       chat_template=_chat_template(tc, folder), source=path)


def _token_text(value, where):
    """A special token as tokenizer_config.json states it (a str or an AddedToken dict) -> its text, or None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise MiniLoraError(f"{where}: a special token in tokenizer_config.json is neither a str nor a "
                        f"{{'content': ...}} dict: {value!r:.80}")


def _chat_template(tc: dict, folder: str):
    """The chat template: chat_template.jinja beside the tokenizer, else tokenizer_config.json's (str or named list)."""
    jinja = os.path.join(folder, "chat_template.jinja")
    if os.path.isfile(jinja):
        with open(jinja, encoding="utf-8") as f:
            return f.read()
    t = tc.get("chat_template")
    if isinstance(t, list):                 # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {d.get("name"): d.get("template") for d in t if isinstance(d, dict)}
        t = named.get("default")
    if t is not None and not isinstance(t, str):
        raise MiniLoraError(f"{folder}: tokenizer_config.json's chat_template is not a string")
    return t or None


def _read_json(path) -> dict:
    """A JSON object file -> dict ({} when the file is absent); a bad file is a MiniLoraError."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MiniLoraError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise MiniLoraError(f"{path}: expected a JSON object, got {type(d).__name__}")
    return d


def _folder_config(folder):
    """The folder's config.json as a dict (for its vocab_size), or None when it has none."""
    d = _read_json(os.path.join(folder, "config.json"))
    return d or None
