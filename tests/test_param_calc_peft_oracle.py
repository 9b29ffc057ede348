"""param-calc against the real thing: transformers builds each preset on the meta device (no memory,
no download), PEFT adapts it, and get_nb_trainable_parameters() must equal the calculator's JSON.

Optional: skips unless torch, transformers and peft are installed (they are not in the project's
environment). Run it from a separate venv, e.g.
    PYTHONPATH=. /tmp/oracle/bin/python -m pytest tests/test_param_calc_peft_oracle.py
"""
import json
import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
safetensors_torch = pytest.importorskip("safetensors.torch")

from param_calc.architectures import build_architecture  # noqa: E402
from param_calc.cli import main  # noqa: E402
from param_calc.counting import count_lora  # noqa: E402
from param_calc.memory import adapter_file_bytes  # noqa: E402
from param_calc.presets import PRESETS, preset_config  # noqa: E402

LLAMA_LIKE = [n for n, (_, c) in PRESETS.items() if c["model_type"] in ("llama", "mistral", "qwen2")]
GPT2 = [n for n, (_, c) in PRESETS.items() if c["model_type"] == "gpt2"]

# (preset group, CLI target args, LoraConfig kwargs)
CASES = (
    [(m, ["--targets", "q_proj,k_proj,v_proj", "--rank", "4"], dict(r=4, target_modules=["q_proj", "k_proj", "v_proj"]))
     for m in LLAMA_LIKE]
    + [(m, ["--targets", "all-linear", "--rank", "8"], dict(r=8, target_modules="all-linear")) for m in LLAMA_LIKE]
    + [(m, ["--rank", "16"], dict(r=16)) for m in LLAMA_LIKE + GPT2]           # PEFT's default targets
    + [(m, ["--targets", "c_attn", "--rank", "4"], dict(r=4, target_modules=["c_attn"])) for m in GPT2]
    + [(m, ["--targets", "c_proj", "--rank", "4"], dict(r=4, target_modules=["c_proj"])) for m in GPT2]
    + [(m, ["--targets", "all-linear", "--rank", "2"], dict(r=2, target_modules="all-linear")) for m in GPT2]
    + [
        ("gpt2", ["--targets", "attn.c_proj,c_fc", "--rank", "8"], dict(r=8, target_modules=["attn.c_proj", "c_fc"])),
        ("llama-3.2-1b", ["--targets", "all-linear", "--rank", "8",
                          "--rank-pattern", "down_proj=32,layers.0.self_attn.q_proj=2"],
         dict(r=8, target_modules="all-linear", rank_pattern={"down_proj": 32, "layers.0.self_attn.q_proj": 2})),
        ("llama-3.2-1b", ["--targets", "q_proj,v_proj", "--rank", "8", "--dora"],
         dict(r=8, target_modules=["q_proj", "v_proj"], use_dora=True)),
        ("llama-3.2-1b", ["--targets", "embed_tokens,q_proj", "--rank", "4"],
         dict(r=4, target_modules=["embed_tokens", "q_proj"])),
        ("llama-3.1-8b", ["--targets", "all-linear", "--exclude", "down_proj", "--rank", "4"],
         dict(r=4, target_modules="all-linear", exclude_modules=["down_proj"])),
        ("llama-3.1-8b", ["--target-regex", r".*\.layers\.(0|31)\.self_attn\.(q|v)_proj", "--rank", "8"],
         dict(r=8, target_modules=r".*\.layers\.(0|31)\.self_attn\.(q|v)_proj")),
        ("gpt2-medium", ["--targets", "lm_head,c_attn", "--rank", "4"],
         dict(r=4, target_modules=["lm_head", "c_attn"])),
    ]
)


def hf_model(cfg: dict):
    """A CausalLM for a preset config on the meta device."""
    cfg = dict(cfg)
    model_type = cfg.pop("model_type")
    hf_cfg = transformers.AutoConfig.for_model(model_type, **cfg)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.AutoModelForCausalLM.from_config(hf_cfg)


def cli_json(argv, capsys) -> dict:
    assert main(argv + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", list(PRESETS))
def test_base_matches_transformers(name):
    cfg = preset_config(name)
    arch = build_architecture(cfg, name)
    if cfg["model_type"] == "gpt3":      # GPT-3's layout is GPT-2's with separate q/k/v: same totals
        cfg["model_type"] = "gpt2"
        model = hf_model(cfg)
        assert sum(p.numel() for p in model.parameters()) == arch.base_params
        return
    model = hf_model(cfg)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes == arch.param_shapes
    assert sum(p.numel() for p in model.parameters()) == arch.base_params


@pytest.mark.parametrize("name,argv,lora_kwargs", CASES,
                         ids=[f"{c[0]}-{' '.join(c[1])}" for c in CASES])
def test_json_equals_peft(name, argv, lora_kwargs, capsys, tmp_path):
    doc = cli_json(["--model", name] + argv, capsys)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(hf_model(preset_config(name)), peft.LoraConfig(**lora_kwargs))
    trainable, total = pm.get_nb_trainable_parameters()
    assert (doc["lora_params"], doc["peft_all_params"]) == (trainable, total)
    assert doc["base_params"] == total - trainable
    assert doc["trainable_percent"] == pytest.approx(100 * trainable / total, rel=1e-12)
    assert doc["ratio"] == pytest.approx((total - trainable) / trainable, rel=1e-12)
    assert sum(r["total"] for r in doc["per_module"]) == trainable
    assert sum(r["count"] for r in doc["per_module"]) == doc["adapted_modules"]

    # The same modules at the same ranks.
    theirs = {n: m.r["default"] for n, m in pm.base_model.model.named_modules()
              if isinstance(m, peft.tuners.lora.LoraLayer)}
    targets = lora_kwargs.get("target_modules")
    ours = count_lora(build_architecture(preset_config(name), name), lora_kwargs["r"],
                      targets, lora_kwargs.get("rank_pattern"), lora_kwargs.get("exclude_modules"),
                      lora_kwargs.get("use_dora", False))
    assert {a.module.name: a.rank for a in ours.adapted} == theirs

    # adapter_model.safetensors: the exact size PEFT's tensors make (real tensors, small adapters only).
    if trainable <= 30_000_000 and not any(a.module.kind == "embedding" or a.module.name == "lm_head"
                                           for a in ours.adapted):
        sd = peft.get_peft_model_state_dict(pm)
        real = {k: torch.empty(tuple(v.shape), dtype=torch.float32) for k, v in sd.items()}
        path = tmp_path / "adapter_model.safetensors"
        safetensors_torch.save_file(real, str(path), metadata={"format": "pt"})
        assert path.stat().st_size == adapter_file_bytes(ours) == doc["memory"]["bytes"]["adapter_file"]
