"""The benchmark smoke-runs on a tiny config (not a timed test), counts FLOPs as documented, and
the fast paths it relies on agree with the plain formulas they replace."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from minilora.backend import sum_rows_by_index
from minilora.bench import harness as bench
from minilora.cli import main
from minilora.config import LlamaConfig
from minilora.gradcheck import check_gradient
from minilora.layers import attention
from minilora.layers.loss import cross_entropy_backward, cross_entropy_forward, cross_entropy_fused
from minilora.layers.mlp import sigmoid


# ---- the benchmark itself ---------------------------------------------------------------------
def test_tiny_bench_writes_every_ratio(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--preset", "tiny", "--no-torch", "--quiet", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["ratios"]) == set(bench.RATIO_KEYS)
    assert {"ratios", "notes", "timings", "flops", "configs", "environment", "memory_method"} <= set(doc)
    torch_keys = {"train_step_vs_torch_small", "train_step_vs_torch_medium", "real_lora_step_vs_torch",
                  "real_peak_mem_vs_torch"}
    for key, value in doc["ratios"].items():
        if key in torch_keys:
            assert value is None and "--no-torch" in doc["notes"][key]
        elif value is None:                                   # only the KV cache may be missing
            assert key == "kv_cache_speedup" and doc["notes"][key]
        else:
            assert isinstance(value, float) and math.isfinite(value) and value > 0, key
    assert doc["flops"]["medium_lora"]["total"] < doc["flops"]["medium_full"]["total"]
    assert doc["configs"]["medium"]["model"]["hidden_size"] == 32
    mem = doc["timings"]["peak_memory"]
    assert mem["lora"]["peak_rss_kib"] >= mem["lora"]["peak_rss_after_imports_kib"] > 0
    real = doc["timings"]["real_peak_memory"]["minilora"]
    assert real["minilora"]["step_kib"] > 0 and real["minilora_ckpt"]["step_kib"] > 0
    assert doc["flops"]["real_lora"]["total"] > 0 and doc["timings"]["real"]["profile"]
    prof = doc["timings"]["profile_medium_lora"]
    assert prof and all(r["tottime"] >= 0 and r["calls"] >= 1 for r in prof)
    if doc["ratios"]["kv_cache_speedup"] is not None:
        assert doc["timings"]["generation"]["same_tokens"]   # the cache changes speed, not tokens


def test_bad_arguments_exit_2_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "minilora.bench", "--threads", "0"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["minilora: error: --threads must be >= 1, got 0"]


def test_step_flops_by_hand():
    # vocab 10, C 4, I 6, one layer, 2 heads of dim 2, 1 kv head; batch 1, seq 3 (head: 2 tokens).
    cfg = LlamaConfig(vocab_size=10, hidden_size=4, intermediate_size=6, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    # in*out of q,k,v,o,gate,up,down = 16+8+8+16+24+24+24 = 120; the head 4*10 = 40.
    linear = 2 * 3 * 120 + 2 * 2 * 40                   # 880, one pass over the weights
    lora = 3 * 1 * (8 + 6 + 6 + 8 + 10 + 10 + 10)      # N r sum(in + out) = 174, r = 1
    pair = 2 * (1 * 2 * 6) * 2                          # 2 hd FLOPs x 12 causal pairs = 48
    full = bench.step_flops(cfg, 1, 3, "full")
    assert full == {"forward": linear + 2 * pair, "backward": 2 * linear + 4 * pair,
                    "total": 3 * linear + 6 * pair, "attention": 6 * pair}
    assert bench.step_flops(cfg, 1, 3, "lora", r=1)["total"] == 2 * linear + 6 * lora + 6 * pair


def test_threads_and_rss_are_read():
    n = bench.blas_threads()
    assert n is None or n >= 1
    assert bench.peak_rss_kib() > 1000


# ---- the fast paths against the plain formulas ------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_matches_the_two_branch_form(dtype):
    x = np.concatenate([np.random.default_rng(0).standard_normal(1000) * 10,
                        [-1e4, -800.0, -88.0, -0.0, 0.0, 1e-30, 88.0, 800.0, 1e4]]).astype(dtype)
    e = np.exp(-np.abs(x))
    two_branch = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    with np.errstate(over="raise", invalid="raise"):
        got = sigmoid(x, np)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got[x >= 0], two_branch[x >= 0])       # the same operations
    np.testing.assert_allclose(got, two_branch, rtol=4 * np.finfo(dtype).eps, atol=0)  # a few ulp


def test_sum_rows_by_index_matches_add_at():
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 7, 200)
    idx[idx == 3] = 4                                   # row 3 never occurs: it stays zero
    ints = rng.integers(-50, 50, (200, 5)).astype(np.float32)   # integer sums: exact in any order
    ref = np.zeros((7, 5), np.float32)
    np.add.at(ref, idx, ints)
    np.testing.assert_array_equal(sum_rows_by_index(idx, ints, 7), ref)
    vals = rng.standard_normal((200, 5))
    ref = np.zeros((7, 5))
    np.add.at(ref, idx, vals)
    np.testing.assert_allclose(sum_rows_by_index(idx, vals, 7), ref, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(sum_rows_by_index(idx[:0], vals[:0], 3), np.zeros((3, 5)))


def test_fused_cross_entropy_equals_forward_then_backward():
    rng = np.random.default_rng(2)
    logits = 3 * rng.standard_normal((2, 5, 11))
    targets = rng.integers(0, 11, (2, 5))
    targets[0, :2] = -100
    loss, dz = cross_entropy_fused(logits, targets)
    ref_loss, cache = cross_entropy_forward(logits, targets)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-14)
    np.testing.assert_allclose(dz, cross_entropy_backward(cache), rtol=1e-12, atol=1e-15)
    loss0, dz0 = cross_entropy_fused(logits, np.full((2, 5), -100))
    assert float(loss0) == 0.0 and not dz0.any()


@pytest.mark.parametrize("tq, tk, block", [(10, 10, 3), (9, 9, 2), (7, 12, 4), (5, 5, 1)])
def test_causal_blocks_equal_one_block(tq, tk, block, monkeypatch):
    rng = np.random.default_rng(tq * 100 + block)
    q = rng.standard_normal((2, 4, tq, 3))
    k, v = rng.standard_normal((2, 2, tk, 3)), rng.standard_normal((2, 2, tk, 3))
    dout = rng.standard_normal(q.shape)
    monkeypatch.setattr(attention, "BLOCK", 1000)
    out1, c1 = attention.attention_forward(q, k, v)
    grads1 = attention.attention_backward(dout, c1)
    monkeypatch.setattr(attention, "BLOCK", block)
    out, cache = attention.attention_forward(q, k, v)
    assert cache.p.size < c1.p.size                     # the future's scores are not stored
    p_before = cache.p.copy()
    grads = attention.attention_backward(dout, cache)
    np.testing.assert_array_equal(cache.p, p_before)
    np.testing.assert_allclose(out, out1, rtol=1e-13, atol=1e-13)
    for g, g1 in zip(grads, grads1, strict=True):
        np.testing.assert_allclose(g, g1, rtol=1e-12, atol=1e-13)
    f = lambda: attention.attention_forward(q, k, v)[0]  # noqa: E731
    for x, g in zip((q, k, v), grads, strict=True):
        assert check_gradient(f, x, g, dout) < 1e-6


# ---- the PyTorch reference computes the same thing (optional) ---------------------------------
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_torch_reference_matches_minilora(attn):
    torch = pytest.importorskip("torch")
    from minilora.bench.torch_ref import TorchTrainer

    cfg = bench.make_config(bench.PRESETS["tiny"]["small"][0])
    model = bench.make_model(cfg, "lora")
    ids, labels = bench.make_batch(2, 16)
    labels[0, :5] = -100
    tr = TorchTrainer(model, attention=attn)
    loss, grads = model.loss_and_grads(ids, labels)
    tl = tr.net.loss(torch.from_numpy(ids), torch.from_numpy(labels))
    tl.backward()
    assert float(tl.detach()) == pytest.approx(float(loss), rel=1e-5)
    named = dict(tr.net.named_parameters())
    for m in ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"):
        short = ".".join(m.split(".")[1:3]) + "." + m.split(".")[-1]          # layers.0.q_proj
        for ab in "AB":
            np.testing.assert_allclose(named[f"{short}.lora_{ab}"].grad.numpy(),
                                       grads[f"{m}.lora_{ab}.weight"], rtol=1e-3, atol=1e-6)


def test_peft_reference_matches_minilora():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from minilora.bench import real
    from minilora.bench.torch_peft import PeftTrainer

    model = real.make_real_model(real.TINY_REAL)
    ids, labels = real.real_batch(real.TINY_REAL, 2, 16)
    labels[0, :5] = -100
    tr = PeftTrainer(model, real.REAL_LORA)
    loss, grads = model.loss_and_grads(ids, labels)
    tl = tr.net(input_ids=torch.from_numpy(ids), labels=torch.from_numpy(labels)).loss
    tl.backward()
    assert float(tl.detach()) == pytest.approx(float(loss), rel=1e-5)
    named = dict(tr.net.named_parameters())
    for m in ("model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.o_proj"):
        for ab in "AB":
            np.testing.assert_allclose(named[f"base_model.model.{m}.lora_{ab}.default.weight"].grad.numpy(),
                                       grads[f"{m}.lora_{ab}.weight"], rtol=1e-3, atol=1e-6)
