"""Generate text from a Llama model (HF folder, .gguf file or registry name), optionally with a PEFT adapter.

MODEL is a Hugging Face folder, a llama GGUF file, or a short name such as smollm2-135m-instruct
(fetched into the cache on first use, see `minilora fetch`). --chat TEXT wraps TEXT as a user turn
in the model's chat template and prints only the answer. Generation stops at the tokenizer's
end-of-sequence token (SmolLM2: <|im_end|>) unless --no-stop.

Uses the folder's tokenizer.json through the `tokenizers` package when the folder has one, else
minilora's byte tokenizer (ids 0..255 bytes, 256 bos, 257 eos, 258 pad; needs vocab_size >= 259).
Greedy by default; --temperature > 0 samples (with --top-k / --top-p) from a generator seeded by
--seed, so a run is reproducible. Decoding uses a KV cache (--no-cache recomputes the prefix at
every step: the slow reference). The prompt and its continuation are printed on stdout;
--timing adds one line with tokens per second on stderr. As in transformers, RoPE has no hard
limit: positions past max_position_embeddings are computed like any other.

Examples:
    minilora generate minilora/assets/tiny-sentiment-base --prompt "Shares of Quanta"
    minilora generate smollm2-135m-instruct --chat "What is the capital of France?" --timing
    minilora generate BASE_DIR --adapter out/sentiment_tiny_8bits_r8 --prompt "Q2 revenue" --max-new-tokens 40
    minilora generate BASE_DIR --prompt "Hello" --temperature 0.8 --top-p 0.9 --seed 1
    minilora generate BASE_DIR --adapter ADAPTER_DIR --merge --prompt "Hello"   # fold the adapter in first
"""
from __future__ import annotations

import os
import sys

from ..errors import MiniLoraError

NAME = "generate"
HELP = "generate text from a Llama model: HF folder, .gguf or registry name (with an optional PEFT adapter)"


def add_arguments(p):
    p.add_argument("model_dir", metavar="MODEL", help="Hugging Face Llama folder, llama .gguf file, or registry "
                   "name (e.g. smollm2-135m-instruct, fetched into the cache if needed)")
    p.add_argument("--adapter", metavar="DIR", default=None, help="PEFT LoRA adapter folder to apply")
    p.add_argument("--merge", action="store_true", help="merge the adapter into the weights before generating")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="text to continue")
    what.add_argument("--chat", metavar="TEXT", help="a user message, wrapped in the model's chat template")
    p.add_argument("--no-stop", action="store_true", help="do not stop at the end-of-sequence token")
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
    from ..data.tokenizer import VOCAB_SIZE, ByteTokenizer

    path = os.path.join(folder, "tokenizer.json")
    if os.path.isfile(path):
        return HFTokenizer(path, config)
    if config.vocab_size < VOCAB_SIZE:
        raise MiniLoraError(f"{folder} has no tokenizer.json and its vocab_size {config.vocab_size} is smaller "
                            f"than the byte tokenizer's {VOCAB_SIZE}")
    return ByteTokenizer()


def _model_tokenizer(path, config):
    """The model's own tokenizer (minilora.data.hf_tokenizer when present, else the folder fallback)."""
    try:
        from ..data.hf_tokenizer import load_tokenizer as load_model_tokenizer
    except ImportError:
        if os.path.isfile(path):
            raise MiniLoraError(f"{path}: reading a GGUF file's tokenizer needs minilora.data.hf_tokenizer") from None
        return load_tokenizer(path, config)
    return load_model_tokenizer(path, config)


def _prompt_ids(tok, args) -> list:
    if args.chat is None:
        return list(tok.encode(args.prompt, True))       # True: add bos (add_bos / add_special_tokens)
    if not getattr(tok, "chat_template", None):
        raise MiniLoraError("--chat needs a tokenizer with a chat template; use --prompt with plain text")
    return list(tok.apply_chat_template([{"role": "user", "content": args.chat}], add_generation_prompt=True))


def run(args) -> int:
    import time

    from ..adapter_io import load_adapter
    from ..adapters import merge_lora
    from ..generate import check_sampling, generate
    from ..io import from_pretrained
    from ..model_registry import resolve_model

    if args.max_new_tokens < 0:
        raise MiniLoraError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    check_sampling(args.temperature, args.top_k, args.top_p)
    if args.merge and not args.adapter:
        raise MiniLoraError("--merge needs --adapter")
    path = resolve_model(args.model_dir)
    model = from_pretrained(path, dtype=args.dtype)
    tok = _model_tokenizer(path, model.config)
    if args.adapter:
        load_adapter(model, args.adapter)
        if args.merge:
            merge_lora(model)
    ids = _prompt_ids(tok, args)
    if not ids:
        raise MiniLoraError("the prompt encodes to no tokens")
    eos = None if args.no_stop else getattr(tok, "eos_token_id", None)
    rng = model.xp.random.default_rng(args.seed)
    t = time.perf_counter()
    out = generate(model, model.xp.asarray(ids), args.max_new_tokens, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, rng=rng, eos_token_id=eos, use_cache=not args.no_cache)
    dt = time.perf_counter() - t
    new = [int(i) for i in out[len(ids):]]
    if eos is not None and new and new[-1] == eos:
        new = new[:-1]                                             # the stop token is not text
    print(tok.decode(new) if args.chat is not None else args.prompt + tok.decode(new))
    if args.timing:
        print(f"{len(new)} tokens in {dt:.3f} s ({len(new) / dt:.1f} tokens/s, "
              f"{'no cache' if args.no_cache else 'KV cache'})", file=sys.stderr)
    return 0
