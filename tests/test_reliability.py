"""Every bad input of issue 10, one table: each raises MiniLoraError with one line that names the
problem; the CLIs print that line and exit 2. Plus: safe writes survive a crash mid-write, a failed
merge leaves the weights unchanged, and nothing in the package loads with pickle."""
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from minilora.adapters import LoraConfig, add_lora, delete_adapter, merge_lora, remove_lora, set_adapter, unmerge_lora
from minilora.config import LlamaConfig
from minilora.data import ByteTokenizer, collate, iterate_batches, load_jsonl
from minilora.errors import MiniLoraError
from minilora.io import from_pretrained, load_safetensors, save_pretrained, save_safetensors
from minilora.io.atomic import atomic_dir, atomic_path, write_json
from minilora.io.peft import load_adapter, save_adapter
from minilora.model import LlamaForCausalLM
from minilora.runs.finlora import get_run, load_runs
from minilora.training import TrainConfig, fit
from minilora.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CFG = LlamaConfig(vocab_size=259, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2)
CFG_WIDE = LlamaConfig(vocab_size=259, hidden_size=32, intermediate_size=32, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2)
TARGETS = ["q_proj", "v_proj"]
PREFIX = "base_model.model."
IDS = np.array([[1, 2, 3, 4]])


# ---- builders -----------------------------------------------------------------------------------
def model(cfg=CFG):
    return LlamaForCausalLM.init(cfg, seed=0)


def adapted(cfg=CFG, **kw):
    m = model(cfg)
    add_lora(m, LoraConfig(**{"r": 2, "lora_alpha": 4, "target_modules": TARGETS, **kw}))
    for name in m.adapters.param_names():
        m.params[name] = m.params[name] + 0.01
    return m


def merged():
    m = adapted()
    merge_lora(m)
    return m


def examples(n=4):
    return [([256, 10 + i, 20, 30], [-100, -100, 20, 30]) for i in range(n)]


def adapter_dir(tmp):
    d = tmp / "adapter"
    save_adapter(adapted(), d)
    return d


def edit_adapter_tensors(tmp, change):
    d = adapter_dir(tmp)
    p = d / "adapter_model.safetensors"
    t = load_safetensors(p)
    change(t)
    save_safetensors(p, t)
    return d


def edit_json(path, change):
    d = json.loads(Path(path).read_text())
    change(d)
    Path(path).write_text(json.dumps(d))


def truncate(path, keep=0.5):
    raw = Path(path).read_bytes()
    Path(path).write_bytes(raw[:int(len(raw) * keep)])


def model_dir(tmp):
    d = tmp / "base"
    save_pretrained(model(), d)
    return d


def model_dir_with(tmp, change_config=None, change_weights=None, corrupt=None):
    d = model_dir(tmp)
    if change_config:
        edit_json(d / "config.json", change_config)
    if change_weights:
        t = load_safetensors(d / "model.safetensors")
        change_weights(t)
        save_safetensors(d / "model.safetensors", t)
    if corrupt:
        corrupt(d)
    return d


RUN = {"base_model": "minilora/tiny-sentiment-base", "dataset_path": "train.jsonl", "lora_r": 8, "quant_bits": 8,
       "learning_rate": 0.001, "num_epochs": 1, "batch_size": 8, "gradient_accumulation_steps": 1}


def finlora(tmp, run=None, raw=None, name="r1"):
    p = tmp / "finetune_configs.json"
    p.write_text(raw if raw is not None else json.dumps({name: run}))
    return p


def without(d, *keys):
    return {k: v for k, v in d.items() if k not in keys}


def jsonl(tmp, text):
    p = tmp / "rows.jsonl"
    p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
    return p


def checkpoint_dir(tmp, corrupt=None):
    m = adapted()
    d = tmp / "ckpt"
    fit(m, examples(), TrainConfig(batch_size=2), progress=False, checkpoint_dir=d)
    if corrupt:
        corrupt(d)
    return d


def nan_merge():
    m = adapted()
    name = next(iter(sorted(m.adapters.param_names())))
    m.params[name][0, 0] = np.inf
    return m


# ---- the table: (what is bad, how it is fed in, what the message must say) ----------------------
CASES = [
    # LoRA hyperparameters
    ("rank zero", lambda t: LoraConfig(r=0), r"rank r must be a positive integer, got 0"),
    ("rank negative", lambda t: LoraConfig(r=-3), r"rank r must be a positive integer, got -3"),
    ("rank not an integer (float)", lambda t: LoraConfig(r=2.5), r"rank r must be a positive integer, got 2\.5"),
    ("rank not an integer (str)", lambda t: LoraConfig(r="4"), r"rank r must be a positive integer, got '4'"),
    ("rank bool", lambda t: LoraConfig(r=True), r"rank r must be a positive integer, got True"),
    ("rank in rank_pattern <= 0", lambda t: adapted(rank_pattern={"q_proj": 0}), r"rank r .* got 0"),
    ("rank > min(in, out)", lambda t: adapted(r=9, target_modules=["v_proj"]),
     r"rank 9 exceeds min\(in, out\) = 8 for model\.layers\.0\.self_attn\.v_proj \(16 -> 8\)"),
    ("alpha zero", lambda t: LoraConfig(lora_alpha=0), r"lora_alpha must be a positive finite number, got 0"),
    ("alpha negative", lambda t: LoraConfig(lora_alpha=-1.0), r"lora_alpha .* got -1\.0"),
    ("alpha infinite", lambda t: LoraConfig(lora_alpha=float("inf")), r"lora_alpha .* got inf"),
    ("alpha in alpha_pattern <= 0", lambda t: adapted(alpha_pattern={"v_proj": -2}), r"lora_alpha .* got -2"),
    ("dropout negative", lambda t: LoraConfig(lora_dropout=-0.1), r"lora_dropout must be in \[0, 1\), got -0\.1"),
    ("dropout one", lambda t: LoraConfig(lora_dropout=1.0), r"lora_dropout must be in \[0, 1\), got 1\.0"),
    ("dropout nan", lambda t: LoraConfig(lora_dropout=float("nan")), r"lora_dropout .* got nan"),
    ("target matches nothing", lambda t: adapted(target_modules=["q_proj", "qkv_proj"]),
     r"qkv_proj matched nothing; available names: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj"),
    ("target regex matches nothing", lambda t: adapted(target_modules=r".*\.attn\.c_attn"), r"matched nothing"),
    ("target list empty", lambda t: LoraConfig(target_modules=[]), r"target_modules must be .* got \[\]"),
    ("target not a name", lambda t: LoraConfig(target_modules=[3]), r"target_modules must be .* got \[3\]"),
    ("target invalid regex", lambda t: LoraConfig(target_modules="(q_proj"), r"not a valid regular expression"),
    ("unsupported init", lambda t: LoraConfig(init_lora_weights="pissa"), r"init_lora_weights='pissa'"),
    ("unsupported bias", lambda t: LoraConfig(bias="all"), r"bias='all' is not supported"),
    # adapter files
    ("adapter shape mismatch", lambda t: load_adapter(model(CFG_WIDE), adapter_dir(t)),
     r"model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight has shape \(2, 16\), .* need \(2, 32\)"),
    ("adapter missing key", lambda t: load_adapter(model(), edit_adapter_tensors(
        t, lambda d: d.pop(PREFIX + "model.layers.1.self_attn.v_proj.lora_B.weight"))),
     r"missing key base_model\.model\.model\.layers\.1\.self_attn\.v_proj\.lora_B\.weight"),
    ("adapter unexpected key", lambda t: load_adapter(model(), edit_adapter_tensors(
        t, lambda d: d.update({PREFIX + "model.layers.0.mlp.up_proj.lora_A.weight": np.zeros((2, 16), "f4")}))),
     r"unexpected key base_model\.model\.model\.layers\.0\.mlp\.up_proj\.lora_A\.weight"),
    ("adapter non-finite", lambda t: load_adapter(model(), edit_adapter_tensors(
        t, lambda d: d[PREFIX + "model.layers.0.self_attn.q_proj.lora_B.weight"].fill(np.nan))),
     r"q_proj\.lora_B\.weight holds non-finite"),
    ("adapter safetensors truncated", lambda t: load_adapter(model(), _then(adapter_dir(t), lambda d: truncate(
        d / "adapter_model.safetensors"))), r"adapter_model\.safetensors: not a valid safetensors file"),
    ("adapter safetensors corrupt", lambda t: load_adapter(model(), _then(adapter_dir(t), lambda d: (
        d / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage" + bytes(64)))),
     r"adapter_model\.safetensors: not a valid safetensors file"),
    ("adapter_config.json truncated", lambda t: load_adapter(model(), _then(adapter_dir(t), lambda d: truncate(
        d / "adapter_config.json"))), r"adapter_config\.json: not valid JSON"),
    ("adapter_config.json missing r", lambda t: load_adapter(model(), _then(adapter_dir(t), lambda d: edit_json(
        d / "adapter_config.json", lambda c: c.pop("r")))), r"adapter_config\.json: missing field r"),
    ("adapter_config.json not LoRA", lambda t: load_adapter(model(), _then(adapter_dir(t), lambda d: edit_json(
        d / "adapter_config.json", lambda c: c.update(peft_type="IA3")))), r"peft_type 'IA3' is not LORA"),
    ("adapter_config.json bad rank", lambda t: load_adapter(model(), _then(adapter_dir(t), lambda d: edit_json(
        d / "adapter_config.json", lambda c: c.update(r=-1)))), r"rank r must be a positive integer, got -1"),
    # model folders
    ("config.json truncated", lambda t: from_pretrained(model_dir_with(t, corrupt=lambda d: truncate(
        d / "config.json"))), r"config\.json: not valid JSON"),
    ("config.json missing field", lambda t: from_pretrained(model_dir_with(
        t, change_config=lambda c: c.pop("hidden_size"))), r"config\.json: missing field\(s\) hidden_size"),
    ("config.json unsupported model_type", lambda t: from_pretrained(model_dir_with(
        t, change_config=lambda c: c.update(model_type="gpt2"))), r"unsupported model_type 'gpt2'"),
    ("config.json null vocab_size", lambda t: from_pretrained(model_dir_with(
        t, change_config=lambda c: c.update(vocab_size=None))), r"vocab_size must be a positive integer, got None"),
    ("config.json GQA mismatch", lambda t: from_pretrained(model_dir_with(
        t, change_config=lambda c: c.update(num_key_value_heads=3))), r"num_key_value_heads \(3\) must divide"),
    ("model.safetensors truncated", lambda t: from_pretrained(model_dir_with(t, corrupt=lambda d: truncate(
        d / "model.safetensors", 0.9))), r"model\.safetensors: not a valid safetensors file"),
    ("model.safetensors random bytes", lambda t: from_pretrained(model_dir_with(t, corrupt=lambda d: (
        d / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(500)))), r"not a valid safetensors"),
    ("weight missing", lambda t: from_pretrained(model_dir_with(
        t, change_weights=lambda w: w.pop("model.norm.weight"))), r"model\.norm\.weight"),
    ("weight shape mismatch", lambda t: from_pretrained(model_dir_with(
        t, change_weights=lambda w: w.update({"model.norm.weight": np.ones(3, "f4")}))),
     r"model\.norm\.weight .*\(3,\).*\(16,\)"),
    ("model folder missing", lambda t: from_pretrained(t / "nope"), r"nope"),
    # FinLoRA configs
    ("finlora missing keys", lambda t: load_runs(finlora(t, without(RUN, "dataset_path", "quant_bits"))),
     r"run 'r1': missing key\(s\) quant_bits, dataset_path"),
    ("finlora quant_bits 3", lambda t: load_runs(finlora(t, {**RUN, "quant_bits": 3})),
     r"run 'r1': quant_bits must be 4, 8 or 16, got 3"),
    ("finlora quant_bits 32", lambda t: load_runs(finlora(t, {**RUN, "quant_bits": 32})), r"quant_bits .* got 32"),
    ("finlora quant_bits 8.0", lambda t: load_runs(finlora(t, {**RUN, "quant_bits": 8.0})), r"quant_bits .* 8\.0"),
    ("finlora quant_bits '8'", lambda t: load_runs(finlora(t, {**RUN, "quant_bits": "8"})), r"quant_bits .* '8'"),
    ("finlora unknown key", lambda t: load_runs(finlora(t, {**RUN, "lora_rank": 4})), r"unknown key\(s\) 'lora_rank'"),
    ("finlora key with a newline", lambda t: load_runs(finlora(t, {**RUN, "lr\nx": 1})), r"unknown key\(s\) 'lr\\nx'"),
    ("target name with a newline", lambda t: adapted(target_modules=["q_proj\nv_proj"]),
     r"q_proj v_proj matched nothing"),
    ("finlora lora_r zero", lambda t: load_runs(finlora(t, {**RUN, "lora_r": 0})), r"lora_r must be a positive"),
    ("finlora lr infinite", lambda t: load_runs(finlora(t, {**RUN, "learning_rate": 1e999})),
     r"learning_rate must be a positive finite number"),
    ("finlora dropout 1", lambda t: load_runs(finlora(t, {**RUN, "lora_dropout": 1})), r"lora_dropout must be in"),
    ("finlora targets not a list", lambda t: load_runs(finlora(t, {**RUN, "target_modules": 7})),
     r"target_modules must be"),
    ("finlora run not an object", lambda t: load_runs(finlora(t, [1, 2])), r"expected an object, got list"),
    ("finlora no run of that name", lambda t: get_run(finlora(t, RUN), "r2"), r"no run named 'r2'; available: r1"),
    ("finlora no runs", lambda t: load_runs(finlora(t, raw="{}")), r"no runs defined"),
    ("finlora truncated JSON", lambda t: load_runs(finlora(t, raw='{"r1": {"lora_r": 8,')), r"not valid JSON"),
    # token ids and data sets
    ("token id too large", lambda t: model().forward(np.array([[1, 300]])),
     r"token id 300 is out of range for vocab size 259 \(valid ids are 0\.\.258\)"),
    ("token id negative", lambda t: model().forward(np.array([[-1, 2]])), r"token id -1 is out of range"),
    ("token id in loss_and_grads", lambda t: adapted().loss_and_grads(np.array([[1, 259]]), np.array([[1, 2]])),
     r"token id 259 is out of range"),
    ("token ids not integers", lambda t: model().forward(np.array([[1.0, 2.0]])), r"token ids must be integers"),
    ("token ids not 2-D", lambda t: model().forward(np.array([1, 2])), r"input_ids must be a \(batch, seq_len\)"),
    ("empty data set (fit)", lambda t: fit(adapted(), [], TrainConfig(), progress=False), r"training set is empty"),
    ("empty data set (JSONL)", lambda t: load_jsonl(jsonl(t, "\n\n")), r"no rows \(empty file\)"),
    ("empty data set (batches)", lambda t: list(iterate_batches([], 2, 0, 0)), r"at least one example"),
    ("empty data set (collate)", lambda t: collate([]), r"at least one example"),
    ("JSONL truncated line", lambda t: load_jsonl(jsonl(t, '{"context": "a", "target": "positive"}\n{"cont')),
     r"line 2: invalid JSON"),
    ("JSONL missing target", lambda t: load_jsonl(jsonl(t, '{"context": "a"}\n')), r"line 1: missing 'target'"),
    ("JSONL not UTF-8", lambda t: load_jsonl(jsonl(t, b"\xff\xfe{}")), r"not UTF-8"),
    ("example too long", lambda t: __import__("minilora.data", fromlist=["x"]).encode_example(
        "x" * 200, "positive", ByteTokenizer()), r"longer than max_len=128"),
    # merged state
    ("merge twice", lambda t: merge_lora(merged()), r"already merged; merging again would add the update twice"),
    ("train while merged (fit)", lambda t: fit(merged(), examples(), TrainConfig(), progress=False),
     r"cannot train while adapters are merged"),
    ("train while merged (loss_and_grads)", lambda t: merged().loss_and_grads(IDS, IDS),
     r"cannot train while the adapters are merged"),
    ("delete adapter while merged (remove_lora)", lambda t: remove_lora(merged()),
     r"cannot remove an adapter while it is merged"),
    ("delete adapter while merged (delete_adapter)", lambda t: delete_adapter(merged(), "default"),
     r"cannot delete adapter 'default' while it is merged"),
    ("replace adapter while merged (add_lora)", lambda t: add_lora(merged(), LoraConfig(r=2), adapter_name="b"),
     r"cannot add adapters while adapters are merged"),
    ("replace adapter while merged (set_adapter)", lambda t: set_adapter(_two_adapters_merged(), "b"),
     r"cannot switch to adapter 'b' while 'default' is merged"),
    ("quantize while merged", lambda t: merged().quantize_base(8), r"quantize before merging"),
    ("merge to non-finite", lambda t: merge_lora(nan_merge()), r"merge produced non-finite values"),
    ("nothing to merge", lambda t: merge_lora(model()), r"no adapter to merge"),
    # training settings and checkpoints
    ("nothing to train", lambda t: fit(model(), examples(), TrainConfig(), progress=False), r"nothing to train"),
    ("learning rate zero", lambda t: TrainConfig(learning_rate=0), r"learning_rate must be a finite number > 0"),
    ("batch size zero", lambda t: TrainConfig(batch_size=0), r"batch_size must be an integer >= 1, got 0"),
    ("accumulation float", lambda t: TrainConfig(gradient_accumulation_steps=2.0), r"gradient_accumulation_steps"),
    ("warmup ratio > 1", lambda t: TrainConfig(warmup_ratio=1.5), r"warmup_ratio .* in \[0, 1\], got 1\.5"),
    ("grad clip nan", lambda t: TrainConfig(max_grad_norm=float("nan")), r"max_grad_norm .* got nan"),
    ("checkpoint_every without a folder", lambda t: fit(adapted(), examples(), TrainConfig(), progress=False,
                                                        checkpoint_every=2), r"checkpoint_every needs a checkpoint"),
    ("resume from a missing folder", lambda t: fit(adapted(), examples(), TrainConfig(batch_size=2), progress=False,
                                                   resume_from=t / "nope"), r"nope: no such checkpoint folder"),
    ("resume from a truncated state.json", lambda t: fit(adapted(), examples(), TrainConfig(batch_size=2),
                                                         progress=False, resume_from=checkpoint_dir(
        t, lambda d: truncate(d / "state.json"))), r"state\.json: not valid JSON"),
    ("resume from a corrupt checkpoint", lambda t: load_checkpoint(checkpoint_dir(
        t, lambda d: truncate(d / "trainable.safetensors"))), r"trainable\.safetensors: not a valid safetensors"),
    ("resume from another run's checkpoint", lambda t: fit(adapted(), examples(), TrainConfig(batch_size=4),
                                                           progress=False, resume_from=checkpoint_dir(t)),
     r"checkpoint was made with batch_size=2, this run has batch_size=4"),
]


def _then(value, action):
    action(value)
    return value


def _two_adapters_merged():
    m = adapted()
    add_lora(m, LoraConfig(r=2, target_modules=TARGETS), adapter_name="b")
    merge_lora(m)
    return m


@pytest.mark.parametrize("make,match", [pytest.param(f, m, id=name) for name, f, m in CASES])
def test_bad_input_raises_one_clear_error(tmp_path, make, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MiniLoraError) as info:
            make(tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg and msg, msg
    assert re.search(match, msg), f"{msg!r} does not match {match!r}"


def test_the_table_covers_every_bad_input_of_the_issue():
    names = " | ".join(n for n, _, _ in CASES)
    for topic in ("rank zero", "rank not an integer", "rank > min(in, out)", "alpha zero", "dropout negative",
                  "dropout one", "target matches nothing", "adapter shape mismatch", "adapter missing key",
                  "adapter unexpected key", "safetensors truncated", "safetensors corrupt", "JSON",
                  "config.json missing field", "unsupported model_type", "finlora missing keys",
                  "finlora quant_bits 3", "token id too large", "empty data set", "merge twice",
                  "train while merged", "delete adapter while merged", "replace adapter while merged"):
        assert topic in names, topic
    assert len(CASES) >= 80


def test_no_savings_warns_and_matches_are_reported():
    """r*(in+out) >= in*out warns (LoRA saves nothing there); add_lora reports matches per target."""
    m = model()
    with pytest.warns(UserWarning, match=r"v_proj saves nothing: r\*\(in\+out\) = 192 >= in\*out = 128"):
        add_lora(m, LoraConfig(r=8, target_modules=["v_proj"]))
    m = model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # r=2 on q/v: savings, no warning
        counts = add_lora(m, LoraConfig(r=2, target_modules=["q_proj", "v_proj", "layers.1.mlp.up_proj"]))
    assert counts == {"q_proj": 2, "v_proj": 2, "layers.1.mlp.up_proj": 1}


def test_failed_merge_leaves_the_weights_unchanged():
    m = nan_merge()
    before = {k: v.copy() for k, v in m.params.items()}
    with pytest.raises(MiniLoraError, match="non-finite"):
        merge_lora(m)
    assert not m.adapters.merged
    assert all(np.array_equal(before[k], v, equal_nan=True) for k, v in m.params.items())


def test_failed_adapter_load_leaves_the_model_unchanged(tmp_path):
    m = model()
    before = set(m.params)
    d = edit_adapter_tensors(tmp_path, lambda t: t.pop(PREFIX + "model.layers.1.self_attn.v_proj.lora_B.weight"))
    with pytest.raises(MiniLoraError, match="missing key"):
        load_adapter(m, d)
    assert set(m.params) == before and not m.adapters.modules and not m.trainable


def test_merged_state_errors_are_also_runtime_errors():
    """MiniLoraStateError keeps `except RuntimeError` callers working."""
    with pytest.raises(RuntimeError, match="cannot train"):
        merged().loss_and_grads(IDS, IDS)
    unmerge_lora(m := merged())
    m.loss_and_grads(IDS, IDS)


# ---- the CLIs: one line on stderr, exit 2 -------------------------------------------------------
CLI_CASES = [
    ("minilora", ["no-such-command"], r"invalid choice: 'no-such-command'"),
    ("minilora", ["demo-linear", "--steps", "0"], r"--steps must be >= 1, got 0"),
    ("minilora", ["demo-linear", "--steps", "many"], r"argument --steps: invalid int value: 'many'"),
    ("minilora", ["train", "--run", "x"], r"the following arguments are required: --config"),
    ("minilora", ["train", "--config", "{tmp}/missing.json", "--run", "x"], r"missing\.json: file not found"),
    ("minilora", ["train", "--config", "{cfg_bad_bits}", "--run", "r1"], r"quant_bits must be 4, 8 or 16, got 2"),
    ("minilora", ["train", "--config", "{cfg_ok}", "--run", "nope"], r"no run named 'nope'"),
    ("minilora", ["train", "--config", "{cfg_ok}", "--run", "r1"], r"train\.jsonl: no such file"),
    ("minilora", ["train", "--config", "{cfg_ok}", "--run", "r1", "--checkpoint-every", "-1"],
     r"--checkpoint-every must be >= 0, got -1"),
    ("minilora", ["train", "--config", "{cfg_ok}", "--run", "r1", "--resume", "{tmp}/nope"],
     r"--resume .*nope: no such checkpoint folder"),
    ("minilora", ["merge", "base", "adapter", "--", "--"], r"argument OUT_DIR: expected one argument"),
    ("param-calc", ["--model", "llama-3.1-70b", "--rank", "0"], r"must be a positive integer, got 0"),
    ("param-calc", ["--model", "no-such-model"], r"no-such-model"),
    ("param-calc", ["--finlora-config", "{cfg_pc_bad_bits}"], r"quant_bits"),
]


@pytest.mark.parametrize("prog,argv,match", [pytest.param(*c, id=" ".join([c[0], *c[1]])) for c in CLI_CASES])
def test_cli_bad_input_prints_one_line_and_exits_2(tmp_path, capsys, prog, argv, match):
    from minilora.cli import main as minilora_main
    from param_calc.cli import main as param_calc_main

    (tmp_path / "bad").mkdir()
    (tmp_path / "pc").mkdir()
    subs = {"tmp": str(tmp_path), "cfg_ok": str(finlora(tmp_path, RUN)),
            "cfg_bad_bits": str(finlora(tmp_path / "bad", {**RUN, "quant_bits": 2})),
            "cfg_pc_bad_bits": str(finlora(tmp_path / "pc", {**RUN, "quant_bits": 2,
                                                               "base_model": "meta-llama/Llama-3.1-8B"}, name="pc"))}
    argv = [a.format(**subs) for a in argv]
    capsys.readouterr()
    code = (minilora_main if prog == "minilora" else param_calc_main)(argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err and re.search(match, lines[0]), lines[0]


# ---- safe writes ------------------------------------------------------------------------------
def test_atomic_path_keeps_the_old_file_when_the_writer_fails_mid_write(tmp_path):
    p = tmp_path / "summary.json"
    write_json(p, {"old": True})
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(p) as tmp:
            with open(tmp, "w") as f:
                f.write('{"new": tr')                  # half a file ...
            raise RuntimeError("disk full")            # ... then the crash
    assert json.loads(p.read_text()) == {"old": True}
    assert os.listdir(tmp_path) == ["summary.json"]    # the temporary file is gone


def test_safetensors_writer_crash_keeps_the_old_adapter(tmp_path, monkeypatch):
    """save_adapter over an existing adapter, with the safetensors writer dying half-way: the old
    folder is still there, whole, and loads."""
    import safetensors.numpy

    d = adapter_dir(tmp_path)
    old = load_safetensors(d / "adapter_model.safetensors")
    real = safetensors.numpy.save_file

    def dying(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        truncate(filename, 0.5)                         # a torn file in the temporary folder
        raise OSError("killed while writing")

    monkeypatch.setattr(safetensors.numpy, "save_file", dying)
    m = adapted()
    for n in m.adapters.param_names():
        m.params[n] = m.params[n] * 3
    with pytest.raises(OSError, match="killed"):
        save_adapter(m, d)
    monkeypatch.setattr(safetensors.numpy, "save_file", real)
    now = load_safetensors(d / "adapter_model.safetensors")
    assert now.keys() == old.keys() and all(np.array_equal(now[k], old[k]) for k in old)
    assert load_adapter(model(), d) is not None
    assert sorted(os.listdir(tmp_path)) == ["adapter"]


def test_checkpoint_writer_crash_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import minilora.training.checkpoint as ck

    d = checkpoint_dir(tmp_path)
    before = load_checkpoint(d)

    def dying(path, obj):
        Path(path).write_text(json.dumps(obj)[:20])     # half of state.json, then the crash
        raise KeyboardInterrupt

    monkeypatch.setattr(ck, "write_json", dying)
    m = adapted()
    with pytest.raises(KeyboardInterrupt):
        fit(m, examples(), TrainConfig(batch_size=2, num_epochs=2), progress=False, checkpoint_dir=d)
    after = load_checkpoint(d)
    assert after.state == before.state
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_plot_writer_crash_keeps_the_old_png(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from minilora.runs.demo import save_loss_plot

    p = tmp_path / "loss.png"
    save_loss_plot({"a": [3.0, 2.0, 1.0]}, str(p))
    old = p.read_bytes()

    def dying(self, fname, **kw):
        Path(fname).write_bytes(b"\x89PNG\r\n")          # the start of a PNG, then the crash
        raise MemoryError("killed")

    monkeypatch.setattr(Figure, "savefig", dying)
    with pytest.raises(MemoryError):
        save_loss_plot({"b": [1.0, 0.5]}, str(p))
    assert p.read_bytes() == old and os.listdir(tmp_path) == ["loss.png"]


def test_a_killed_process_leaves_the_old_file(tmp_path):
    """A real crash: a child process is killed (os._exit) half-way through an atomic write."""
    p = tmp_path / "data.json"
    p.write_text('{"old": 1}\n')
    code = ("import os, sys\nfrom minilora.io.atomic import atomic_path\n"
            f"with atomic_path({str(p)!r}) as tmp:\n"
            "    f = open(tmp, 'w'); f.write('{\"new\": '); f.flush()\n"
            "    os._exit(9)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
    assert proc.returncode == 9
    assert p.read_text() == '{"old": 1}\n'


def test_atomic_dir_keeps_the_old_folder_on_failure(tmp_path):
    d = tmp_path / "out"
    with atomic_dir(d) as tmp:
        Path(tmp, "a.txt").write_text("old")
    with pytest.raises(ValueError):
        with atomic_dir(d, overwrite=True) as tmp:
            Path(tmp, "a.txt").write_text("new, half")
            raise ValueError("crash")
    assert Path(d, "a.txt").read_text() == "old" and os.listdir(tmp_path) == ["out"]


# ---- static checks of the package source --------------------------------------------------------
SOURCES = sorted(p for pkg in ("minilora", "param_calc") for p in (ROOT / pkg).rglob("*.py"))
ALL_CODE = SOURCES + sorted(p for d in ("tests", "scripts", "notebooks") for p in (ROOT / d).rglob("*")
                            if p.suffix in (".py", ".ipynb") and p.name != "test_reliability.py")


def test_nothing_loads_with_pickle():
    """No pickle in the package; every NumPy load (package, tests, scripts, notebooks) says allow_pickle=False."""
    bad = re.compile(r"^\s*(import|from)\s+(c?pickle|dill|joblib|shelve)\b|allow_pickle\s*=\s*True|torch\.load\(",
                     re.M)
    np_load = re.compile(r"\b(np|numpy)\.load\((?![^)]*allow_pickle\s*=\s*False)")
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in SOURCES for m in bad.finditer(p.read_text())]
    found += [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in ALL_CODE for m in np_load.finditer(p.read_text())]
    assert not found, found


def test_every_write_goes_through_an_atomic_temporary():
    """Writes in the package open, save or savefig only a temporary path from atomic_path/atomic_dir
    (named tmp, or a path joined under the temporary folder); json.dump to a file is not used."""
    patterns = [
        re.compile(r"open\(\s*([^,()]+)\s*,\s*['\"][wax]b?['\"]"),
        re.compile(r"\.savefig\(\s*([^,()]+)"),
        re.compile(r"(?:save_file|serialize_file)\((?!.*\btmp\b)()"),    # the call must name tmp
        re.compile(r"\bnp\.save[z]?\w*\(\s*([^,()]+)"),
        re.compile(r"\.(write_text|write_bytes)\(()"),
        re.compile(r"\bjson\.dump\(()"),
    ]
    allowed = {"tmp", "f", "fh"}
    bad = []
    for p in SOURCES:
        for lineno, line in enumerate(p.read_text().splitlines(), 1):
            for rx in patterns:
                for m in rx.finditer(line):
                    target = m.group(1).strip()
                    if target not in allowed and not target.startswith("os.path.join(tmp"):
                        bad.append(f"{p.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not bad, bad
