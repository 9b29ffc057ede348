"""Reference values for SmolLM2-135M-Instruct from transformers (the oracle), for tests/test_gguf.py.

Runs in an environment with torch, transformers and gguf (not minilora's runtime): transformers
reads the same GGUF file through the `gguf` package, dequantizes it and undoes llama.cpp's q/k
row order with its own code. Written: the chat prompt's ids (transformers' tokenizer and chat
template), the last position's logits for the first 64 vocabulary entries, max-abs statistics, and
24 greedy tokens (generated with an explicit all-ones attention mask: SmolLM2's pad token is its
<|im_end|>, which the chat template puts inside the prompt).

    PYTHONPATH=. /work/oracle-venv/bin/python scripts/smollm2_reference.py [--gguf PATH]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "reference", "smollm2_logits.json")
QUESTION = "Give me three tips for staying healthy."
N_GREEDY, N_HEAD = 24, 64


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gguf", default=None, help="the GGUF file (default: minilora's cached smollm2-135m-instruct)")
    p.add_argument("--out", default=OUT, help="output JSON (default tests/reference/smollm2_logits.json)")
    args = p.parse_args(argv)
    path = args.gguf
    if path is None:
        sys.path.insert(0, os.path.join(HERE, ".."))
        from minilora.runs.registry import resolve_model
        path = resolve_model("smollm2-135m-instruct", fetch_missing=False)

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    ids = tok.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True)
    ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0]          # (T, V)
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=N_GREEDY, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    greedy = out[0, len(ids):].tolist()
    if len(greedy) != N_GREEDY or tok.eos_token_id in greedy:
        raise SystemExit(f"the greedy answer ended before {N_GREEDY} tokens; choose a longer question")
    last = logits[-1]
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    ref = {
        "about": "transformers reading the GGUF (scripts/smollm2_reference.py); float32",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "gguf_sha256": sha, "question": QUESTION, "input_ids": ids,
        "last_logits_head": [round(float(v), 7) for v in last[:N_HEAD]],
        "last_logits_max_abs": float(last.abs().max()), "last_argmax": int(last.argmax()),
        "all_logits_max_abs": float(logits.abs().max()),
        "greedy_ids": greedy, "greedy_text": tok.decode(greedy),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {len(ids)} prompt ids, answer {ref['greedy_text']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
