"""Generate text from a Hugging Face Llama folder, optionally with a PEFT LoRA adapter on top.

Uses the folder's tokenizer.json through the `tokenizers` package when the folder has one, else
minilora's byte tokenizer (ids 0..255 bytes, 256 bos, 257 eos, 258 pad; needs vocab_size >= 259).
Greedy by default; --temperature > 0 samples (with --top-k / --top-p) from a generator seeded by
--seed, so a run is reproducible. Decoding uses a KV cache (--no-cache recomputes the prefix at
every step: the slow reference). The prompt and its continuation are printed on stdout;
--timing adds one line with tokens per second on stderr. As in transformers, RoPE has no hard
limit: positions past max_position_embeddings are computed like any other.

Examples:
    minilora generate minilora/assets/tiny-sentiment-base --prompt "Shares of Quanta"
    minilora generate BASE_DIR --adapter out/sentiment_tiny_8bits_r8 --prompt "Q2 revenue" --max-new-tokens 40
    minilora generate BASE_DIR --prompt "Hello" --temperature 0.8 --top-p 0.9 --seed 1
    minilora generate BASE_DIR --adapter ADAPTER_DIR --merge --prompt "Hello"   # fold the adapter in first
"""
from __future__ import annotations

import os
import sys

from minilora.errors import MiniLoraError

NAME = "generate"
HELP = "generate text from a Hugging Face Llama folder (with an optional PEFT adapter)"


def add_arguments(p):
    p.add_argument("model_dir", metavar="MODEL_DIR", help="Hugging Face Llama folder (config.json + safetensors)")
    p.add_argument("--adapter", metavar="DIR", default=None, help="PEFT LoRA adapter folder to apply")
    p.add_argument("--merge", action="store_true", help="merge the adapter into the weights before generating")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate at most (default 64)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-k", type=int, default=None, help="sample only among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="sample only within the top-p probability mass")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling generator (default 0)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"), help="compute dtype")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole prefix each step (slow)")
    p.add_argument("--timing", action="store_true", help="print tokens/s on stderr")


class HFTokenizer:
    """A tokenizer.json (Hugging Face `tokenizers`) behind ByteTokenizer's encode/decode interface."""

    def __init__(self, path, config):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise MiniLoraError(f"{path} needs the 'tokenizers' package (pip install tokenizers)") from None
        try:
            self.tok = Tokenizer.from_file(path)
        except Exception as e:  # noqa: BLE001 - the package raises its own exception type
            raise MiniLoraError(f"{path}: cannot read tokenizer ({str(e).splitlines()[0]})") from None
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        self.eos_token_id = config.eos_token_id

    def encode(self, text: str, add_bos: bool = True) -> list:
        return self.tok.encode(text, add_special_tokens=add_bos).ids

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)


def load_tokenizer(folder, config):
    """The folder's tokenizer.json when present, else the byte tokenizer (checked against the vocab)."""
    from minilora.data.tokenizer import VOCAB_SIZE, ByteTokenizer

    path = os.path.join(folder, "tokenizer.json")
    if os.path.isfile(path):
        return HFTokenizer(path, config)
    if config.vocab_size < VOCAB_SIZE:
        raise MiniLoraError(f"{folder} has no tokenizer.json and its vocab_size {config.vocab_size} is smaller "
                            f"than the byte tokenizer's {VOCAB_SIZE}")
    return ByteTokenizer()


def run(args) -> int:
    import time

    from minilora.adapters import merge_lora
    from minilora.inference.generate import check_sampling, generate
    from minilora.io import from_pretrained
    from minilora.io.peft import load_adapter

    if args.max_new_tokens < 0:
        raise MiniLoraError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    check_sampling(args.temperature, args.top_k, args.top_p)
    if args.merge and not args.adapter:
        raise MiniLoraError("--merge needs --adapter")
    model = from_pretrained(args.model_dir, dtype=args.dtype)
    tok = load_tokenizer(args.model_dir, model.config)
    if args.adapter:
        load_adapter(model, args.adapter)
        if args.merge:
            merge_lora(model)
    ids = tok.encode(args.prompt)
    if not ids:
        raise MiniLoraError("the prompt encodes to no tokens")
    eos = getattr(tok, "eos_token_id", None)
    rng = model.xp.random.default_rng(args.seed)
    t = time.perf_counter()
    out = generate(model, model.xp.asarray(ids), args.max_new_tokens, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, rng=rng, eos_token_id=eos, use_cache=not args.no_cache)
    dt = time.perf_counter() - t
    new = [int(i) for i in out[len(ids):]]
    print(args.prompt + tok.decode(new))
    if args.timing:
        print(f"{len(new)} tokens in {dt:.3f} s ({len(new) / dt:.1f} tokens/s, "
              f"{'no cache' if args.no_cache else 'KV cache'})", file=sys.stderr)
    return 0
