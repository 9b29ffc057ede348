"""`minilora analyze`: adapters (minilora's and PEFT's layouts), the labs, the rank comparison.

The numbers in summary.json are held equal to the library's functions run on the in-memory
factors; bad input must give exit code 2 and one line on stderr.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from minilora.adapters import LoraConfig, add_lora
from minilora.analysis import (
    amplification_table,
    module_spectra,
    phi,
    phi_grid_modules,
)
from minilora.cli import main
from minilora.config import LlamaConfig
from minilora.io import from_pretrained, save_pretrained, save_safetensors
from minilora.io.peft import save_adapter
from minilora.model import LlamaForCausalLM
from minilora.runs.recipes import BASE_NAME, base_dir

CFG = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2)
PNG = b"\x89PNG\r\n\x1a\n"
# the adapter_config.json fields PEFT 0.21 writes (observed with peft 0.21.2, save_pretrained)
PEFT_EXTRA = {"alora_invocation_tokens": None, "arrow_config": None, "auto_mapping": {
    "base_model_class": "LlamaForCausalLM", "parent_library": "transformers.models.llama.modeling_llama"},
    "corda_config": None, "ensure_weight_tying": False, "eva_config": None, "exclude_modules": None,
    "kasa_config": None, "layer_replication": None, "layers_pattern": None, "layers_to_transform": None,
    "loftq_config": {}, "lora_bias": False, "lora_ga_config": None, "megatron_config": None,
    "megatron_core": "megatron.core", "monteclora_config": None, "peft_version": "0.21.2",
    "qalora_group_size": 16, "revision": None, "target_parameters": None, "task_type": None,
    "trainable_token_indices": None, "use_bdlora": None, "use_dora": False, "use_qalora": False}


def _adapted(base, cfg, seed):
    """A copy of the base model with an adapter whose B is random (so delta W != 0)."""
    m = LlamaForCausalLM(base.config, dict(base.params))
    add_lora(m, cfg, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for mod in m.adapters.modules:
        b = m.params[mod + ".lora_B.weight"]
        m.params[mod + ".lora_B.weight"] = rng.standard_normal(b.shape).astype(b.dtype)
    return m


def _factors(model):
    return {m: (model.params[m + ".lora_A.weight"], model.params[m + ".lora_B.weight"], lm.scale)
            for m, lm in model.adapters.modules.items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A random base (HF folder) and two adapters on it: r=4 (alpha 8, v_proj alpha 2), r=2 rsLoRA."""
    root = tmp_path_factory.mktemp("analyze")
    base = LlamaForCausalLM.init(CFG, seed=0)
    save_pretrained(base, root / "base")
    m1 = _adapted(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                   alpha_pattern={"v_proj": 2}), seed=1)
    m2 = _adapted(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "o_proj"],
                                   use_rslora=True), seed=2)
    save_adapter(m1, root / "a1", base_model_name_or_path="someone/unknown-base")
    save_adapter(m2, root / "a2", base_model_name_or_path="someone/unknown-base")
    narrow = LlamaForCausalLM.init(LlamaConfig(**{**CFG.to_dict(), "hidden_size": 24}), seed=0)
    save_adapter(_adapted(narrow, LoraConfig(r=2, target_modules=["q_proj"]), 3), root / "narrow")
    save_adapter(_adapted(base, LoraConfig(r=2, target_modules=["up_proj"]), 4), root / "mlp")
    return {"root": root, "base": base, "m1": m1, "m2": m2}


def _run(*argv):
    return main(["analyze", *map(str, argv)])


def _summary(out):
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)


def _numbers(rows):
    """Rows of dicts as {(module, key): number}, for pytest.approx."""
    return {(r["module"], k): v for r in rows for k, v in r.items() if k != "module"}


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG


def test_adapter_vs_other_with_base(files, tmp_path):
    root, out = files["root"], tmp_path / "rep"
    assert _run(root / "a1", "--vs", root / "a2", "--base", root / "base", "--out", out,
                "--max-plots", "2") == 0
    for name in ("spectra.png", "phi_A.png", "phi_right.png", "phi_left.png"):
        assert _is_png(out / name) and (out / name).stat().st_size > 1000, name
    s = _summary(out)
    f1, f2 = _factors(files["m1"]), _factors(files["m2"])
    assert s["adapter"]["modules"] == 4 and s["adapter"]["zero_update_modules"] == []
    # scales from the files: alpha / r, alpha_pattern for v_proj, alpha / sqrt(r) with rsLoRA
    v0 = "model.layers.0.self_attn.v_proj"
    assert f1[v0][2] == 0.5 and f1["model.layers.0.self_attn.q_proj"][2] == 2.0
    want = module_spectra(f1)
    assert [r["module"] for r in s["spectra"]] == list(f1)
    for got, ref in zip(s["spectra"], want, strict=True):
        assert got["scale"] == f1[got["module"]][2]
        for k in ("sigma", "fro", "entropy_rank", "energy_rank_0.9", "energy_rank_0.99", "r"):
            assert got[k] == pytest.approx(ref[k], rel=1e-12, abs=1e-12), k
    # phi: the modules both adapters have (o_proj only in a2); grids equal the library's
    rows = s["vs"]["rows"]
    assert [r["module"] for r in rows] == list(f1)
    grids = np.load(out / "phi_grids.npz", allow_pickle=False)
    for kind in ("A", "left", "right"):
        lib = phi_grid_modules(f1, f2, kind)
        for r in rows:
            g = grids[f"{kind}:{r['module']}"]
            np.testing.assert_allclose(g, lib[r["module"]], rtol=1e-12, atol=1e-12)
            assert g.shape == (4, 2)
            assert r[kind]["phi_11"] == pytest.approx(float(g[0, 0]), abs=1e-15)
    for r in rows:
        a1, a2 = f1[r["module"]][0], f2[r["module"]][0]
        assert r["A"]["phi_11"] == pytest.approx(phi(a1, a2, 1, 1), abs=1e-12)
        assert r["A"]["chance_11"] == 1 / 32
    # amplification against the base's weights
    weights = {m: files["base"].params[m + ".weight"] for m in f1}
    assert _numbers(s["amplification"]["rows"]) == pytest.approx(
        _numbers(amplification_table(weights, f1)), rel=1e-12)
    md = (out / "summary.md").read_text()
    assert f"{s['spectra'][0]['entropy_rank']:.2f}" in md and "Amplification" in md
    assert f"{s['amplification']['rows'][0]['amplification']:.4g}" in md


def _peft_named_layout(files, root):
    """The folder PEFT writes for save_pretrained of an adapter named 'myad' (observed, peft 0.21)."""
    m = files["m1"]
    os.makedirs(root / "myad")
    cfg = json.loads((files["root"] / "a1" / "adapter_config.json").read_text())
    cfg.update(PEFT_EXTRA, base_model_name_or_path=None)
    (root / "myad" / "adapter_config.json").write_text(json.dumps(cfg))
    (root / "README.md").write_text("peft model card\n")
    save_safetensors(root / "myad" / "adapter_model.safetensors",
                     {f"base_model.model.{n}": m.params[n] for n in m.adapters.param_names()})


def test_peft_named_adapter_folder(files, tmp_path, capsys):
    _peft_named_layout(files, tmp_path / "peft")
    assert _run(tmp_path / "peft", "--out", tmp_path / "x") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "subfolders: myad" in err
    assert _run(tmp_path / "peft" / "myad", "--out", tmp_path / "rep", "--max-plots", "1") == 0
    s = _summary(tmp_path / "rep")
    assert s["adapter"]["base_model_name_or_path"] is None and s["amplification"] is None
    assert "no --base given" in s["amplification_skipped"]
    ref = module_spectra(_factors(files["m1"]))
    np.testing.assert_allclose([r["sigma"] for r in s["spectra"]], [r["sigma"] for r in ref], rtol=1e-12)


def test_adapter_name_inside_keys_is_stripped(files, tmp_path):
    # a raw PEFT state_dict keeps the adapter name: ...q_proj.lora_A.default.weight
    m = files["m1"]
    folder = tmp_path / "named"
    os.makedirs(folder)
    (folder / "adapter_config.json").write_bytes((files["root"] / "a1" / "adapter_config.json").read_bytes())
    tensors = {"base_model.model." + n.replace(".weight", ".default.weight"): m.params[n]
               for n in m.adapters.param_names()}
    save_safetensors(folder / "adapter_model.safetensors", tensors)
    assert _run(folder, "--vs", files["root"] / "a1", "--out", tmp_path / "rep", "--max-plots", "1") == 0
    s = _summary(tmp_path / "rep")
    assert all(r["A"]["phi_all"] == pytest.approx(1.0) for r in s["vs"]["rows"])   # same adapter
    ref = module_spectra(_factors(m))
    assert [r["fro"] for r in s["spectra"]] == pytest.approx([r["fro"] for r in ref], rel=1e-12)
    tensors["base_model.model.model.layers.0.self_attn.k_proj.lora_A.other.weight"] = np.ones((4, 32))
    tensors["base_model.model.model.layers.0.self_attn.k_proj.lora_B.other.weight"] = np.ones((16, 4))
    save_safetensors(folder / "adapter_model.safetensors", tensors)
    assert _run(folder, "--out", tmp_path / "rep2") == 2


def test_default_base_is_the_shipped_tiny_base(tmp_path):
    base = from_pretrained(base_dir())
    m = _adapted(base, LoraConfig(r=2, lora_alpha=4, target_modules=["v_proj"]), seed=0)
    save_adapter(m, tmp_path / "a", base_model_name_or_path=BASE_NAME)
    assert _run(tmp_path / "a", "--out", tmp_path / "rep", "--max-plots", "1") == 0
    s = _summary(tmp_path / "rep")
    f = _factors(m)
    weights = {mod: base.params[mod + ".weight"] for mod in f}
    assert s["amplification"]["base"] == base_dir()
    assert _numbers(s["amplification"]["rows"]) == pytest.approx(
        _numbers(amplification_table(weights, f)), rel=1e-12)


def _corrupt_cases(files, tmp):
    """{name: argv} of bad inputs, each built from a valid adapter folder."""
    a1 = files["root"] / "a1"

    def copy(name, weights=None, config=None):
        d = tmp / name
        os.makedirs(d)
        (d / "adapter_config.json").write_text(config if config is not None
                                               else (a1 / "adapter_config.json").read_text())
        if weights is not None:
            (d / "adapter_model.safetensors").write_bytes(weights)
        return d

    good = (a1 / "adapter_model.safetensors").read_bytes()
    m = files["m1"]
    half = {f"base_model.model.{n}": m.params[n] for n in m.adapters.param_names() if "lora_A" in n}
    save_safetensors(tmp / "half.safetensors", half)
    nan = {f"base_model.model.{n}": m.params[n].copy() for n in m.adapters.param_names()}
    next(iter(nan.values()))[0, 0] = np.nan
    save_safetensors(tmp / "nan.safetensors", nan)
    pt = copy("pt")
    (pt / "adapter_model.bin").write_bytes(b"\x80\x02torch pickle")
    return {
        "missing dir": [tmp / "nope"],
        "garbage weights": [copy("garbage", b"not a safetensors file at all")],
        "truncated weights": [copy("truncated", good[: len(good) // 2])],
        "empty weights": [copy("empty", b"")],
        "bad json": [copy("badjson", good, "{not json")],
        "missing r": [copy("nor", good, json.dumps({"peft_type": "LORA", "lora_alpha": 8,
                                                    "target_modules": ["q_proj"]}))],
        "dora": [copy("dora", good, json.dumps({**json.loads((a1 / "adapter_config.json").read_text()),
                                                "use_dora": True}))],
        "pickle only": [pt],
        "A without B": [copy("half", (tmp / "half.safetensors").read_bytes())],
        "non-finite": [copy("nan", (tmp / "nan.safetensors").read_bytes())],
        "vs: different sizes": [a1, "--vs", files["root"] / "narrow"],
        "vs: no common module": [a1, "--vs", files["root"] / "mlp"],
        "no base folder": [a1, "--base", tmp / "nobase"],
        "no mode": [],
        "two modes": [a1, "--lab", "precision"],
        "vs without adapter": ["--lab", "precision", "--vs", a1],
        "bad ranks": ["--compare-ranks", "8"],
        "same ranks": ["--compare-ranks", "8,8"],
        "rank too big": ["--compare-ranks", "8,65", "--max-train", "8"],
        "bad lab": ["--lab", "nope"],
    }


def test_bad_input_exit_2_one_line(files, tmp_path, capsys):
    cases = _corrupt_cases(files, tmp_path)
    (tmp_path / "a_file").write_text("x")
    cases["out is a file"] = [files["root"] / "a1", "--out", tmp_path / "a_file"]
    for name, argv in cases.items():
        argv = [*argv, "--out", tmp_path / "o"] if "--out" not in argv else argv
        assert _run(*argv) == 2, name
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("minilora: error: "), (name, err)
    assert not (tmp_path / "o").exists()                   # nothing written on bad input


def test_bad_input_subprocess_no_traceback(files, tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "adapter_config.json").write_text((files["root"] / "a1" / "adapter_config.json").read_text())
    (tmp_path / "w" / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad")
    for folder in (tmp_path / "missing", tmp_path / "w"):
        proc = subprocess.run([sys.executable, "-m", "minilora", "analyze", str(folder), "--out",
                               str(tmp_path / "o")], capture_output=True, text=True)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and str(folder) in proc.stderr


def _recording(monkeypatch, name, **small):
    """Replace minilora.analysis.<name> by the real function on smaller sizes, keeping its result."""
    import minilora.analysis as analysis

    real, seen = getattr(analysis, name), {}

    def lab(**kw):
        seen.update(kw=kw, result=real(**kw, **small))
        return seen["result"]

    monkeypatch.setattr(analysis, name, lab)
    return seen


def test_lab_intrinsic_rank(tmp_path, monkeypatch):
    seen = _recording(monkeypatch, "intrinsic_rank_lab", d_in=12, d_out=10, k=2, steps=60, n_samples=32)
    assert _run("--lab", "intrinsic-rank", "--seed", "3", "--out", tmp_path) == 0
    s, ref = _summary(tmp_path), seen["result"]
    assert seen["kw"] == {"seed": 3} and ref["config"]["seed"] == 3
    assert s["rows"] == ref["rows"] and s["config"] == ref["config"] and s["lab"] == "intrinsic-rank"
    assert _is_png(tmp_path / "intrinsic_rank.png")
    md = (tmp_path / "summary.md").read_text()
    assert all(f"| {r['r']} | {r['loss']:.3g} |" in md for r in ref["rows"])


def test_lab_precision(tmp_path, monkeypatch):
    seen = _recording(monkeypatch, "precision_lab", sizes=(16, 32), magnitudes=(0.1,), cycles=(1, 5),
                      cycle_size=16, quant_size=64, quant_magnitudes=(0.1,))
    assert _run("--lab", "precision", "--out", tmp_path) == 0
    s, ref = _summary(tmp_path), seen["result"]
    assert seen["kw"] == {"seed": 0}
    assert all(s[k] == ref[k] for k in ("merge", "cycles", "quant"))
    assert _is_png(tmp_path / "precision.png")
    md = (tmp_path / "summary.md").read_text()
    assert all(f"{r['rel_err']:.2e}" in md for r in ref["merge"])


def test_compare_ranks_smoke(tmp_path, capsys):
    # two optimizer steps per adapter (24 rows, batch 8 x 2): the pipeline, not the finding.
    # (A gets no gradient in the first step, while B is still zero.)
    assert _run("--compare-ranks", "2,4", "--max-train", "24", "--out", tmp_path, "--no-progress",
                "--max-plots", "1") == 0
    s = _summary(tmp_path)
    assert list(s["adapters"]) == ["r2_seed0", "r4_seed0", "r2_seed1"]
    assert all(a["steps"] == 2 for a in s["adapters"].values())
    assert set(s["pairs"]) == {"r2_vs_r4", "seed0_vs_seed1"}
    for name in ("phi_A_r2_vs_r4.png", "phi_left_seed0_vs_seed1.png", "spectra_r4_seed0.png"):
        assert _is_png(tmp_path / name), name
    # the pair's numbers are what `minilora analyze A --vs B` gives on the saved adapters
    assert _run(tmp_path / "adapter_r2_seed0", "--vs", tmp_path / "adapter_r4_seed0",
                "--out", tmp_path / "cli", "--max-plots", "1") == 0
    cli = _summary(tmp_path / "cli")["vs"]["rows"]
    rows = s["pairs"]["r2_vs_r4"]["rows"]
    assert len(rows) == 8 and [r["module"] for r in rows] == [r["module"] for r in cli]
    for r, c in zip(rows, cli, strict=True):
        for kind in ("A", "right", "left"):
            assert r[kind] == pytest.approx(c[kind], rel=1e-12)
    # the control: phi between the A matrices at init, as add_lora draws them for seed 0
    base = from_pretrained(base_dir())
    init = {}
    for r in (2, 4):
        m = LlamaForCausalLM(base.config, dict(base.params))
        add_lora(m, LoraConfig(r=r, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                               init_lora_weights="kaiming"), seed=0)
        init[r] = {mod: m.params[mod + ".lora_A.weight"] for mod in m.adapters.modules}
    for r in rows:
        a2, a4 = init[2][r["module"]], init[4][r["module"]]
        assert r["A_init"]["phi_11"] == pytest.approx(phi(a2, a4, 1, 1), rel=1e-9, abs=1e-12)
        assert r["A_init"]["phi_all"] == pytest.approx(phi(a2, a4, 2, 4), rel=1e-9, abs=1e-12)
    # same seed: the first module's A of rank 2 is the first rows of rank 4's at init; training
    # moved it (phi below 1 afterwards)
    assert rows[0]["A_init"]["phi_all"] == pytest.approx(1.0, abs=1e-12)
    assert rows[0]["A"]["phi_all"] < 1 - 1e-9 and rows[1]["A_init"]["phi_all"] < 0.9
    assert "phi(i = 1, j = 1)" in capsys.readouterr().out


def test_reads_what_peft_writes(tmp_path):
    """Oracle (torch + peft): a PEFT-saved adapter; the numbers against torch's own delta W."""
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    model.save_pretrained(tmp_path / "base")
    pm = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                    alpha_pattern={"v_proj": 2}), adapter_name="myad")
    deltas = {}
    with torch.no_grad():
        for name, mod in pm.named_modules():
            if hasattr(mod, "lora_B") and "myad" in mod.lora_B:
                torch.nn.init.normal_(mod.lora_B["myad"].weight)
                key = name.removeprefix("base_model.model.")
                deltas[key] = (mod.get_delta_weight("myad").double(), mod.base_layer.weight.double())
    assert len(deltas) == 4
    pm.save_pretrained(tmp_path / "peft")
    assert _run(tmp_path / "peft" / "myad", "--base", tmp_path / "base", "--out", tmp_path / "rep") == 0
    s = _summary(tmp_path / "rep")
    assert [r["module"] for r in s["spectra"]] == sorted(deltas, key=lambda n: (int(n.split(".")[2]), n))
    for row, amp in zip(s["spectra"], s["amplification"]["rows"], strict=True):
        delta, w = deltas[row["module"]]
        sv = torch.linalg.svdvals(delta)[:4].numpy()
        np.testing.assert_allclose(row["sigma"], sv, rtol=1e-5, atol=1e-6)
        u, _, vh = torch.linalg.svd(delta)
        proj = torch.linalg.norm(u[:, :4].T @ w @ vh[:4].T).item()
        assert amp["delta_fro"] == pytest.approx(torch.linalg.norm(delta).item(), rel=1e-5)
        assert amp["proj_delta"] == pytest.approx(proj, rel=1e-4)
