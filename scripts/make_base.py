"""Pretrain the tiny base model the demo fine-tunes, and write it as a Hugging Face folder.

    python scripts/make_base.py                      # writes minilora/assets/tiny-sentiment-base
    python scripts/make_base.py --check              # retrain and compare bytes with the shipped file

The base is a small Llama trained as a causal LM on unlabelled text of the financial-news domain
(minilora.data.pretraining_corpus): it knows the words, not the sentiment task. Everything is
seeded, so on the same NumPy/BLAS build the written safetensors file is identical byte for byte
(`--check` verifies it; a different BLAS may round matrix products differently).
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # one BLAS thread: the same rounding every run

import argparse  # noqa: E402
import hashlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from minilora.config import LlamaConfig  # noqa: E402
from minilora.data import ByteTokenizer, lm_batches, pretraining_corpus  # noqa: E402
from minilora.io import save_pretrained  # noqa: E402
from minilora.model import LlamaForCausalLM  # noqa: E402
from minilora.training.optim import AdamW, clip_grad_norm, cosine_schedule  # noqa: E402

BASE_DIR = os.path.join(os.path.dirname(__file__), "..", "minilora", "assets", "tiny-sentiment-base")
CONFIG = dict(vocab_size=259, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
              rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
              bos_token_id=256, eos_token_id=257, pad_token_id=258)
N_TEXTS, SEQ_LEN, BATCH, EPOCHS, LR, SEED = 12000, 128, 16, 2, 3e-3, 1234


def pretrain(steps_limit=None, log=print):
    cfg = LlamaConfig(**CONFIG)
    model = LlamaForCausalLM.init(cfg, seed=SEED)
    model.set_full_finetuning()
    tok = ByteTokenizer()
    texts = pretraining_corpus(N_TEXTS, seed=SEED)
    batches = [b for e in range(EPOCHS) for b in lm_batches(texts, tok, SEQ_LEN, BATCH, SEED, e, drop_last=True)]
    if steps_limit:
        batches = batches[:steps_limit]
    opt = AdamW(lr=LR, weight_decay=0.01)
    t0 = time.perf_counter()
    for step, (ids, labels) in enumerate(batches):
        loss, grads = model.loss_and_grads(ids, labels)
        clip_grad_norm(grads, 1.0)
        opt.step(model.params, grads, lr=LR * cosine_schedule(step, len(batches), len(batches) // 20, 0.1))
        if step % 50 == 0 or step == len(batches) - 1:
            log(f"step {step:4d}/{len(batches)}  loss {float(loss):.4f}  {time.perf_counter() - t0:.0f}s")
    model.trainable = set()
    return model


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=BASE_DIR, help="output folder (default: the shipped asset)")
    p.add_argument("--check", action="store_true", help="retrain into a temp folder and compare bytes")
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps (for tests)")
    args = p.parse_args(argv)
    model = pretrain(args.steps)
    if args.check:
        with tempfile.TemporaryDirectory() as d:
            save_pretrained(model, d)
            new, old = sha256(os.path.join(d, "model.safetensors")), sha256(os.path.join(args.out, "model.safetensors"))
        print(f"retrained {new}\nshipped   {old}\n{'identical' if new == old else 'DIFFERENT'}")
        return 0 if new == old else 1
    save_pretrained(model, args.out)
    print(f"wrote {args.out} (sha256 of model.safetensors {sha256(os.path.join(args.out, 'model.safetensors'))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
