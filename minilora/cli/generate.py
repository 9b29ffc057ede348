"""Generate text from a Llama model (HF folder, .gguf file or registry name), optionally with a PEFT adapter.

MODEL is a Hugging Face folder, a llama GGUF file, or a short name such as smollm2-135m-instruct
(fetched into the cache on first use, see `minilora fetch`). --chat TEXT wraps TEXT as a user turn
in the model's chat template and prints only the answer. Generation stops at the tokenizer's
end-of-sequence token (SmolLM2: <|im_end|>) unless --no-stop.

The model's own tokenizer is used (minilora.load_tokenizer: the folder's tokenizer.json, the GGUF's
vocabulary, or for the tiny byte-level models the byte tokenizer); one that does not fit the
model's vocabulary is an error, never a silent fallback.
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

import sys

from minilora.errors import MiniLoraError

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


def _prompt_ids(tok, args) -> list:
    if args.chat is None:
        return list(tok.encode(args.prompt, True))       # True: add bos (add_bos / add_special_tokens)
    if not getattr(tok, "chat_template", None):
        raise MiniLoraError("--chat needs a tokenizer with a chat template; use --prompt with plain text")
    return list(tok.apply_chat_template([{"role": "user", "content": args.chat}], add_generation_prompt=True))


def run(args) -> int:
    import time

    from minilora.adapters import merge_lora
    from minilora.data.hf_tokenizer import load_tokenizer
    from minilora.inference.generate import check_sampling, generate
    from minilora.io import from_pretrained
    from minilora.io.peft import load_adapter
    from minilora.runs.registry import resolve_model

    if args.max_new_tokens < 0:
        raise MiniLoraError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if args.seed < 0:
        raise MiniLoraError(f"--seed must be >= 0, got {args.seed}")
    check_sampling(args.temperature, args.top_k, args.top_p)
    if args.merge and not args.adapter:
        raise MiniLoraError("--merge needs --adapter")
    path = resolve_model(args.model_dir)
    model = from_pretrained(path, dtype=args.dtype)
    tok = load_tokenizer(path, model.config)
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
