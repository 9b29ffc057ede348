"""The demo and `minilora train` on small subsets, and the shipped data and base model."""
import json
import os

import numpy as np
import pytest

from minilora.data import generate_sentiment, load_jsonl
from minilora.io import from_pretrained
from minilora.io.peft import load_adapter
from minilora.runs.demo import run_demo
from minilora.runs.finlora import load_runs
from minilora.runs.recipes import ROOT, base_dir, default_config_path, train_run


def test_demo_small_subset_end_to_end(tmp_path):
    lines = []
    s = run_demo(out_dir=str(tmp_path), ranks=(), full=True, progress=False, max_train=48, max_test=12,
                 log=lines.append)
    text = "\n".join(lines)
    assert all(r["zero_at_init"] for r in s["rows"] if r["r"] is not None)
    assert "bit for bit: True" in text
    assert s["merge_rel_diff"] < 1e-5                       # merged == unmerged in float32
    assert "11,141,120" in text and "70,553,706,496" in text and "6,332.7x" in text
    # the files it names exist: adapter (loads back), plot (PNG), summary (JSON of the same numbers)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["merge_max_abs_diff"] == s["merge_max_abs_diff"]
    assert (tmp_path / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = from_pretrained(base_dir())
    load_adapter(model, s["adapter_dir"])
    r8 = next(r for r in s["rows"] if r["r"] == 8)
    assert r8["trainable"] == sum(model.params[n].size for n in model.adapters.param_names())
    full = next(r for r in s["rows"] if r["r"] is None)
    assert full["trainable"] == s["base_params"] and r8["percent"] < 2.0


def test_train_command_writes_an_adapter(tmp_path):
    rows = load_jsonl(os.path.join(ROOT, "data", "sentiment_train.jsonl"))[:24]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"tiny": {"base_model": "minilora/tiny-sentiment-base", "dataset_path": "train.jsonl",
                    "lora_r": 2, "quant_bits": 4, "learning_rate": 0.001, "num_epochs": 1,
                    "batch_size": 8, "gradient_accumulation_steps": 1}}
    (tmp_path / "finetune_configs.json").write_text(json.dumps(cfg))
    model, acc = train_run(str(tmp_path / "finetune_configs.json"), "tiny", str(tmp_path / "out"),
                           progress=False, log=lambda *_: None)
    assert acc is None
    again = from_pretrained(base_dir())
    load_adapter(again, str(tmp_path / "out"))
    for n in model.adapters.param_names():
        np.testing.assert_array_equal(again.params[n], model.params[n])
    assert any(np.any(model.params[n]) for n in model.adapters.param_names() if "lora_B" in n)


def test_shipped_data_equals_its_generator():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_data", os.path.join(ROOT, "scripts", "make_data.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    train, test = generate_sentiment(mod.N_TRAIN, mod.N_TEST, mod.SEED)
    assert load_jsonl(os.path.join(ROOT, "data", "sentiment_train.jsonl")) == train
    assert load_jsonl(os.path.join(ROOT, "data", "sentiment_test.jsonl")) == test


def test_shipped_base_matches_its_script_config():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_base", os.path.join(ROOT, "scripts", "make_base.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = from_pretrained(base_dir())
    for k, v in mod.CONFIG.items():
        assert getattr(model.config, k) == v, k
    assert model.dtype == np.float32


@pytest.mark.parametrize("name", sorted(load_runs(default_config_path())))
def test_shipped_configs_parse(name):
    run = load_runs(default_config_path())[name]
    assert os.path.exists(run.dataset_path) and os.path.exists(run.test_dataset_path)
    assert run.quant_bits in (4, 8, 16)
