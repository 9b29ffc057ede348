"""The real-model demo's steps, run on the shipped tiny base (the real model's run is in the closing note):
every number it reports comes back in the summary, the adapter loads back, and inference on the float
view of a quantized model equals the quantized model's own forward bit for bit."""
import json

import numpy as np

from minilora.adapters import LoraConfig, add_lora
from minilora.io import from_pretrained
from minilora.io.peft import load_adapter
from minilora.runs.real_demo import float_view, format_generations, run_real_demo
from minilora.runs.recipes import base_dir


def test_float_view_computes_what_the_quantized_model_computes():
    m = from_pretrained(base_dir())
    m.quantize_base(4)
    add_lora(m, LoraConfig(r=2, target_modules=["q_proj", "o_proj"]))
    for n in m.adapters.param_names():
        m.params[n][...] = np.random.default_rng(0).normal(size=m.params[n].shape) * 0.05
    ids = np.arange(40).reshape(2, 20) + 65
    view = float_view(m)
    assert not view.quantized and view.adapters.param_names() == m.adapters.param_names()
    np.testing.assert_array_equal(view.forward(ids), m.forward(ids))
    m.params[next(iter(m.adapters.param_names()))] += 1.0                 # the factors are shared, not copied
    np.testing.assert_array_equal(view.forward(ids), m.forward(ids))


def test_real_demo_steps_on_the_tiny_base(tmp_path):
    lines = []
    s = run_real_demo(model=base_dir(), out_dir=str(tmp_path), max_train=16, max_test=6, progress=False,
                      log=lines.append)
    text = "\n".join(lines)
    assert f"{100 * s['zero_shot_accuracy']:.1f}%" in text and f"{100 * s['lora_accuracy']:.1f}%" in text
    assert s["n_train"] == 16 and s["n_test"] == 6 and len(s["generations"]) == 3
    assert len({g["label"] for g in s["generations"]}) == 3                 # one headline of each label
    assert s["merge_rel_diff"] < 1e-5                                       # merged == unmerged in float32
    assert json.loads((tmp_path / "summary.json").read_text())["lora_accuracy"] == s["lora_accuracy"]
    again = from_pretrained(base_dir())
    load_adapter(again, s["adapter_dir"])
    assert sum(again.params[n].size for n in again.adapters.param_names()) == s["trainable"]
    assert set(again.adapters.modules) == {f"model.layers.{i}.self_attn.{p}" for i in range(4)
                                           for p in ("q_proj", "k_proj", "v_proj", "o_proj")}


def test_generations_side_by_side():
    rows = [{"context": "Sentiment?\nAcme profit rises", "target": "positive"}]
    table = format_generations(rows, ["I think it is\nneutral"], ["positive"])
    assert "Acme profit rises" in table and "I think it is neutral" in table and "| positive" in table
