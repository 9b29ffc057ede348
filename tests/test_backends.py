"""The same code on every backend: each case runs on NumPy and, where a GPU is present, on CuPy,
and compares with a NumPy float64 reference.

Tolerances: float64 on either backend agrees with the NumPy reference to 1e-10 relative (the
reductions may be ordered differently on a GPU); float32 training losses to 1e-4 relative over a
short run. Gradient checks run in float64 on the backend itself.
"""
import numpy as np
import pytest
from conftest import backend_params

from minilora.adapters import LoraConfig, add_lora, merge_lora, unmerge_lora
from minilora.backend import asarray, get_xp, to_numpy
from minilora.config import LlamaConfig
from minilora.gradcheck import check_gradient
from minilora.layers.lora import lora_backward, lora_forward
from minilora.model import LlamaForCausalLM
from minilora.training import TrainConfig, fit

CFG = LlamaConfig(vocab_size=31, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2)


@pytest.fixture(params=backend_params())
def xp(request):
    return get_xp(request.param)


def model_on(xp, dtype="float64", seed=0):
    host = LlamaForCausalLM.init(CFG, seed=seed, dtype=dtype, initializer_range=0.3)
    return host, LlamaForCausalLM(CFG, {k: asarray(v, xp) for k, v in host.params.items()}, seed=seed)


def test_lora_layer_gradients_on_backend(xp):
    rng = np.random.default_rng(0)
    x, w0, a, b = (asarray(rng.standard_normal(s), xp) for s in ((3, 5), (4, 5), (2, 5), (4, 2)))
    h, cache = lora_forward(x, w0, a, b, 1.5)
    dout = asarray(rng.standard_normal(h.shape), xp)
    dx, da, db = lora_backward(dout, cache)
    f = lambda: lora_forward(x, w0, a, b, 1.5)[0]  # noqa: E731
    for arr, g in ((x, dx), (a, da), (b, db)):
        assert check_gradient(f, arr, g, dout) < 1e-6
    assert type(dx) is type(x)


def test_model_loss_and_grads_match_numpy(xp):
    host, dev = model_on(xp)
    for m in (host, dev):
        add_lora(m, LoraConfig(r=2, target_modules="all-linear"), seed=1)
        for name in m.adapters.param_names():
            if "lora_B" in name:
                m.params[name][...] = 0.1
    ids = np.random.default_rng(1).integers(0, CFG.vocab_size, (2, 7))
    l_ref, g_ref = host.loss_and_grads(ids, ids)
    l_dev, g_dev = dev.loss_and_grads(asarray(ids, xp), asarray(ids, xp))
    assert float(l_dev) == pytest.approx(float(l_ref), rel=1e-10)
    assert set(g_dev) == set(g_ref)
    for k in g_ref:
        assert type(g_dev[k]) is type(dev.params[k])          # gradients live where the weights live
        np.testing.assert_allclose(to_numpy(g_dev[k]), g_ref[k], rtol=1e-8, atol=1e-12)


def test_merge_and_zero_init_on_backend(xp):
    _, dev = model_on(xp, dtype="float32")
    ids = asarray(np.random.default_rng(2).integers(0, CFG.vocab_size, (2, 6)), xp)
    base = to_numpy(dev.forward(ids))
    add_lora(dev, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"]))
    assert np.array_equal(to_numpy(dev.forward(ids)), base)
    for name in dev.adapters.param_names():
        if "lora_B" in name:
            dev.params[name][...] = 0.05
    unmerged = to_numpy(dev.forward(ids))
    merge_lora(dev)
    assert np.max(np.abs(to_numpy(dev.forward(ids)) - unmerged)) < 1e-5 * np.max(np.abs(unmerged))
    unmerge_lora(dev)


def test_short_training_run_matches_numpy(xp):
    from minilora.data import ByteTokenizer, encode_example

    tok = ByteTokenizer()
    cfg = LlamaConfig(vocab_size=259, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    ex = [encode_example(f"row {i}", "positive", tok) for i in range(8)]
    losses = []
    for mod in (get_xp("numpy"), xp):
        host = LlamaForCausalLM.init(cfg, seed=0, dtype="float32", initializer_range=0.2)
        m = LlamaForCausalLM(cfg, {k: asarray(v, mod) for k, v in host.params.items()})
        add_lora(m, LoraConfig(r=2, target_modules="all-linear"), seed=0)
        res = fit(m, ex, TrainConfig(learning_rate=1e-2, num_epochs=2, batch_size=4), progress=False)
        assert all(type(v) is type(m.params["model.norm.weight"]) for v in m.params.values())
        losses.append(res.losses)
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    assert losses[0][-1] < losses[0][0]


def test_model_to_moves_everything_and_init_is_backend_independent(xp):
    host = LlamaForCausalLM.init(CFG, seed=5)
    dev = LlamaForCausalLM.init(CFG, seed=5, xp=xp)
    for k, v in host.params.items():
        assert np.array_equal(to_numpy(dev.params[k]), v)
    host.quantize_base(8)
    add_lora(host, LoraConfig(r=2))
    ids = np.random.default_rng(0).integers(0, CFG.vocab_size, (1, 5))
    ref = host.forward(ids)
    host.to(xp)
    assert host.xp is xp
    assert all(type(v) is type(host.params["lm_head.weight"]) for v in host.params.values())
    assert all(type(qt.q) is type(host.params["lm_head.weight"]) for qt in host.quantized.values())
    np.testing.assert_allclose(to_numpy(host.forward(asarray(ids, xp))), ref, rtol=1e-5, atol=1e-6)
    host.to("numpy")
    assert np.array_equal(host.forward(ids), ref)


def _layer_cases(xp, rng):
    """(name, forward f(*inputs) -> out, backward(dout, cache) -> grads, inputs that get gradients)."""
    from minilora.layers.attention import attention_backward, attention_forward
    from minilora.layers.mlp import swiglu_backward, swiglu_forward
    from minilora.layers.rmsnorm import rmsnorm_backward, rmsnorm_forward
    from minilora.layers.rope import rope_backward, rope_forward, rope_tables

    def r(*s):
        return asarray(rng.standard_normal(s), xp)

    cos, sin = rope_tables(5, 4, 10000.0, xp, "float64")
    return [
        ("rmsnorm", lambda x, w: rmsnorm_forward(x, w, 1e-5), rmsnorm_backward, [r(2, 5, 6), r(6)]),
        ("rope", lambda x: rope_forward(x, cos, sin), lambda d, c: (rope_backward(d, c),), [r(2, 3, 5, 4)]),
        ("attention", attention_forward, attention_backward, [r(1, 4, 5, 4), r(1, 2, 5, 4), r(1, 2, 5, 4)]),
        ("swiglu", swiglu_forward, swiglu_backward, [r(2, 5, 6), r(2, 5, 6)]),
    ]


def test_every_layer_gradient_on_backend(xp):
    from minilora.layers.embedding import embedding_backward, embedding_forward
    from minilora.layers.loss import cross_entropy_backward, cross_entropy_forward

    rng = np.random.default_rng(3)
    for name, fwd, bwd, inputs in _layer_cases(xp, rng):
        out, cache = fwd(*inputs)
        dout = asarray(rng.standard_normal(out.shape), xp)
        grads = bwd(dout, cache)
        for arr, g in zip(inputs, grads, strict=False):
            assert type(g) is type(arr), name
            assert check_gradient(lambda: fwd(*inputs)[0], arr, g, dout) < 1e-6, name  # noqa: B023
    w = asarray(rng.standard_normal((7, 3)), xp)
    ids = asarray(np.array([[1, 1, 6, 0]]), xp)
    out, cache = embedding_forward(ids, w)
    dout = asarray(rng.standard_normal(out.shape), xp)
    assert check_gradient(lambda: embedding_forward(ids, w)[0], w, embedding_backward(dout, cache), dout) < 1e-6
    z = asarray(rng.standard_normal((6, 5)), xp)
    t = asarray(np.array([0, 4, -100, 2, 2, 1]), xp)
    loss, cache = cross_entropy_forward(z, t)
    one = asarray(np.ones(()), xp)
    assert check_gradient(lambda: cross_entropy_forward(z, t)[0], z, cross_entropy_backward(cache), one) < 1e-6
