"""minilora against transformers + PEFT on the same files: logits, loss, LoRA gradients, adapters, merge.

Optional: skips unless torch, transformers and peft are installed (they are not in the project's
environment). Run it from a separate venv, e.g.
    PYTHONPATH=. /tmp/oracle/bin/python -m pytest tests/test_interop_hf.py
Every folder here is written by transformers (a randomly initialised LlamaForCausalLM with GQA,
tied or untied embeddings and llama3 RoPE scaling that exercises all three frequency bands).

Tolerances: float32, stock transformers: max abs diff < 1e-4. float64: < 1e-10, which needs the
transformers side to compute in float64 throughout. Stock transformers computes the RMSNorm, the
RoPE tables (inv_freq in float32, angles via .float()) and the loss (logits.float()) in float32
even for a float64 model, so `hf_float64` monkeypatches LlamaRMSNorm.forward and
LlamaRotaryEmbedding.forward with the same formulas without the float32 casts, replaces inv_freq by
a float64 one computed here from Meta's llama3 rule (and checked equal to transformers' float32
inv_freq to float32 precision), runs attention through SDPA (no float32 softmax cast), and the
loss is torch's cross_entropy on the float64 logits, shifted as transformers shifts it.
"""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from hf_oracle import float64_transformers, load_hf  # noqa: E402

from minilora.adapters import LoraConfig, add_lora, set_adapter  # noqa: E402
from minilora.adapters.weighted import add_weighted_adapter  # noqa: E402
from minilora.cli import main  # noqa: E402
from minilora.io import from_pretrained, load_safetensors, save_pretrained  # noqa: E402
from minilora.io.peft import load_adapter, save_adapter  # noqa: E402

LLAMA3 = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 32}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def hf_config(tied=False, rope=LLAMA3, theta=10000.0):
    rp = {"rope_type": "default", "rope_theta": theta} if rope is None else {**rope, "rope_theta": theta}
    return transformers.LlamaConfig(
        vocab_size=61, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=tied,
        rope_parameters=rp, attn_implementation="sdpa")


def write_hf_folder(path, tied=False, rope=LLAMA3, seed=0, save_dtype=torch.float32, **save_kw):
    """A random LlamaForCausalLM saved by transformers; weights moved off their init so nothing is trivial."""
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(hf_config(tied, rope))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if name.endswith("norm.weight") else 0.15 * torch.randn_like(p))
    model.to(save_dtype).save_pretrained(path, **save_kw)
    return path


@pytest.fixture
def hf_float64():
    """Make transformers' Llama compute RMSNorm and RoPE in the model's dtype (see tests/hf_oracle.py)."""
    with float64_transformers():
        yield


def batch(seed=0, b=2, t=12, vocab=61):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (b, t))
    labels = ids.copy()
    labels[0, :3] = -100                                     # an ignored prompt, as in fine-tuning
    return ids, labels


def torch_loss(logits, labels):
    """transformers' causal-LM loss (shift inside, mean over labels != -100), in the logits' dtype."""
    v = logits.shape[-1]
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1),
                                             ignore_index=-100)


def hf_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids)).logits.numpy()


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("rope", [LLAMA3, None], ids=["llama3", "default"])
def test_logits_and_loss_equal_transformers_float32(tmp_path, tied, rope):
    path = write_hf_folder(tmp_path / "hf", tied=tied, rope=rope)
    ids, labels = batch()
    hf = load_hf(path, "float32")
    ours = from_pretrained(path, dtype="float32")
    assert ours.config.tie_word_embeddings == tied
    assert ours.config.rope_scaling == (None if rope is None else {**LLAMA3})
    assert np.abs(ours.forward(ids) - hf_logits(hf, ids)).max() < 1e-4
    with torch.no_grad():
        hf_loss = float(hf(input_ids=torch.from_numpy(ids), labels=torch.from_numpy(labels)).loss)
    assert abs(float(ours.loss(ids, labels)) - hf_loss) < 1e-5                   # transformers' own loss


@pytest.mark.parametrize("tied", [False, True])
def test_logits_equal_transformers_float64(tmp_path, tied, hf_float64):
    path = write_hf_folder(tmp_path / "hf", tied=tied)
    ids, _ = batch(1)
    diff = np.abs(from_pretrained(path, dtype="float64").forward(ids) - hf_logits(load_hf(path, "float64"), ids))
    assert diff.max() < 1e-10


def test_float64_check_needs_the_patch(tmp_path):
    """Without the float64 patches stock transformers agrees only to ~1e-6: the patch is what the 1e-10 needs."""
    path = write_hf_folder(tmp_path / "hf")
    ids, _ = batch(1)
    hf = transformers.LlamaForCausalLM.from_pretrained(path, dtype=torch.float64).eval()
    diff = np.abs(from_pretrained(path, dtype="float64").forward(ids) - hf_logits(hf, ids)).max()
    assert 1e-10 < diff < 1e-4


def test_bf16_and_sharded_folders(tmp_path):
    ref = write_hf_folder(tmp_path / "f32")
    bf = write_hf_folder(tmp_path / "bf16", save_dtype=torch.bfloat16)
    sharded = write_hf_folder(tmp_path / "sharded", max_shard_size="40KB")
    assert os.path.exists(sharded / "model.safetensors.index.json")
    hf_bf = transformers.LlamaForCausalLM.from_pretrained(bf, dtype=torch.bfloat16)
    ours = from_pretrained(bf)
    for name, p in hf_bf.state_dict().items():               # bf16 widened exactly
        assert np.array_equal(ours.params[name], p.float().numpy()), name
    ids, _ = batch(2)
    assert np.array_equal(from_pretrained(sharded).forward(ids), from_pretrained(ref).forward(ids))
    save_pretrained(ours, tmp_path / "ours_bf16", dtype="bfloat16")     # our bf16 writer, read by transformers
    back = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "ours_bf16", dtype=torch.bfloat16)
    for name, p in hf_bf.state_dict().items():
        assert torch.equal(back.state_dict()[name], p), name
    # float32 -> bf16 rounding equals torch's .to(torch.bfloat16) (round to nearest even)
    save_pretrained(from_pretrained(ref), tmp_path / "rounded", dtype="bfloat16")
    rounded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "rounded", dtype=torch.bfloat16)
    f32 = transformers.LlamaForCausalLM.from_pretrained(ref, dtype=torch.float32)
    for name, p in f32.state_dict().items():
        assert torch.equal(rounded.state_dict()[name], p.to(torch.bfloat16)), name


def test_folder_saved_here_loads_in_transformers(tmp_path):
    ours = from_pretrained(write_hf_folder(tmp_path / "hf", tied=False))
    save_pretrained(ours, tmp_path / "ours", max_shard_bytes=60_000)
    hf = load_hf(tmp_path / "ours", "float32")
    assert hf.config.rope_parameters["rope_type"] == "llama3"
    assert hf.config.rope_parameters["factor"] == LLAMA3["factor"]
    ids, _ = batch(3)
    assert np.abs(ours.forward(ids) - hf_logits(hf, ids)).max() < 1e-4


def peft_model(path, dtype, seed=0, **lora_kw):
    """transformers + PEFT with random nonzero B (init_lora_weights=False) so every factor matters."""
    torch.manual_seed(seed)
    kw = dict(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False, lora_dropout=0.0)
    kw.update(lora_kw)
    return peft.get_peft_model(load_hf(path, dtype), peft.LoraConfig(task_type="CAUSAL_LM", **kw)).eval()


def minilora_name(peft_name):
    return peft_name.replace("base_model.model.", "", 1).replace(".default.", ".")


@pytest.mark.parametrize("tied", [False, True])
def test_peft_adapter_loads_here_with_equal_logits_loss_and_lora_grads(tmp_path, tied, hf_float64):
    path = write_hf_folder(tmp_path / "hf", tied=tied)
    pm = peft_model(path, "float64", rank_pattern={"down_proj": 2}, alpha_pattern={"v_proj": 3.0},
                    use_rslora=True)
    pm.save_pretrained(tmp_path / "adapter")
    ours = from_pretrained(path, dtype="float64")
    load_adapter(ours, tmp_path / "adapter")
    ids, labels = batch(4)
    out = pm(input_ids=torch.from_numpy(ids))
    assert np.abs(ours.forward(ids) - out.logits.detach().numpy()).max() < 1e-10
    loss_t = torch_loss(out.logits, torch.from_numpy(labels))
    loss_t.backward()
    loss, grads = ours.loss_and_grads(ids, labels, train=False)
    assert abs(float(loss) - float(loss_t.detach())) < 1e-10
    torch_grads = {minilora_name(n): p.grad.numpy() for n, p in pm.named_parameters() if p.requires_grad}
    assert set(torch_grads) == set(grads) and len(grads) == 2 * 7 * 2
    for name, g in grads.items():
        assert np.abs(g - torch_grads[name]).max() < 1e-10, name


def test_adapter_saved_here_loads_in_peft(tmp_path, hf_float64):
    path = write_hf_folder(tmp_path / "hf", tied=True)
    ours = from_pretrained(path, dtype="float64")
    add_lora(ours, LoraConfig(r=3, lora_alpha=5, target_modules="all-linear", init_lora_weights=True,
                              rank_pattern={"o_proj": 2}), seed=1)
    rng = np.random.default_rng(5)
    for m in ours.adapters.modules:
        ours.params[m + ".lora_B.weight"][...] = 0.1 * rng.standard_normal(ours.params[m + ".lora_B.weight"].shape)
    save_adapter(ours, tmp_path / "adapter", base_model_name_or_path=str(path))
    pm = peft.PeftModel.from_pretrained(load_hf(path, "float64"), tmp_path / "adapter").eval()
    for n, p in pm.named_parameters():
        if "lora_" in n:
            assert np.array_equal(p.detach().numpy(), ours.params[minilora_name(n)]), n
    ids, _ = batch(5)
    assert np.abs(ours.forward(ids) - hf_logits(pm, ids)).max() < 1e-10


def test_merge_cli_equals_peft_merge_and_unload(tmp_path, capsys):
    path = write_hf_folder(tmp_path / "hf")
    pm = peft_model(path, "float32", seed=2)
    pm.save_pretrained(tmp_path / "adapter")
    assert main(["merge", str(path), str(tmp_path / "adapter"), str(tmp_path / "merged")]) == 0
    merged_peft = pm.merge_and_unload()
    ours = load_safetensors(tmp_path / "merged" / "model.safetensors")
    ref = merged_peft.state_dict()
    assert set(ours) == set(ref)
    for name, arr in ours.items():
        assert np.abs(arr - ref[name].numpy()).max() < 1e-6, name
    ids, _ = batch(6)
    hf_merged = load_hf(tmp_path / "merged", "float32")
    assert np.abs(hf_logits(hf_merged, ids) - hf_logits(merged_peft, ids)).max() < 1e-4


@pytest.mark.parametrize("combination_type", ["cat", "linear"])
def test_weighted_adapter_equals_peft(tmp_path, combination_type, hf_float64):
    path = write_hf_folder(tmp_path / "hf")
    r_b = 4 if combination_type == "linear" else 2
    for name, seed, r, targets in (("a", 3, 4, ["q_proj", "v_proj"]), ("b", 4, r_b, ["v_proj", "down_proj"])):
        peft_model(path, "float64", seed=seed, r=r, target_modules=targets).save_pretrained(tmp_path / name)
    pm = peft.PeftModel.from_pretrained(load_hf(path, "float64"), tmp_path / "a", adapter_name="a")
    pm.load_adapter(tmp_path / "b", adapter_name="b")
    pm.add_weighted_adapter(["a", "b"], [0.7, -0.4], "mix", combination_type=combination_type)
    ours = from_pretrained(path, dtype="float64")
    load_adapter(ours, tmp_path / "a", adapter_name="a")
    load_adapter(ours, tmp_path / "b", adapter_name="b")
    add_weighted_adapter(ours, ["a", "b"], [0.7, -0.4], "mix", combination_type=combination_type)
    set_adapter(ours, "mix")
    theirs = {minilora_name(n.replace(".mix.", ".default.")): p.detach().numpy()
              for n, p in pm.named_parameters() if ".mix." in n}
    assert set(theirs) == ours.adapters.param_names()
    # PEFT's "linear" puts its sqrt(|w s|) factors in a float32 tensor (torch.tensor of floats), so
    # its result is rounded to float32 precision; "cat" multiplies in the factors' float64.
    tol = 1e-12 if combination_type == "cat" else 1e-7
    for name, arr in theirs.items():
        assert np.abs(ours.params[name] - arr).max() < tol, name
    pm.set_adapter("mix")
    ids, _ = batch(7)
    assert np.abs(ours.forward(ids) - hf_logits(pm, ids)).max() < 100 * tol
