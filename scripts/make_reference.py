"""Write the committed reference files tests/reference/<case>.npz from the oracle (transformers + PEFT).

Run by hand, in an environment with the `oracle` extra (torch CPU, transformers, peft):
    PYTHONPATH=. python scripts/make_reference.py            # every case
    PYTHONPATH=. python scripts/make_reference.py gqa tied   # some
tests/test_reference.py then compares minilora against these files with NumPy only (no torch).

For each case, with fixed seeds (<case>/model, <case>/adapter, <case>.npz):
  model/     a tiny random Llama written by minilora's save_pretrained (weights drawn here with NumPy,
             moved off transformers' init so that nothing is near zero or near uniform)
  adapter/   a PEFT LoRA adapter written by PEFT's save_pretrained, its A and B (B nonzero) drawn here
  .npz       what transformers + PEFT compute on that folder and adapter:
               input_ids, labels (B=2, T=8, some -100), logits (B, T, V), loss,
               lora_grad/<name>   d loss / d lora_A, lora_B (PEFT's parameters, minilora's names)
               full_grad/<name>   d loss / d every weight of the base model without the adapter
               merged/<name>      PEFT merge_and_unload() weights of the adapted modules (the others
                                  are the base weights unchanged; checked here)
               prompt, generated  greedy generate() of 8 new tokens, explicit all-ones attention mask;
                                  gen_margin, the smallest top-1 minus top-2 logit gap of any step
               meta               JSON: case settings, library versions
float64 case: stock transformers computes the RMSNorm, the RoPE tables and the loss in float32 even for
a float64 model. Here `float64_transformers()` replaces LlamaRMSNorm.forward and
LlamaRotaryEmbedding.forward by the same formulas without the float32 casts, sets inv_freq to a float64
one computed here from the rope rule (checked equal to transformers' own to float32 precision), runs
attention through SDPA (no float32 softmax) and the loss is torch's cross_entropy on float64 logits.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import peft
import torch
import transformers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from hf_oracle import float64_transformers, load_hf  # noqa: E402

from minilora.config import LlamaConfig
from minilora.io import save_pretrained
from minilora.model import LlamaForCausalLM

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "reference")
LLAMA3 = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 32}   # with theta 100, head_dim 8: all three bands used
ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CASES = {
    "gqa": dict(dtype="float32", seed=1, tied=False, kv_heads=2, theta=10000.0, rope_scaling=None,
                lora=dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])),
    "tied": dict(dtype="float32", seed=2, tied=True, kv_heads=4, theta=10000.0, rope_scaling=None,
                 lora=dict(r=4, lora_alpha=8, target_modules="all-linear")),
    "llama3": dict(dtype="float32", seed=3, tied=False, kv_heads=1, theta=100.0, rope_scaling=LLAMA3,
                   lora=dict(r=4, lora_alpha=8, target_modules=ALL7, rank_pattern={"down_proj": 2},
                             alpha_pattern={"v_proj": 3.0}, use_rslora=True)),
    "llama3_f64": dict(dtype="float64", seed=4, tied=True, kv_heads=2, theta=100.0, rope_scaling=LLAMA3,
                       lora=dict(r=4, lora_alpha=8, target_modules="all-linear")),
}
B, T, VOCAB, NEW_TOKENS = 2, 8, 64, 8


def write_model(case: dict, folder: str):
    """A random tiny Llama (seeded NumPy draws) saved with minilora's own save_pretrained."""
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=case["kv_heads"], max_position_embeddings=64,
                         rope_theta=case["theta"], rms_norm_eps=1e-5, tie_word_embeddings=case["tied"],
                         rope_scaling=case["rope_scaling"])
    rng = np.random.default_rng(case["seed"])
    params = {}
    for name, shape in config.param_shapes().items():
        draw = rng.standard_normal(shape)
        params[name] = (1.0 + 0.2 * draw if name.endswith("norm.weight") else 0.15 * draw).astype(case["dtype"])
    save_pretrained(LlamaForCausalLM(config, params), folder)


def causal_lm_loss(model, logits, labels, dtype: str):
    """transformers' own loss for float32; for float64 the same shift-and-mean in float64."""
    if dtype == "float32":
        return model.loss_function(logits=logits, labels=labels, vocab_size=VOCAB)
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1),
                                             ignore_index=-100)


def minilora_name(peft_name: str) -> str:
    return peft_name.replace("base_model.model.", "", 1).replace(".default.", ".")


def add_peft_adapter(model, case: dict, folder: str):
    """PEFT LoRA with A and B drawn from a seeded generator, saved by PEFT; returns the PeftModel."""
    pm = peft.get_peft_model(model, peft.LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, **case["lora"]))
    rng = np.random.default_rng(100 + case["seed"])
    with torch.no_grad():
        for name, p in sorted(pm.named_parameters()):
            if "lora_" in name:
                std = 0.2 if ".lora_A." in name else 0.1
                p.copy_(torch.from_numpy(std * rng.standard_normal(tuple(p.shape))))
    pm.save_pretrained(folder)
    cfg_path = os.path.join(folder, "adapter_config.json")     # no local temp path in a committed file,
    with open(cfg_path) as f:                                   # target_modules sorted (PEFT writes a set)
        cfg = json.load(f)
    if isinstance(cfg["target_modules"], list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    with open(cfg_path, "w") as f:
        json.dump({**cfg, "base_model_name_or_path": "../model"}, f, indent=2, sort_keys=True)
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(folder, "README.md"))
    return pm.eval()


def batch(seed: int):
    rng = np.random.default_rng(200 + seed)
    ids = rng.integers(0, VOCAB, (B, T))
    labels = ids.copy()
    labels[0, :3] = -100                                     # an ignored prompt, as in fine-tuning
    labels[1, 5] = -100
    return ids, labels


def greedy(pm, prompt: np.ndarray):
    """(generated ids (B, T0 + n), smallest top-1 minus top-2 logit gap over the steps)."""
    ids = torch.from_numpy(prompt)
    with torch.no_grad():
        out = pm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                          min_new_tokens=NEW_TOKENS, do_sample=False, output_scores=True,
                          return_dict_in_generate=True, pad_token_id=0, eos_token_id=None)
    gaps = [float((s.topk(2).values[:, 0] - s.topk(2).values[:, 1]).min()) for s in out.scores]
    return out.sequences.numpy(), min(gaps)


def full_grads(folder: str, dtype: str, ids, labels) -> dict:
    """d loss / d every parameter of the base model (no adapter), named as in its state dict."""
    model = load_hf(folder, dtype)
    for p in model.parameters():
        p.requires_grad_(True)
    logits = model(input_ids=torch.from_numpy(ids)).logits
    causal_lm_loss(model, logits, torch.from_numpy(labels), dtype).backward()
    return {n: p.grad.numpy().copy() for n, p in model.named_parameters()}


def lora_outputs(model_dir: str, adapter_dir: str, case: dict, ids, labels) -> dict:
    """logits, loss, LoRA grads, greedy ids and merged weights of transformers + PEFT."""
    dtype = case["dtype"]
    base = load_hf(model_dir, dtype)
    before = {n: p.detach().numpy().copy() for n, p in base.state_dict().items()}
    pm = add_peft_adapter(base, case, adapter_dir)
    out = pm(input_ids=torch.from_numpy(ids))
    loss = causal_lm_loss(pm, out.logits, torch.from_numpy(labels), dtype)
    loss.backward()
    rec = {"logits": out.logits.detach().numpy(), "loss": np.array(float(loss.detach()), dtype=dtype)}
    grads = {minilora_name(n): p.grad.numpy().copy() for n, p in pm.named_parameters() if p.requires_grad}
    assert grads and all(".lora_" in n for n in grads)
    rec.update({f"lora_grad/{n}": g for n, g in grads.items()})
    rec["prompt"] = ids[:, :4]
    rec["generated"], rec["gen_margin"] = greedy(pm, ids[:, :4])
    adapted = {n.rsplit(".lora_", 1)[0] + ".weight" for n in grads}
    merged = {n: p.detach().numpy() for n, p in pm.merge_and_unload().state_dict().items()}
    for name, w in merged.items():
        if name in adapted:
            assert not np.array_equal(w, before[name]), name
            rec[f"merged/{name}"] = w
        else:
            assert np.array_equal(w, before[name]), f"{name}: PEFT's merge changed an unadapted weight"
    return rec


def record_case(name: str, case: dict, tmp: str, ids, labels) -> dict:
    """Write model/, adapter/ and ref.npz for one case into the folder tmp; returns the record."""
    model_dir, adapter_dir = os.path.join(tmp, "model"), os.path.join(tmp, "adapter")
    write_model(case, model_dir)
    torch.manual_seed(case["seed"])
    patch = float64_transformers() if case["dtype"] == "float64" else contextlib.nullcontext()
    with patch:
        rec = lora_outputs(model_dir, adapter_dir, case, ids, labels)
        rec.update({f"full_grad/{n}": g for n, g in full_grads(model_dir, case["dtype"], ids, labels).items()})
    assert rec["gen_margin"] > 1e-4, f"{name}: a greedy step is a near tie ({rec['gen_margin']:.2e}); change seed"
    meta = {"case": name, **case, "batch": [B, T], "new_tokens": NEW_TOKENS,
            "versions": {m.__name__: m.__version__ for m in (torch, transformers, peft, np)}}
    rec.update(input_ids=ids, labels=labels, meta=np.array(json.dumps(meta)))
    np.savez_compressed(os.path.join(tmp, "ref.npz"), **rec)
    return rec


def make_case(name: str, case: dict):
    """Write tests/reference/<name>.npz and <name>/{model, adapter}, replacing what was there."""
    ids, labels = batch(case["seed"])
    final = os.path.join(OUT, name)
    tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=OUT)
    try:
        rec = record_case(name, case, tmp, ids, labels)
    except BaseException:
        shutil.rmtree(tmp)                                   # never a half-written case
        raise
    os.replace(os.path.join(tmp, "ref.npz"), final + ".npz")
    if os.path.isdir(final):
        shutil.rmtree(final)
    os.rename(tmp, final)
    print(f"{name}: loss {float(rec['loss']):.6f}, {sum(k.startswith('lora_grad/') for k in rec)} LoRA grads, "
          f"greedy margin {rec['gen_margin']:.3g}, generated {rec['generated'][:, 4:].tolist()}")


def main(argv=None):
    names = (argv if argv is not None else sys.argv[1:]) or list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        print(f"unknown case {unknown[0]!r}; choose from {', '.join(CASES)}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    for name in names:
        make_case(name, CASES[name])
    return 0


if __name__ == "__main__":
    sys.exit(main())
