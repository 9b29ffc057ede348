"""The CuPy path, run on a machine without a GPU against a strict stand-in (tests/cupy_standin.py).

The stand-in has only the names and keywords of CuPy 14.2.0 (tests/data/cupy_api.json, read from
the release's wheel by scripts/cupy_api.py) and refuses what CuPy refuses: implicit device-to-host
conversion, NumPy arrays inside device calls, __index__, int() of a non-0-d array. `get_xp("cupy")`
gives it inside these tests only (install() patches sys.modules for one test). Covered here: the
backend test cases (tests/test_backends.py), training with dropout, checkpoints and an exact resume,
generation with sampling, label-choice evaluation, merges into quantized bases, named and weighted
adapters, the analysis, and the real model's forward (SmolLM2's GGUF when cached, else a small
random model with its shapes).
"""
import math
import operator

import cupy_standin
import numpy as np
import pytest
import test_backends

from minilora.adapters import (
    LoraConfig,
    adapters_disabled,
    add_lora,
    add_weighted_adapter,
    merge_lora,
    set_adapter,
    unmerge_lora,
)
from minilora.backend import asarray, cupy_status, get_xp, to_numpy
from minilora.config import LlamaConfig
from minilora.errors import MiniLoraError
from minilora.model import LlamaForCausalLM

CFG = LlamaConfig(vocab_size=259, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2)


@pytest.fixture
def standin(monkeypatch):
    return cupy_standin.install(monkeypatch)


@pytest.fixture
def cp(standin):
    return get_xp("cupy")


def lora_pair(cp, dtype="float64", seed=0, r=2, targets="all-linear"):
    """The same LoRA model on NumPy and on the stand-in, B randomised so the adapter matters."""
    out = []
    for xp in (np, cp):
        m = LlamaForCausalLM.init(CFG, seed=seed, dtype=dtype, xp=xp, initializer_range=0.3)
        add_lora(m, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets), seed=seed)
        rng = np.random.default_rng(seed + 1)
        for name in sorted(m.adapters.param_names()):
            if "lora_B" in name:
                m.params[name][...] = asarray(0.2 * rng.standard_normal(m.params[name].shape), xp)
        out.append(m)
    return out


# ---- the stand-in itself ------------------------------------------------------------------------
def test_standin_mirrors_the_pinned_release(cp):
    assert cp.__version__ == cupy_standin.RELEASE == "14.2.0"
    assert cupy_standin.API["wheel"]["name"].startswith("cupy_cuda12x-14.2.0-")
    assert cp.float32 is np.float32 and cp.pi == np.pi
    for name in ("float128", "vecdot", "insert", "geomspace"):            # NumPy has them, CuPy 14.2.0 does not
        assert hasattr(np, name)
        with pytest.raises(AttributeError, match="not in CuPy 14.2.0"):
            getattr(cp, name)
    assert not hasattr(cp.random.default_rng(0), "permutation")  # nor CuPy's Generator
    x = cp.arange(6.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'where'"):
        cp.sum(x, where=x > 1)                                   # NumPy's keyword, not CuPy's
    with pytest.raises(TypeError, match="too many positional"):
        x.sum(0, None, None, False, 1)
    with pytest.raises(ValueError, match="kind can only be None or 'stable'"):
        cp.argsort(x, kind="quicksort")
    assert cupy_status() is None                                 # the availability check runs on it


def test_gpu_extra_installs_cuda_libraries():
    import pathlib
    import re

    text = (pathlib.Path(__file__).parent.parent / "pyproject.toml").read_text()   # (tomllib needs 3.11)
    (req,) = re.findall(r'^gpu = \["([^"]+)"\]', text, flags=re.M)
    m = re.fullmatch(r"cupy-cuda12x\[(\w+)\]>=([\d.]+),<(\d+)", req)
    assert m, req
    extra, low, high = m.groups()
    wheel = cupy_standin.API["wheel"]
    assert any(r.startswith("cuda-toolkit[") and "nvrtc" in r and "curand" in r and "cusolver" in r
               for r in wheel["extras"][extra])                # the pinned release's extra brings them
    release = tuple(int(x) for x in cupy_standin.RELEASE.split("."))
    assert tuple(int(x) for x in low.split(".")) <= release and release[0] < int(high)


def test_standin_enforces_the_host_device_rules(standin, cp):
    x = cp.arange(6, dtype=cp.float32).reshape(2, 3)
    host = np.ones(3, dtype=np.float32)
    for mix in (lambda: np.asarray(x), lambda: x + host, lambda: host * x, lambda: cp.maximum(x, host),
                lambda: cp.where(x > 1, x, host), lambda: x.__setitem__(0, host),
                lambda: np.array([x[0, 0], x[0, 1]]), lambda: cp.ascontiguousarray(host),
                lambda: int(x), lambda: float(x[0]), lambda: operator.index(x[0, 0].astype(cp.int64)),
                lambda: range(cp.asarray(3)), lambda: cp.add(x, [1.0, 2.0, 3.0])):
        with pytest.raises(TypeError):
            mix()
    s = x.sum()
    assert type(s) is cp.ndarray and s.shape == ()               # reductions stay 0-d device arrays
    assert type(x.max(axis=0)) is cp.ndarray and type(cp.linalg.norm(x)) is cp.ndarray
    standin.transfers.clear()
    assert float(s) == 15.0 and len(standin.transfers) == 1      # a deliberate read: one sync
    assert isinstance(x.get(), np.ndarray) and isinstance(cp.asnumpy(x), np.ndarray)
    assert np.array_equal(to_numpy(cp.asarray(host)), host)      # the explicit moves work
    y = x.copy()
    y[np.array([0, 1]), 0] = 7.0                                 # NumPy index arrays: allowed, as CuPy
    assert to_numpy(y)[:, 0].tolist() == [7.0, 7.0]
    assert to_numpy(x[cp.asarray([2, -1])]).tolist() == to_numpy(x[cp.asarray([0, 1])]).tolist()  # wraps
    assert float(np.float32(2.0) * s) == 30.0                    # NumPy scalars are fine


def test_standin_catches_a_host_array_in_a_compute_path(cp):
    from minilora.layers.linear import linear_forward

    w = cp.asarray(np.ones((3, 4)))
    with pytest.raises(TypeError, match="NumPy \\(host\\) array"):
        linear_forward(np.ones((2, 4)), w)                       # forgot to move x to the device


# ---- the backend cases ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(n for n in dir(test_backends) if n.startswith("test_")))
def test_backend_case_on_standin(case, cp):
    getattr(test_backends, case)(cp)


# ---- training, checkpoints, resume ---------------------------------------------------------------
def test_training_with_dropout_checkpoints_and_resume(standin, cp, tmp_path):
    from test_resume import EX, LCFG, TCFG, Interrupt

    from minilora.training import TrainingInterrupted, fit, total_steps

    def fresh():
        m = LlamaForCausalLM.init(CFG, seed=3, dtype="float64", xp=cp)
        add_lora(m, LCFG, seed=5)
        return m

    ref = fresh()
    standin.transfers.clear()
    ref_res = fit(ref, EX, TCFG, progress=False, checkpoint_dir=tmp_path / "straight")
    n = total_steps(len(EX), TCFG)
    assert ref_res.steps == n and all(math.isfinite(x) for x in ref_res.losses)
    state_bytes = int(ref.rng.bit_generator._state.size)
    # the generator's state is snapshot each optimizer step on the device; it reaches the host
    # only at the one save at the end
    assert [t for t in standin.host_reads(np.int8) if t[0] == state_bytes] == [(state_bytes, (state_bytes,),
                                                                                  np.dtype(np.int8))]
    ckpt = tmp_path / "ckpt"
    model = fresh()
    Interrupt(model, 4)
    with pytest.raises(TrainingInterrupted):
        fit(model, EX, TCFG, progress=False, checkpoint_dir=ckpt)
    assert (ckpt / "rng.safetensors").exists()                   # CuPy's generator state, as bytes
    resumed = fresh()
    res = fit(resumed, EX, TCFG, progress=False, checkpoint_dir=ckpt, resume_from=ckpt)
    assert 0 < res.resumed_from < n and res.losses == ref_res.losses        # bit for bit
    for name in ref.trainable:
        assert type(resumed.params[name]) is cp.ndarray
        assert np.array_equal(to_numpy(resumed.params[name]), to_numpy(ref.params[name]))


def test_lora_linear_with_a_host_generator_on_device_weights(cp):
    from minilora.layers.lora import LoraLinear, lora_forward

    layer = LoraLinear(cp.asarray(np.ones((4, 6))), 2, 4.0, np.random.default_rng(0), dropout_p=0.5)
    assert type(layer.rng).__module__.startswith("cupy")         # converted once, seeded from the host rng
    h, cache = layer.forward(cp.ones((3, 6)), train=True)
    dx, da, db = layer.backward(cp.ones_like(h), cache)
    assert all(type(g) is cp.ndarray for g in (h, dx, da, db))
    with pytest.raises(ValueError, match="rng draws numpy arrays, x is a cupy array"):
        lora_forward(cp.ones((3, 6)), layer.weight, layer.lora_A, layer.lora_B, 1.0, dropout_p=0.5,
                     rng=np.random.default_rng(0))


# ---- generation and evaluation -------------------------------------------------------------------
def test_generation_greedy_and_sampled(cp):
    from minilora.inference.generate import filter_logits, generate, sample_next

    host, dev = lora_pair(cp)
    prompt = np.array([[1, 5, 9, 3], [2, 2, 7, 4]])
    greedy = generate(dev, prompt, 8, eos_token_id=[258])
    assert type(greedy) is cp.ndarray
    assert np.array_equal(to_numpy(greedy), generate(host, prompt, 8, eos_token_id=[258]))
    kw = dict(temperature=0.8, top_k=50, top_p=0.9)
    a = generate(dev, prompt, 8, rng=cp.random.default_rng(1), **kw)
    b = generate(dev, prompt, 8, rng=cp.random.default_rng(1), **kw)
    assert np.array_equal(to_numpy(a), to_numpy(b))
    c = generate(dev, prompt, 8, rng=np.random.default_rng(1), **kw)        # a host rng: converted once
    assert np.array_equal(to_numpy(c), to_numpy(generate(dev, prompt, 8, rng=np.random.default_rng(1), **kw)))
    with pytest.raises(MiniLoraError, match="use cupy.random.default_rng"):
        sample_next(cp.zeros((1, 5)), np.random.default_rng(0), temperature=1.0)
    # top-p over tied logits keeps the same nucleus on both backends (stable sorts)
    z = np.repeat(np.arange(20.0), 5)[None] % 3.0                            # (1, 100), heavy ties
    for p in (0.3, 0.5, 0.8):
        np.testing.assert_array_equal(to_numpy(filter_logits(cp.asarray(z), top_p=p)), filter_logits(z, top_p=p))


def test_evaluation_scores_match_numpy(cp):
    from minilora.data import LABELS, ByteTokenizer, collate, encode_example, sequence_logprob
    from minilora.inference.evaluate import choice_accuracy, choice_scores

    cfg = LlamaConfig(vocab_size=259, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    host = LlamaForCausalLM.init(cfg, seed=0, dtype="float64", initializer_range=0.5)
    dev = LlamaForCausalLM.init(cfg, seed=0, dtype="float64", initializer_range=0.5, xp=cp)
    tok = ByteTokenizer()
    rows = [{"context": f"Acme {w}", "target": LABELS[i % 3]} for i, w in enumerate(["rises", "falls", "holds"])]
    np.testing.assert_allclose(choice_scores(dev, rows, tok, LABELS), choice_scores(host, rows, tok, LABELS),
                               rtol=1e-12)
    assert choice_accuracy(dev, rows, tok, LABELS) == choice_accuracy(host, rows, tok, LABELS)
    ids, lab = collate([encode_example(r["context"], LABELS[0], tok) for r in rows], tok.pad_token_id)
    got = sequence_logprob(dev.forward(cp.asarray(ids)), lab)                # host labels, device logits
    np.testing.assert_allclose(to_numpy(got), sequence_logprob(host.forward(ids), lab), rtol=1e-12)


# ---- merges, quantized bases, named adapters, analysis -------------------------------------------
@pytest.mark.parametrize("bits", [8, 4])
def test_merge_into_a_quantized_base(cp, bits):
    ids = np.random.default_rng(0).integers(0, CFG.vocab_size, (2, 6))
    outs = []
    for m in (LlamaForCausalLM.init(CFG, seed=4, dtype="float32", xp=xp, initializer_range=0.3) for xp in (np, cp)):
        m.quantize_base(bits, group_size=8)
        add_lora(m, LoraConfig(r=2, lora_alpha=4, target_modules="all-linear"), seed=1)
        for name in sorted(m.adapters.param_names()):
            if "lora_B" in name:
                m.params[name][...] = 0.05
        unmerged = to_numpy(m.forward(asarray(ids, m.xp)))
        report = merge_lora(m)                          # requantized: {weight: max abs requant error}
        assert set(report) == set(m.quantized) and type(next(iter(m.quantized.values())).q) is type(
            m.params["lm_head.weight"])
        outs.append((unmerged, to_numpy(m.forward(asarray(ids, m.xp))), report))
    np.testing.assert_allclose(outs[1][0], outs[0][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outs[1][1], outs[0][1], rtol=1e-5, atol=1e-6)
    assert outs[1][2] == pytest.approx(outs[0][2], rel=1e-5, abs=1e-7)


def test_named_and_weighted_adapters(cp):
    ids = np.random.default_rng(1).integers(0, CFG.vocab_size, (1, 7))
    results = []
    for m in lora_pair(cp, targets=["q_proj", "v_proj"]):
        add_lora(m, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]), seed=9, adapter_name="other")
        add_weighted_adapter(m, ["default", "other"], [0.5, -1.0], "mix", combination_type="cat")
        outs = [to_numpy(m.forward(asarray(ids, m.xp)))]
        for name in ("mix", "other", "default"):
            set_adapter(m, name)
            outs.append(to_numpy(m.forward(asarray(ids, m.xp))))
        with adapters_disabled(m):
            outs.append(to_numpy(m.forward(asarray(ids, m.xp))))
        merge_lora(m)
        outs.append(to_numpy(m.forward(asarray(ids, m.xp))))
        unmerge_lora(m)
        results.append(outs)
    for got, want in zip(results[1], results[0], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_analysis_on_device_factors(cp):
    from minilora.analysis.amplification import amplification_table
    from minilora.analysis.spectra import module_spectra
    from minilora.analysis.subspace import phi_grid_modules

    rng = np.random.default_rng(2)
    host = {m: (rng.standard_normal((4, 12)), rng.standard_normal((10, 4)), 0.5) for m in ("q", "v")}
    other = {m: (rng.standard_normal((2, 12)), rng.standard_normal((10, 2)), 2.0) for m in ("q", "v")}
    weights = {m: rng.standard_normal((10, 12)) for m in ("q", "v")}

    def dev(d):
        return {k: tuple(asarray(x, cp) if hasattr(x, "shape") else x for x in v) for k, v in d.items()}

    for got, want in zip(module_spectra(dev(host)), module_spectra(host), strict=True):
        assert got["sigma"] == pytest.approx(want["sigma"], rel=1e-10)
        assert got["entropy_rank"] == pytest.approx(want["entropy_rank"], rel=1e-10)
    for kind in ("A", "left", "right"):
        g_dev, g_host = phi_grid_modules(dev(host), dev(other), kind), phi_grid_modules(host, other, kind)
        for m in g_host:
            np.testing.assert_allclose(to_numpy(g_dev[m]), g_host[m], rtol=1e-10, atol=1e-12)
    rows = amplification_table({m: asarray(w, cp) for m, w in weights.items()}, dev(host))
    for got, want in zip(rows, amplification_table(weights, host), strict=True):
        for key in ("delta_fro", "proj_delta", "proj_w", "amplification"):
            assert got[key] == pytest.approx(want[key], rel=1e-10)


def test_labs_on_standin(cp):
    from minilora.analysis.labs import intrinsic_rank_lab, precision_lab

    # the stand-in's generator draws what NumPy's default_rng draws (PCG64 from the same seed), so
    # the labs give NumPy's numbers up to the order of float operations
    kw = dict(sizes=(16,), magnitudes=(0.1,), dtypes=("float64", "float32"), cycles=(1, 3), cycle_size=16,
              quant_size=32, quant_magnitudes=(0.01,), bits=(8, 4), group_sizes=(None, 8), rank=2, batch=4)
    got, want = precision_lab(xp=cp, **kw), precision_lab(**kw)
    for table in want:
        for g, w in zip(got[table], want[table], strict=True):
            assert set(g) == set(w) and all(g[k] == w[k] for k in w if not isinstance(w[k], float))
            nums = [k for k in w if isinstance(w[k], float)]
            assert [g[k] for k in nums] == pytest.approx([w[k] for k in nums], rel=1e-6, abs=1e-12), table
    kw = dict(d_in=12, d_out=10, k=2, ranks=(1, 2, 3), steps=20, n_samples=16)
    got, want = intrinsic_rank_lab(xp=cp, **kw), intrinsic_rank_lab(**kw)
    for g, w in zip(got["rows"], want["rows"], strict=True):
        assert g["loss"] == pytest.approx(w["loss"], rel=1e-8)


# ---- the real model ------------------------------------------------------------------------------
def _real_model():
    """SmolLM2-135M-Instruct from its cached GGUF, or None."""
    from minilora.io import from_pretrained
    from minilora.runs.registry import resolve_model

    try:
        return from_pretrained(resolve_model("smollm2-135m-instruct", fetch_missing=False))
    except MiniLoraError:
        return None


def test_real_model_forward_on_standin(cp):
    model = _real_model()
    if model is None:                    # no GGUF: a random model with SmolLM2's layer shapes
        model = LlamaForCausalLM.init(LlamaConfig(
            vocab_size=1024, hidden_size=576, intermediate_size=1536, num_hidden_layers=2, num_attention_heads=9,
            num_key_value_heads=3, rope_theta=100000.0, tie_word_embeddings=True), seed=0, initializer_range=0.04)
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (1, 12))
    ref = model.forward(ids)                                                  # (1, T, V) NumPy
    add_lora(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]), seed=0)
    model.to(cp)
    logits = model.forward(cp.asarray(ids))
    assert type(logits) is cp.ndarray
    np.testing.assert_allclose(to_numpy(logits), ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
    loss, grads = model.loss_and_grads(cp.asarray(ids), cp.asarray(ids))
    assert math.isfinite(float(loss)) and set(grads) == model.trainable
    assert all(type(g) is cp.ndarray for g in grads.values())


# ---- the GPU check script's own checks run here, so a lent GPU does not meet a broken script -----
def test_gpu_check_script_runs_on_standin(cp):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "scripts" / "gpu_checks.py"
    spec = importlib.util.spec_from_file_location("gpu_checks", path)
    checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    out = checks.determinism(cp, epochs=1)
    assert out["ok"] and out["full_runs_equal"]          # NumPy underneath: even the scatter-add repeats
