"""ByteTokenizer: UTF-8 bytes as tokens, plus three special tokens.

    ids 0..255   the bytes of the UTF-8 encoding
    256          bos (beginning of sequence)
    257          eos (end of sequence)
    258          pad (right padding in batches; never a training target)
    vocab_size = 259 (LlamaConfig's default)

The interface (encode, decode, vocab_size, bos/eos/pad_token_id) is the one the rest of
minilora asks of a tokenizer, so a wrapper around a Hugging Face `tokenizers.Tokenizer` can
stand in for it later. Every text round-trips: decode(encode(s)) == s.
"""
from __future__ import annotations

from minilora.errors import MiniLoraError

BOS_ID = 256
EOS_ID = 257
PAD_ID = 258
VOCAB_SIZE = 259


class ByteTokenizer:
    """Byte-level tokenizer: no vocabulary file, no unknown token, no merges."""

    vocab_size = VOCAB_SIZE
    bos_token_id = BOS_ID
    eos_token_id = EOS_ID
    pad_token_id = PAD_ID

    def encode(self, text: str, add_bos: bool = True, add_eos: bool = False) -> list[int]:
        """text -> [bos?] + UTF-8 bytes + [eos?] as a list of ints in [0, 259)."""
        if not isinstance(text, str):
            raise MiniLoraError(f"ByteTokenizer.encode expects a str, got {type(text).__name__}")
        try:
            ids = list(text.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise MiniLoraError(f"text cannot be encoded as UTF-8 ({e.reason} at index {e.start})") from None
        return [BOS_ID] * add_bos + ids + [EOS_ID] * add_eos

    def decode(self, ids) -> str:
        """ids (any iterable of ints) -> text; bos/eos/pad are skipped, invalid UTF-8 becomes U+FFFD."""
        data = bytearray()
        for i in ids:
            i = int(i)
            if not 0 <= i < VOCAB_SIZE:
                raise MiniLoraError(f"token id {i} is outside the byte vocabulary [0, {VOCAB_SIZE})")
            if i < 256:
                data.append(i)
        return data.decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"ByteTokenizer(vocab_size={VOCAB_SIZE}, bos={BOS_ID}, eos={EOS_ID}, pad={PAD_ID})"
