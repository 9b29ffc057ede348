"""ByteTokenizer: UTF-8 bytes as tokens, plus three special tokens.

    ids 0..255   the bytes of the UTF-8 encoding
    256          bos (beginning of sequence)
    257          eos (end of sequence)
    258          pad (right padding in batches; never a training target)
    vocab_size = 259 (LlamaConfig's default)

The interface (encode, decode, vocab_size, bos/eos/pad_token_id, chat_template,
apply_chat_template) is the one the rest of minilora asks of a tokenizer; hf_tokenizer.py's
HFTokenizer (tokenizer.json or GGUF vocabularies) has the same one. Every text round-trips: decode(encode(s)) == s.
"""
from __future__ import annotations

from minilora.errors import MiniLoraError

BOS_ID = 256
EOS_ID = 257
PAD_ID = 258
VOCAB_SIZE = 259
SPECIAL_TEXT = {BOS_ID: "<|bos|>", EOS_ID: "<|eos|>", PAD_ID: "<|pad|>"}   # decode(skip_special_tokens=False)


class ByteTokenizer:
    """Byte-level tokenizer: no vocabulary file, no unknown token, no merges."""

    vocab_size = VOCAB_SIZE
    bos_token_id = BOS_ID
    eos_token_id = EOS_ID
    pad_token_id = PAD_ID

    chat_template = None                    # no chat template: apply_chat_template raises

    def encode(self, text: str, add_bos: bool = True, add_eos: bool = False, *,
               add_special_tokens: bool | None = None) -> list[int]:
        """text -> [bos?] + UTF-8 bytes + [eos?] as a list of ints in [0, 259).
        add_special_tokens (the HFTokenizer keyword), when given, decides bos in place of add_bos."""
        if add_special_tokens is not None:
            add_bos = add_special_tokens
        if not isinstance(text, str):
            raise MiniLoraError(f"ByteTokenizer.encode expects a str, got {type(text).__name__}")
        try:
            ids = list(text.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise MiniLoraError(f"text cannot be encoded as UTF-8 ({e.reason} at index {e.start})") from None
        return [BOS_ID] * add_bos + ids + [EOS_ID] * add_eos

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """ids (any iterable of ints) -> text; invalid UTF-8 becomes U+FFFD. bos/eos/pad are skipped,
        or with skip_special_tokens=False written as <|bos|>, <|eos|>, <|pad|>."""
        data = bytearray()
        for i in ids:
            i = int(i)
            if not 0 <= i < VOCAB_SIZE:
                raise MiniLoraError(f"token id {i} is outside the byte vocabulary [0, {VOCAB_SIZE})")
            if i < 256:
                data.append(i)
            elif not skip_special_tokens:
                data += SPECIAL_TEXT[i].encode()
        return data.decode("utf-8", errors="replace")

    def apply_chat_template(self, messages, add_generation_prompt: bool = True, tokenize: bool = True):
        """The byte tokenizer has no chat template: always a MiniLoraError."""
        raise MiniLoraError("the byte tokenizer has no chat template; write the prompt as plain text instead")

    def __repr__(self) -> str:
        return f"ByteTokenizer(vocab_size={VOCAB_SIZE}, bos={BOS_ID}, eos={EOS_ID}, pad={PAD_ID})"
