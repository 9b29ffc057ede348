"""Checks for a machine with a GPU (scripts/gpu_check.sh runs them all): run-to-run determinism and
exact resume on CuPy, float16 training, and the real model against transformers' reference.

    python scripts/gpu_checks.py determinism     # LoRA twice, resume, full fine-tuning twice
    python scripts/gpu_checks.py float16         # a float16 LoRA trains 20 steps; float16 vs float32 loss
    python scripts/gpu_checks.py real-model      # SmolLM2 on CuPy vs tests/reference/smollm2_logits.json

Each prints one JSON object and exits 1 when a check that must hold fails. MINILORA_CUPY_STANDIN=1
runs them against the test suite's CuPy stand-in (tests/cupy_standin.py), a dry run without a GPU.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
if os.environ.get("MINILORA_CUPY_STANDIN"):
    sys.path.insert(0, str(ROOT / "tests"))
    import cupy_standin

    cupy_standin.install_for_process()

from minilora.adapters import LoraConfig, add_lora  # noqa: E402
from minilora.backend import asarray, get_xp, to_numpy  # noqa: E402
from minilora.config import LlamaConfig  # noqa: E402
from minilora.model import LlamaForCausalLM  # noqa: E402
from minilora.training import TrainConfig, TrainingInterrupted, fit  # noqa: E402

CFG = LlamaConfig(vocab_size=259, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2)


def _examples(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return [(ids, [-100] * 3 + ids[3:]) for ids in
            ([int(x) for x in rng.integers(0, 256, int(rng.integers(8, 20)))] for _ in range(n))]


def _lora_model(xp, dtype="float32", dropout=0.1):
    m = LlamaForCausalLM.init(CFG, seed=1, dtype=dtype, xp=xp, initializer_range=0.1)
    add_lora(m, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=dropout), seed=2)
    return m


def _same(a: dict, b: dict) -> bool:
    return all(np.array_equal(to_numpy(a[k]), to_numpy(b[k])) for k in a)


def determinism(xp, epochs=2) -> dict:
    """LoRA with dropout twice, bit for bit; an interrupted run resumed; full fine-tuning twice."""
    ex, cfg = _examples(), TrainConfig(learning_rate=1e-2, num_epochs=epochs, batch_size=4, seed=3)
    runs = []
    for _ in range(2):
        m = _lora_model(xp)
        runs.append((fit(m, ex, cfg, progress=False).losses, {n: m.params[n] for n in m.trainable}))
    out = {"lora_runs_equal": runs[0][0] == runs[1][0] and _same(runs[0][1], runs[1][1])}
    with tempfile.TemporaryDirectory() as tmp:
        m = _lora_model(xp)
        real, calls = m.loss_and_grads, [0]

        def stop_at_5(*a, **kw):
            calls[0] += 1
            if calls[0] == 5:
                raise KeyboardInterrupt
            return real(*a, **kw)
        m.loss_and_grads = stop_at_5
        try:
            fit(m, ex, cfg, progress=False, checkpoint_dir=tmp)
        except TrainingInterrupted:
            pass
        r = _lora_model(xp)
        res = fit(r, ex, cfg, progress=False, checkpoint_dir=tmp, resume_from=tmp)
        out["resume_equal"] = res.losses == runs[0][0] and _same({n: r.params[n] for n in r.trainable}, runs[0][1])
    full = []
    for _ in range(2):
        m = LlamaForCausalLM.init(CFG, seed=1, dtype="float32", xp=xp, initializer_range=0.1)
        m.set_full_finetuning()
        full.append((fit(m, ex, cfg, progress=False).losses, m.params["model.embed_tokens.weight"]))
    diff = float(np.max(np.abs(to_numpy(full[0][1]) - to_numpy(full[1][1]))))
    out.update(full_runs_equal=full[0][0] == full[1][0], full_embedding_max_abs_diff=diff)
    out["ok"] = out["lora_runs_equal"] and out["resume_equal"]    # full fine-tuning: reported, may differ
    return out


def float16(xp, steps=20) -> dict:
    """A float16 LoRA trains `steps` optimizer steps without a NaN; its first loss is float32's to 1e-2."""
    ex = _examples(n=4 * steps)
    cfg = TrainConfig(learning_rate=1e-2, num_epochs=1, batch_size=4)
    res = {}
    for dtype in ("float16", "float32"):
        m = _lora_model(xp, dtype)
        r = fit(m, ex, cfg, progress=False)
        res[dtype] = r.losses
    first = abs(res["float16"][0] - res["float32"][0]) / res["float32"][0]
    finite = all(math.isfinite(x) for x in res["float16"])
    return {"steps": len(res["float16"]), "finite": finite, "first_loss_rel_diff": first,
            "last_loss": {k: v[-1] for k, v in res.items()},
            "ok": finite and len(res["float16"]) == steps and first < 1e-2 and res["float16"][-1] < res["float16"][0]}


def real_model(xp, tokens=24) -> dict:
    """SmolLM2-135M-Instruct (the cached GGUF) on xp against transformers' logits and greedy tokens."""
    from minilora.inference.generate import generate
    from minilora.io import from_pretrained
    from minilora.runs.registry import resolve_model

    ref = json.loads((ROOT / "tests" / "reference" / "smollm2_logits.json").read_text())
    try:
        model = from_pretrained(resolve_model("smollm2-135m-instruct", fetch_missing=False))
    except Exception as e:  # no GGUF here ($MINILORA_CACHE names the folder): time its shapes only
        return {"reference": f"skipped, {type(e).__name__}: {e}", **_random_smollm2(xp, ref, tokens), "ok": True}
    model.to(xp)
    ids = asarray(np.array(ref["input_ids"])[None], xp)
    sync = xp.cuda.Stream.null.synchronize if xp.__name__ == "cupy" else (lambda: None)
    model.forward(ids)
    sync()
    t = time.perf_counter()
    logits = to_numpy(model.forward(ids))[0]                                       # (T, V)
    prefill = time.perf_counter() - t
    last, scale = logits[-1], ref["last_logits_max_abs"]
    head_err = float(np.max(np.abs(last[:len(ref["last_logits_head"])] - np.array(ref["last_logits_head"]))))
    t = time.perf_counter()
    out = to_numpy(generate(model, ids[0], tokens))
    gen = time.perf_counter() - t
    greedy = [int(i) for i in out[len(ref["input_ids"]):]]
    return {"prefill_s": prefill, "generate_tok_s": tokens / gen, "head_max_abs_err": head_err,
            "head_rel_err": head_err / scale, "argmax_equal": int(last.argmax()) == ref["last_argmax"],
            "greedy_equal": greedy == ref["greedy_ids"][:tokens],
            "ok": head_err <= 1e-3 * scale and greedy == ref["greedy_ids"][:tokens]}


def _random_smollm2(xp, ref, tokens) -> dict:
    """Prefill and generation speed of a random model with SmolLM2-135M's config (no reference)."""
    from minilora.inference.generate import generate

    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, rope_theta=100000.0, tie_word_embeddings=True,
                      max_position_embeddings=2048)
    model = LlamaForCausalLM.init(cfg, seed=0, xp=xp, initializer_range=0.04)
    ids = asarray(np.array(ref["input_ids"])[None], xp)
    sync = xp.cuda.Stream.null.synchronize if xp.__name__ == "cupy" else (lambda: None)
    model.forward(ids)
    sync()
    t = time.perf_counter()
    model.forward(ids)
    sync()
    prefill = time.perf_counter() - t
    t = time.perf_counter()
    generate(model, ids[0], tokens)
    sync()
    return {"random_smollm2_prefill_s": prefill, "random_smollm2_generate_tok_s": tokens / (time.perf_counter() - t)}


def main():
    checks = {"determinism": determinism, "float16": float16, "real-model": real_model}
    if len(sys.argv) != 2 or sys.argv[1] not in checks:
        sys.exit(f"usage: gpu_checks.py {{{'|'.join(checks)}}}")
    xp = get_xp("cupy")
    t = time.perf_counter()
    out = checks[sys.argv[1]](xp)
    out["seconds"] = round(time.perf_counter() - t, 1)
    print(json.dumps({sys.argv[1]: out}))
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
