"""minilora against committed transformers + PEFT outputs (tests/reference/), with NumPy only.

The torch-free counterpart of tests/test_interop_hf.py, as llm.c compares against a file PyTorch wrote:
scripts/make_reference.py (run by hand with the `oracle` extra) wrote, per case, a tiny model folder
(minilora's writer), a PEFT adapter folder (PEFT's writer) and <case>.npz with what transformers + PEFT
computed on them: logits, loss, LoRA gradients, full fine-tuning gradients, merged weights, greedy ids.

Cases: gqa (4 query / 2 kv heads, untied, LoRA on q,v), tied (tied embeddings, 4/4 heads, all-linear),
llama3 (llama3 RoPE scaling over all three frequency bands, 4/1 heads, rank and alpha patterns,
rsLoRA), llama3_f64 (float64: tied, GQA, llama3 RoPE, all-linear; transformers patched to compute in
float64 throughout, see the script).

Tolerances, as max |ours - oracle| / max |oracle| per array (rel_err):
    float32  logits, loss, merged weights 1e-5; gradients 3e-5   (measured worst: logits 1.6e-6,
             gradients 5.8e-6, llama3's layer-1 q_proj lora_B, where minilora in float32 is itself
             4.4e-6 from minilora in float64: float32 rounding, so 3e-5 leaves room for another BLAS)
    float64  everything 1e-10                                     (measured worst: 4.8e-15)
Greedy ids must be equal: every step's top-1 / top-2 logit gap in the oracle is > 1e-4 (gen_margin,
smallest 6.9e-4), far above these errors.
"""
import json
import os

import numpy as np
import pytest

import minilora
from minilora.inference.generate import generate

HERE = os.path.join(os.path.dirname(__file__), "reference")
CASES = ["gqa", "tied", "llama3", "llama3_f64"]
TOL = {"float32": {"value": 1e-5, "grad": 3e-5}, "float64": {"value": 1e-10, "grad": 1e-10}}


def rel_err(ours, ref) -> float:
    """max |ours - ref| relative to the scale of ref (its largest magnitude)."""
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.abs(np.asarray(ours, dtype=np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


def section(ref, prefix: str) -> dict:
    """{name: array} of the npz keys under 'prefix/'."""
    return {k[len(prefix) + 1:]: v for k, v in ref.items() if k.startswith(prefix + "/")}


@pytest.fixture(scope="module", params=CASES)
def case(request):
    """(name, reference arrays, meta, dtype, tolerance) of one committed case."""
    name = request.param
    path = os.path.join(HERE, name + ".npz")
    with np.load(path, allow_pickle=False) as f:
        ref = {k: f[k] for k in f.files}
    meta = json.loads(str(ref.pop("meta")))
    return name, ref, meta, meta["dtype"], TOL[meta["dtype"]]["value"]


def load(name: str, dtype: str, adapter: bool = True):
    model = minilora.from_pretrained(os.path.join(HERE, name, "model"), dtype=dtype)
    if adapter:
        minilora.load_adapter(model, os.path.join(HERE, name, "adapter"))
    return model


def test_cases_are_what_they_claim(case):
    name, _, meta, dtype, _ = case
    model = load(name, dtype, adapter=False)
    c = model.config
    assert meta["case"] == name and str(model.dtype) == dtype
    assert c.tie_word_embeddings == meta["tied"]
    assert c.num_key_value_heads == meta["kv_heads"]
    assert c.rope_scaling == meta["rope_scaling"]
    if name == "gqa":
        assert c.num_key_value_heads < c.num_attention_heads and not c.tie_word_embeddings
    if name.startswith("llama3"):
        assert c.rope_scaling["rope_type"] == "llama3"


def test_logits_and_loss(case):
    name, ref, _, dtype, tol = case
    model = load(name, dtype)
    assert rel_err(model.forward(ref["input_ids"]), ref["logits"]) < tol
    assert abs(float(model.loss(ref["input_ids"], ref["labels"])) - float(ref["loss"])) < tol * float(ref["loss"])


def test_lora_gradients(case):
    name, ref, _, dtype, tol = case
    model = load(name, dtype)
    loss, grads = model.loss_and_grads(ref["input_ids"], ref["labels"], train=False)
    theirs, gtol = section(ref, "lora_grad"), TOL[dtype]["grad"]
    assert set(grads) == set(theirs) and theirs                  # exactly PEFT's trainable parameters
    assert abs(float(loss) - float(ref["loss"])) < tol * float(ref["loss"])
    bad = {n: rel_err(g, theirs[n]) for n, g in grads.items() if rel_err(g, theirs[n]) >= gtol}
    assert not bad, bad


def test_full_finetuning_gradients(case):
    name, ref, _, dtype, _ = case
    model = load(name, dtype, adapter=False)
    model.set_full_finetuning()
    _, grads = model.loss_and_grads(ref["input_ids"], ref["labels"], train=False)
    theirs, gtol = section(ref, "full_grad"), TOL[dtype]["grad"]
    assert set(grads) == set(theirs) == set(model.params)       # every weight, tied ones once
    bad = {n: rel_err(g, theirs[n]) for n, g in grads.items() if rel_err(g, theirs[n]) >= gtol}
    assert not bad, bad


def test_merged_weights_equal_peft_merge_and_unload(case):
    name, ref, _, dtype, tol = case
    model = load(name, dtype)
    base = load(name, dtype, adapter=False).params
    minilora.merge_lora(model)
    theirs = section(ref, "merged")
    assert theirs and set(theirs) <= set(model.params)
    for n, w in model.params.items():
        if n in theirs:
            assert rel_err(w, theirs[n]) < tol, n
        elif ".lora_" not in n:
            assert np.array_equal(w, base[n]), n              # merging touches only adapted weights


def test_greedy_generation_ids(case):
    name, ref, _, dtype, _ = case
    assert float(ref["gen_margin"]) > 1e-4                    # no near tie in the oracle's argmaxes
    out = generate(load(name, dtype), ref["prompt"], max_new_tokens=ref["generated"].shape[1] - ref["prompt"].shape[1])
    assert np.array_equal(out, ref["generated"])
