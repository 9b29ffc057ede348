"""Train the LoRA adapters that notebook 08 analyses, on SmolLM2-135M-Instruct, reproducibly.

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python scripts/train_real_adapters.py

Training on the real model takes minutes per adapter on one core, more than a notebook may run
(90 s), so this script trains them once and the notebook loads them. It writes, into
notebooks/assets/smollm2_adapters/ (--out):
    r8_init0/ r64_init1/ r8_init2/   PEFT adapter folders (adapter_config.json + adapter_model.safetensors)
    MANIFEST.json               the command, every setting, the losses, the time, and each file's sha256

The setup is the LoRA paper's Figure 3 (Hu et al., 2021, section 7.2): two adapters of rank 8 and
64 on W_q and W_v, trained on the same data in the same order from the same frozen base. To keep
the files small (float32, at most 5 MB in all), only the q_proj and v_proj of a subset of layers
are adapted (--layers, default 0, 6, 12, 18, 24, 29): r=64 there is 6 x 122,880 floats = 2.9 MB.
A third adapter, r=8 from another initialisation, is the control: how alike two runs of the same
rank are (the paper's Figure 4 compares seeds).
The base is the GGUF's weights dequantized to float32 (minilora.io.from_pretrained), the one W the
notebook compares delta W with. Each adapter's A is drawn from its own seed (--init-seeds), so
their initial subspaces are independent (with one seed, the first module's A at r=64 would start
with A at r=8 as its first rows); the data order is one seed (--data-seed) for both.
Loss on the answer tokens only (the label and the end-of-turn token), prompts in the chat template.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import sys
import time

import numpy as np

from minilora.adapters import LoraConfig, add_lora, remove_lora, trainable_summary
from minilora.data.formats import encode_records, load_records
from minilora.data.hf_tokenizer import load_tokenizer
from minilora.io import from_pretrained
from minilora.io.atomic import atomic_dir, write_json
from minilora.io.peft import save_adapter
from minilora.runs.registry import ROOT, resolve_model
from minilora.training.loop import TrainConfig, fit

MODEL = "smollm2-135m-instruct"
DEFAULT_OUT = os.path.join(ROOT, "notebooks", "assets", "smollm2_adapters")
DATA = os.path.join(ROOT, "data", "sentiment_train.jsonl")


def target_regex(layers) -> str:
    """The regex that picks q_proj and v_proj of the given layers (PEFT's target_modules as a string)."""
    return rf"model\.layers\.({'|'.join(str(i) for i in layers)})\.self_attn\.(q_proj|v_proj)"


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=DEFAULT_OUT, help="output folder (replaced as a whole)")
    p.add_argument("--ranks", default="8,64,8", help="comma-separated ranks, one adapter each")
    p.add_argument("--init-seeds", default="0,1,2", help="A's initialisation seed of each adapter")
    p.add_argument("--data-seed", type=int, default=0, help="the data order (the same for every adapter)")
    p.add_argument("--layers", default="0,6,12,18,24,29", help="layers whose q_proj and v_proj are adapted")
    p.add_argument("--rows", type=int, default=800, help="first rows of data/sentiment_train.jsonl")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--alpha", type=float, default=16.0, help="lora_alpha (scale alpha/r, as the paper)")
    return p.parse_args(argv)


def train_one(model, examples, r, init_seed, args, regex) -> dict:
    """Add one adapter, train it, return its record (the adapter stays on the model)."""
    cfg = LoraConfig(r=r, lora_alpha=args.alpha, target_modules=regex, init_lora_weights="kaiming")
    add_lora(model, cfg, seed=init_seed)
    s = trainable_summary(model)
    tc = TrainConfig(learning_rate=args.lr, batch_size=args.batch, seed=args.data_seed, warmup_ratio=0.1)
    t0, c0 = time.perf_counter(), time.process_time()
    res = fit(model, examples, tc, progress=True, desc=f"r={r}")
    return {"r": r, "init_seed": init_seed, "trainable": s["trainable"], "steps": res.steps,
            "seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1),
            "loss_first": res.losses[0], "loss_last": res.losses[-1],
            "loss_mean_first10": float(np.mean(res.losses[:10])),
            "loss_mean_last10": float(np.mean(res.losses[-10:]))}


def main(argv=None) -> int:
    args = parse_args(argv)
    ranks = [int(x) for x in args.ranks.split(",")]
    seeds = [int(x) for x in args.init_seeds.split(",")]
    layers = [int(x) for x in args.layers.split(",")]
    if len(ranks) != len(seeds):
        print("train_real_adapters: error: --ranks and --init-seeds differ in length", file=sys.stderr)
        return 2
    regex = target_regex(layers)
    t_start = time.perf_counter()
    path = resolve_model(MODEL)
    model = from_pretrained(path, seed=0)
    tok = load_tokenizer(path, model.config)
    rows, _ = load_records(DATA)
    rows = rows[:args.rows]
    examples = encode_records(rows, tok, model.config.max_position_embeddings, False, where=DATA)
    print(f"{len(examples)} rows, {sum(len(e[0]) for e in examples) / len(examples):.1f} tokens each; "
          f"targets {regex}", flush=True)
    adapters = {}
    with atomic_dir(args.out, None, overwrite=True) as tmp:
        for r, seed in zip(ranks, seeds, strict=True):
            rec = train_one(model, examples, r, seed, args, regex)
            name = f"r{r}_init{seed}"
            save_adapter(model, os.path.join(tmp, name), base_model_name_or_path=MODEL)
            remove_lora(model)
            adapters[name] = rec
            print(json.dumps({name: rec}), flush=True)
        files = {}
        for name in adapters:
            for fn in sorted(os.listdir(os.path.join(tmp, name))):
                p = os.path.join(tmp, name, fn)
                files[f"{name}/{fn}"] = {"sha256": sha256(p), "bytes": os.path.getsize(p)}
        manifest = {
            "command": ("OPENBLAS_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python scripts/train_real_adapters.py "
                        + shlex.join(argv if argv is not None else sys.argv[1:])).rstrip(),
            "model": MODEL, "model_file": os.path.basename(path), "model_sha256": sha256(path),
            "base": "the GGUF's weights dequantized to float32 (minilora.io.from_pretrained)",
            "data": "data/sentiment_train.jsonl", "rows": len(examples), "batch_size": args.batch,
            "epochs": 1, "learning_rate": args.lr, "warmup_ratio": 0.1, "schedule": "linear warmup + cosine",
            "optimizer": "AdamW, weight decay 0, grad clip 1.0", "lora_alpha": args.alpha,
            "init": "kaiming (PEFT's default: A ~ U(+-1/sqrt(in)), B = 0)", "data_seed": args.data_seed,
            "layers": layers, "target_modules": regex, "loss": "answer tokens only, chat template",
            "adapters": adapters, "files": files, "total_bytes": sum(f["bytes"] for f in files.values()),
            "total_seconds": round(time.perf_counter() - t_start, 1),
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"), "numpy": np.__version__,
            "python": platform.python_version(), "load_average_at_end": os.getloadavg()}
        write_json(os.path.join(tmp, "MANIFEST.json"), manifest)
    print(f"wrote {args.out} ({manifest['total_bytes'] / 2**20:.2f} MB of adapters) in "
          f"{manifest['total_seconds']:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
