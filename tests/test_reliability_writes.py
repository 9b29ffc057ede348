"""Issue 18 (Reliability II), one table: every case it lists (and the classes they stand for) is one
row. A refusal is one line (MiniLoraError; the CLIs print `prog: error: ...` and exit 2), and the
folder the row was set up in is byte-for-byte what it was before: no user file lost, altered or
left beside as a temporary. Rows marked OK are cases that must now simply work.
The kill tests (subprocess + SIGKILL at each step of the atomic writer) are at the end.
"""
import json
import os
import re
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from minilora.adapters import LoraConfig, add_lora
from minilora.config import LlamaConfig
from minilora.data import write_jsonl
from minilora.errors import MiniLoraError
from minilora.io import from_pretrained, load_safetensors, save_pretrained, save_safetensors
from minilora.io.atomic import atomic_dir, write_json
from minilora.io.destination import check_output_location
from minilora.io.peft import load_adapter, read_adapter_factors, save_adapter
from minilora.model import LlamaForCausalLM
from minilora.training import TrainConfig, fit
from minilora.training.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CFG = LlamaConfig(vocab_size=259, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2)
TARGETS = ["q_proj", "v_proj"]
OK = "OK"                                       # the row must succeed


# ---- the world a row starts from ------------------------------------------------------------------
def adapted():
    m = LlamaForCausalLM.init(CFG, seed=0)
    add_lora(m, LoraConfig(r=2, lora_alpha=4, target_modules=TARGETS))
    for n in m.adapters.param_names():
        m.params[n] = m.params[n] + 0.01
    return m


def world(t: Path) -> Path:
    """Every row starts from: base/ (model), adapter/, notes/ (a user's folder), notes.txt,
    train.jsonl, runs.json (run r1)."""
    save_pretrained(LlamaForCausalLM.init(CFG, seed=0), t / "base")
    save_adapter(adapted(), t / "adapter")
    (t / "notes").mkdir()
    (t / "notes" / "thesis.txt").write_text("years of work\n")
    (t / "notes.txt").write_text("my notes\n")
    write_jsonl(t / "train.jsonl", [{"context": f"headline {i}", "target": "positive"} for i in range(4)])
    run = {"base_model": str(t / "base"), "dataset_path": "train.jsonl", "lora_r": 2, "quant_bits": 16,
           "learning_rate": 0.01, "num_epochs": 1, "batch_size": 2, "gradient_accumulation_steps": 1}
    (t / "runs.json").write_text(json.dumps({"r1": run}))
    return t


def call(fn, *args, **kw):
    """The row's action: fn(*args, **kw), its arguments (the setup) evaluated when the row is built."""
    return lambda: fn(*args, **kw)


def edit_json(path, **change):
    d = json.loads(Path(path).read_text())
    d.update(change)
    Path(path).write_text(json.dumps(d))
    return Path(path).parent


def edit_tensor(path, name, value):
    t = load_safetensors(path)
    t[name].flat[0] = value
    save_safetensors(path, t)
    return Path(path).parent


def checkpoint(t: Path) -> Path:
    fit(adapted(), [([256, 10 + i, 20, 30], [-100, -100, 20, 30]) for i in range(4)], TrainConfig(batch_size=2),
        progress=False,
        checkpoint_dir=t / "ckpt")
    return t / "ckpt"


def resume(t: Path, ckpt: Path):
    return lambda: fit(adapted(), [([256, 10 + i, 20, 30], [-100, -100, 20, 30]) for i in range(4)],
                       TrainConfig(batch_size=2), progress=False, resume_from=ckpt)


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def symlink(path: Path, target) -> Path:
    os.symlink(target, path)
    return path


def device(path: Path) -> Path:
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))       # a /dev/full node, in tmp
    except PermissionError:
        pytest.skip("creating a device node needs root")
    return path


def base_with(t: Path, **config) -> Path:
    return edit_json(t / "base" / "config.json", **config)


def mi(*argv):
    return ("minilora", [str(a) for a in argv])


def pc(*argv):
    return ("param-calc", [str(a) for a in argv])


def no_space(mp):
    real = os.statvfs

    class Full:
        def __init__(self, st):
            self.f_frsize, self.f_bavail = st.f_frsize, 0

    mp.setattr(os, "statvfs", lambda p: Full(real(p)))


def unreadable(mp, path):
    import builtins

    real = builtins.open

    def fake(file, *a, **kw):
        if os.fspath(file) == os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(file, *a, **kw)

    mp.setattr(builtins, "open", fake)


def lines(n: int, head: str) -> str:
    return head + "x" * n


# ---- the table: (case, build(t, mp) -> callable | (prog, argv), expected message or OK) -----------
CASES = [
    # 1. an existing folder the command does not write: never deleted (CLI and library)
    ("1 train --out an unrelated folder", lambda t, mp: mi("train", "--config", t / "runs.json", "--run", "r1",
                                                         "--out", t / "notes"),
     r"--out .*notes exists and is not a minilora adapter folder \(it holds thesis\.txt\); refusing"),
    ("1 train --checkpoint-dir an unrelated folder", lambda t, mp: mi(
        "train", "--config", t / "runs.json", "--run", "r1", "--out", t / "out", "--checkpoint-dir", t / "notes"),
     r"checkpoint folder .*notes exists and is not a minilora training checkpoint"),
    ("1 train --out the run's own base model", lambda t, mp: mi("train", "--config", t / "runs.json", "--run",
                                                              "r1", "--out", t / "base"),
     r"is the input .*base|exists and is a minilora model folder"),
    ("1 train --out an existing file", lambda t, mp: mi("train", "--config", t / "runs.json", "--run", "r1",
                                                      "--out", t / "notes.txt"),
     r"notes\.txt is a file, not a folder; refusing to replace a file with a folder"),
    ("1 train --out == --checkpoint-dir", lambda t, mp: mi("train", "--config", t / "runs.json", "--run", "r1",
                                                         "--out", t / "x", "--checkpoint-dir", t / "x"),
     r"must be separate folders"),
    ("1 train --out the folder that holds the data set", lambda t, mp: mi(
        "train", "--config", t / "runs.json", "--run", "r1", "--out", t),
     r"exists and is not a minilora adapter folder"),
    ("1 save_adapter onto an unrelated folder", lambda t, mp: call(save_adapter, adapted(), t / "notes"),
     r"notes exists and is not a minilora adapter folder"),
    ("1 save_adapter onto a model folder", lambda t, mp: call(save_adapter, adapted(), t / "base"),
     r"base exists and is a minilora model folder .*refusing"),
    ("1 save_adapter onto a file", lambda t, mp: call(save_adapter, adapted(), t / "notes.txt"),
     r"is a file, not a folder"),
    ("1 save_pretrained onto an unrelated folder", lambda t, mp: call(save_pretrained,
        LlamaForCausalLM.init(CFG), t / "notes"), r"notes exists and is not a minilora model folder"),
    ("1 save_pretrained onto an adapter folder", lambda t, mp: call(save_pretrained,
        LlamaForCausalLM.init(CFG), t / "adapter"), r"adapter exists and is a minilora adapter folder"),
    ("1 fit(checkpoint_dir=an unrelated folder), before training", lambda t, mp: call(fit,
        adapted(), [([256, 1, 2], [-100, 1, 2])], TrainConfig(), progress=False, checkpoint_dir=t / "notes"),
     r"checkpoint folder .*notes exists and is not a minilora training checkpoint"),
    ("1 save_checkpoint onto a model folder", lambda t, mp: call(save_checkpoint, t / "base", {}, {}, {}),
     r"is a minilora model folder"),
    ("1 save_adapter onto its own adapter folder: replaced (OK)", lambda t, mp: call(save_adapter,
        adapted(), t / "adapter"), OK),
    ("1 save_adapter onto an unrelated folder with overwrite=True (OK)", lambda t, mp: call(save_adapter,
        adapted(), t / "notes", overwrite=True), OK),
    ("1 atomic_dir never replaces a file, even with overwrite", lambda t, mp: call(
        lambda cm: cm.__enter__(), atomic_dir(t / "notes.txt", overwrite=True)), r"is a file, not a folder"),
    # 2. input and output compared by real path
    ("2 merge link ADAPTER base --force (link -> base)", lambda t, mp: mi(
        "merge", symlink(t / "link", t / "base"), t / "adapter", t / "base", "--force"),
     r"OUT_DIR must differ from BASE_DIR .*symlinks resolved"),
    ("2 merge base ADAPTER link --force (out is a link to the base)", lambda t, mp: mi(
        "merge", t / "base", t / "adapter", symlink(t / "link", t / "base"), "--force"),
     r"OUT_DIR must differ from BASE_DIR"),
    ("2 merge base ADAPTER <folder holding the base> --force", lambda t, mp: mi(
        "merge", t / "base", t / "adapter", t, "--force"), r"holds the input .*base"),
    ("2 merge into a new folder (OK)", lambda t, mp: mi("merge", t / "base", t / "adapter", t / "merged"), OK),
    # 3. leftovers of interrupted writes (the kill tests below kill real processes)
    ("3 a leftover .old is restored by the next check (OK)", lambda t, mp: _interrupted_between_renames(t), OK),
    # 4. never a device, FIFO or symlink target replaced
    ("4 param-calc --out a device node", lambda t, mp: pc("--model", "gpt2", "--out", device(t / "dev")),
     r"--out .*dev is a device; minilora never replaces one"),
    ("4 param-calc --out a FIFO", lambda t, mp: pc("--model", "gpt2", "--out", fifo(t / "pipe")),
     r"is a FIFO \(named pipe\)"),
    ("4 param-calc --out a symlink", lambda t, mp: pc("--model", "gpt2", "--out", symlink(
        t / "link.txt", t / "notes.txt")), r"is a symbolic link; minilora never replaces one"),
    ("4 param-calc --out a folder", lambda t, mp: pc("--model", "gpt2", "--out", t / "notes"),
     r"is a folder; a file goes here"),
    ("4 bench --json a symlink, before the benchmark", lambda t, mp: mi(
        "bench", "--preset", "tiny", "--json", symlink(t / "b.json", t / "notes.txt")), r"is a symbolic link"),
    ("4 write_json onto a FIFO (library)", lambda t, mp: call(write_json, fifo(t / "p.json"), {}), r"is a FIFO"),
    # 5. the output location checked before any work
    ("5 param-calc --out under a file", lambda t, mp: pc("--model", "gpt2", "--out", t / "notes.txt" / "x.txt"),
     r"notes\.txt is not a folder"),
    ("5 param-calc --out on a read-only file system", lambda t, mp: pc("--model", "gpt2", "--out", "/proc/x.txt"),
     r"--out /proc/x\.txt: cannot write in /proc"),
    ("5 bench --json on a full file system, before the benchmark", lambda t, mp: (no_space(mp), mi(
        "bench", "--preset", "tiny", "--json", t / "b.json"))[1], r"has 0 bytes free"),
    ("5 train on a full file system, before training", lambda t, mp: (t, no_space(mp), mi(
        "train", "--config", t / "runs.json", "--run", "r1", "--out", t / "out"))[2], r"has 0 bytes free"),
    ("5 merge to a path too long for the file system", lambda t, mp: mi(
        "merge", t / "base", t / "adapter", t / ("d/" * 2100 + "out")), r"the path is \d+ bytes long"),
    ("5 a name past NAME_MAX", lambda t, mp: call(write_json, t / ("n" * 300 + ".json"), {}),
     r"is 305 bytes; this file system allows 255"),
    ("5 a legal 250-byte name: temporary names still fit (OK)", lambda t, mp: lambda: (
        save_adapter(adapted(), t / ("a" * 250)), write_json(t / ("j" * 250), {"a": 1})), OK),
    ("5 demo --out an existing file", lambda t, mp: mi("demo", "--quick", "--out", t / "notes.txt"),
     r"notes\.txt is a file, not a folder"),
    ("5 analyze --out an existing file", lambda t, mp: mi("analyze", t / "adapter", "--out", t / "notes.txt"),
     r"notes\.txt is a file, not a folder"),
    ("5 check_output_location on a missing parent creates nothing (OK)", lambda t, mp: call(check_output_location,
        t / "a" / "b" / "c", "adapter"), OK),
    # 6. finite or refused, types checked
    ("6 a base with one NaN weight (from_pretrained)", lambda t, mp: call(from_pretrained, edit_tensor(
        t / "base" / "model.safetensors", "model.layers.1.mlp.up_proj.weight", np.nan)),
     r"weight model\.layers\.1\.mlp\.up_proj\.weight holds 1 non-finite value"),
    ("6 a base with one inf weight (generate)", lambda t, mp: mi("generate", edit_tensor(
        t / "base" / "model.safetensors", "model.norm.weight", np.inf), "--prompt", "hi"),
     r"weight model\.norm\.weight holds 1 non-finite"),
    ("6 adapter lora_alpha 1e300", lambda t, mp: call(load_adapter, LlamaForCausalLM.init(CFG), edit_json(
        t / "adapter" / "adapter_config.json", lora_alpha=1e300)), r"lora_alpha 1e\+300 is out of range"),
    ("6 adapter use_rslora 'no'", lambda t, mp: call(load_adapter, LlamaForCausalLM.init(CFG), edit_json(
        t / "adapter" / "adapter_config.json", use_rslora="no")), r"use_rslora must be true or false, got 'no'"),
    ("6 adapter rank_pattern a list", lambda t, mp: call(load_adapter, LlamaForCausalLM.init(CFG), edit_json(
        t / "adapter" / "adapter_config.json", rank_pattern=[4])), r"rank_pattern must be an object"),
    ("6 LoraConfig(use_rslora='yes')", lambda t, mp: call(LoraConfig, use_rslora="yes"),
     r"use_rslora must be true or false"),
    ("6 resume with an edited step counter", lambda t, mp: resume(t, edit_json(
        checkpoint(t) / "state.json", step=1, losses=[1.0])), r"inconsistent checkpoint"),
    ("6 resume with an edited optimizer_step", lambda t, mp: resume(t, edit_json(
        checkpoint(t) / "state.json", optimizer_step=7)), r"inconsistent checkpoint: optimizer_step is 7"),
    ("6 NaN in a checkpoint's trainable tensor", lambda t, mp: call(load_checkpoint, edit_tensor(
        checkpoint(t) / "trainable.safetensors", "model.layers.0.self_attn.q_proj.lora_A.weight", np.nan)),
     r"trainable\.safetensors: model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight holds non-finite"),
    ("6 inf in a checkpoint's optimizer moment", lambda t, mp: call(load_checkpoint, edit_tensor(
        checkpoint(t) / "optimizer.safetensors", "v.model.layers.0.self_attn.q_proj.lora_A.weight", np.inf)),
     r"optimizer\.safetensors: v\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight holds non-finite"),
    ("6 negative second moment in a checkpoint", lambda t, mp: call(load_checkpoint, edit_tensor(
        checkpoint(t) / "optimizer.safetensors", "v.model.layers.0.self_attn.q_proj.lora_A.weight", -1.0)),
     r"holds negative second moments"),
    # 7. bounded before allocated
    ("7 generate --max-new-tokens 1000000000", lambda t, mp: mi("generate", t / "base", "--prompt", "hi",
                                                              "--max-new-tokens", 10**9),
     r"a KV cache for 1,000,000,003 positions \(batch 1\) needs [\d.]+ [GT]iB, more than"),
    ("7 generate --no-cache --max-new-tokens 1000000000", lambda t, mp: mi(
        "generate", t / "base", "--prompt", "hi", "--max-new-tokens", 10**9, "--no-cache"),
     r"generating 1,000,000,003 positions without a KV cache needs"),
    ("7 config.json with num_hidden_layers 10**7", lambda t, mp: call(from_pretrained,
        base_with(t, num_hidden_layers=10**7)), r"needs [\d.]+ [GT]iB|describes 10,000,000 layers"),
    ("7 config.json with 10**5 layers of width 16: fits, but the files hold 21 tensors", lambda t, mp: call(
        from_pretrained, base_with(t, num_hidden_layers=10**5)), r"describes 100,000 layers, but the weight files"),
    ("7 config.json is a FIFO", lambda t, mp: call(from_pretrained, _replace(t / "base" / "config.json", fifo)),
     r"config\.json: not a regular file"),
    ("7 config.json is /dev/zero", lambda t, mp: call(from_pretrained, _replace(
        t / "base" / "config.json", lambda p: symlink(p, "/dev/zero"))), r"config\.json: not a regular file"),
    ("7 config.json of 2 MB", lambda t, mp: call(from_pretrained, _replace(
        t / "base" / "config.json", lambda p: p.write_text(" " * (2 << 20) + "{}"))),
     r"config\.json: 2,097,154 bytes is too large"),
    ("7 LlamaForCausalLM.init on a huge config", lambda t, mp: call(LlamaForCausalLM.init, LlamaConfig(
        hidden_size=8192, intermediate_size=28672, num_hidden_layers=10**4, num_attention_heads=64)),
     r"a model of [\d,]+ parameters needs [\d.]+ TiB, more than"),
    ("7 param-calc --config with 10**9 layers", lambda t, mp: pc("--config", _json(t, {
        "model_type": "llama", "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 10**9,
        "num_attention_heads": 2, "vocab_size": 10})), r"'num_hidden_layers' is 1,000,000,000: .* at most 10,000"),
    ("7 param-calc --config a FIFO", lambda t, mp: pc("--config", fifo(t / "c.json")), r"not a regular file"),
    ("7 param-calc --config /dev/zero", lambda t, mp: pc("--config", "/dev/zero"), r"not a regular file"),
    # 8. tracebacks left
    ("8 param-calc --config [1, 2]", lambda t, mp: pc("--config", _json(t, [1, 2])),
     r"expected a JSON object, got list"),
    ("8 param-calc --config 5", lambda t, mp: pc("--config", _json(t, 5)), r"expected a JSON object, got int"),
    ("8 param-calc --config null", lambda t, mp: pc("--config", _json(t, None)), r"got NoneType"),
    ("8 generate --seed -1", lambda t, mp: mi("generate", t / "base", "--prompt", "x", "--seed", -1),
     r"--seed must be >= 0, got -1"),
    ("8 demo-linear --seed -1", lambda t, mp: mi("demo-linear", "--seed", -1), r"--seed must be >= 0, got -1"),
    ("8 analyze with a base holding NaN", lambda t, mp: mi("analyze", t / "adapter", "--base", edit_tensor(
        t / "base" / "model.safetensors", "model.layers.0.self_attn.q_proj.weight", np.nan), "--out", t / "rep"),
     r"q_proj\.weight holds 1 non-finite"),
    ("8 analyze whose SVD does not converge", lambda t, mp: (_svd_fails(mp), mi(
        "analyze", t / "adapter", "--base", t / "base", "--out", t / "rep"))[1], r"SVD .*did not converge"),
    # 9. smaller
    ("9 param-calc on the project's own run (OK)", lambda t, mp: pc(
        "--finlora-config", ROOT / "configs" / "finetune_configs.json", "--run", "sentiment_tiny_8bits_r8"), OK),
    ("9 one invalid run does not block another (OK)", lambda t, mp: pc("--finlora-config", _json(t, {
        "bad": {"base_model": "meta-llama/Llama-3.1-8B", "lora_r": 0, "quant_bits": 8},
        "good": {"base_model": "meta-llama/Llama-3.1-8B", "lora_r": 8, "quant_bits": 8}}), "--run", "good"), OK),
    ("9 param-calc r > min(in, out)", lambda t, mp: pc("--config", t / "base" / "config.json", "--rank", 9,
                                                      "--targets", "v_proj"),
     r"rank 9 exceeds min\(in, out\) = 8 for model\.layers\.0\.self_attn\.v_proj \(16 -> 8\)"),
    ("9 an unreadable weights file says so", lambda t, mp: (unreadable(mp, t / "base" / "model.safetensors"),
                                                         lambda: from_pretrained(t / "base"))[1],
     r"model\.safetensors: cannot read \(Permission denied\)"),
    ("9 a failed write removes the folders it created", lambda t, mp: call(_failing_dir, t), r"crash"),
]


def _json(t: Path, obj) -> Path:
    p = t / f"j{abs(hash(json.dumps(obj))) % 10**6}.json"
    p.write_text(json.dumps(obj))
    return p


def _replace(path: Path, make) -> Path:
    path.unlink()
    make(path)
    return path.parent


def _svd_fails(mp):
    def fail(*a, **kw):
        raise np.linalg.LinAlgError("SVD did not converge")

    mp.setattr(np.linalg, "svd", fail)


def _failing_dir(t: Path):
    with atomic_dir(t / "new" / "deeper" / "out", "adapter"):
        raise MiniLoraError("crash")


def _interrupted_between_renames(t: Path):
    """The state a kill between the renames leaves (adapter/ moved to .old, the new copy in .new);
    the returned action (the next write's check) must restore a whole folder and remove the rest."""
    old = t / ".adapter.0123abcd.old"
    os.replace(t / "adapter", old)
    (t / ".adapter.0123abcd.new").mkdir()                           # sealed, but empty here: a new copy
    save_adapter(adapted(), t / "fresh")
    for f in os.listdir(t / "fresh"):
        os.replace(t / "fresh" / f, t / ".adapter.0123abcd.new" / f)
    os.rmdir(t / "fresh")
    (t / ".adapter.89abcdef.tmp").mkdir()                           # an incomplete one from earlier

    def act():
        check_output_location(t / "adapter", "adapter")
        assert read_adapter_factors(t / "adapter").modules
        assert sorted(os.listdir(t)) == ["adapter", "base", "notes", "notes.txt", "runs.json", "train.jsonl"]

    return act


def tree(root: Path) -> dict:
    """Every entry under root (not following links): its kind and bytes or link target."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(folder, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[p] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[p] = ("file", Path(p).read_bytes())
            else:
                out[p] = (stat.S_IFMT(st.st_mode), None)
    return out


class ReachedTheWork(BaseException):
    """Raised by the stubs of long runs: the check did not refuse before the work."""


def _stub(*a, **kw):
    raise ReachedTheWork


def _run_cli(prog, argv, capsys):
    from minilora.cli import main as minilora_main
    from param_calc.cli import main as param_calc_main

    capsys.readouterr()
    code = (minilora_main if prog == "minilora" else param_calc_main)(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("build,match", [pytest.param(b, m, id=n) for n, b, m in CASES])
def test_reliability_ii(tmp_path, monkeypatch, capsys, build, match):
    import minilora.bench
    import minilora.runs.demo
    import minilora.runs.recipes

    for module, name in ((minilora.runs.recipes, "train_run"), (minilora.bench, "run_bench"),
                         (minilora.runs.demo, "run_demo")):
        monkeypatch.setattr(module, name, _stub)
    t = world(tmp_path / "w")
    action = build(t, monkeypatch)
    before = tree(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(action, tuple):
            code, err = _run_cli(*action, capsys)
            msg = err.strip()
            if match == OK:
                assert code == 0, err
                return
            assert code == 2 and len(msg.splitlines()) == 1, (code, err)
            assert msg.startswith(f"{action[0]}: error: ") and "Traceback" not in msg, msg
        else:
            if match == OK:
                action()
                return
            with pytest.raises(MiniLoraError) as info:
                action()
            msg = str(info.value)
            assert msg and "\n" not in msg, msg
    assert re.search(match, msg), f"{msg!r} does not match {match!r}"
    assert tree(tmp_path) == before, "a refusal changed the user's files"


def test_the_table_has_every_numbered_case_of_the_issue():
    numbers = {n.split()[0] for n, _, _ in CASES}
    assert numbers == {str(i) for i in range(1, 10)}, numbers
    assert len(CASES) >= 60, len(CASES)


# ---- standard output closed or full: real processes -------------------------------------------
STDOUT = [
    ("param-calc, stdout closed", [sys.executable, "-m", "param_calc", "--model", "gpt2"], ">&-",
     r"param-calc: error: standard output is closed"),
    ("param-calc, stdout full", [sys.executable, "-m", "param_calc", "--model", "gpt2"], "> /dev/full",
     r"param-calc: error: cannot write to standard output \(No space left on device\)"),
    ("minilora, stdout closed", [sys.executable, "-m", "minilora", "fetch", "nope"], ">&-",
     r"minilora: error: standard output is closed"),
    ("minilora, stdout full", [sys.executable, "-m", "minilora", "generate", str(ROOT / "minilora" / "assets" /
                                                                               "tiny-sentiment-base"),
                               "--prompt", "Shares", "--max-new-tokens", "2"], "> /dev/full",
     r"minilora: error: cannot write to standard output \(No space left on device\)"),
]


@pytest.mark.parametrize("argv,redirect,match", [pytest.param(a, r, m, id=n) for n, a, r, m in STDOUT])
def test_stdout_closed_or_full_is_one_line(argv, redirect, match):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    cmd = " ".join(f"'{a}'" for a in argv) + " " + redirect
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(["sh", "-c", cmd], stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, timeout=120)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1, (proc.returncode, proc.stderr)
    assert re.match(match, err), err


def test_a_nan_run_prints_no_runtime_warnings():
    m = adapted()
    m.params["model.layers.0.self_attn.q_proj.lora_B.weight"][:] = 1e30
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(MiniLoraError, match="non-finite (loss|gradient norm)"):
            fit(m, [([256, 1, 2, 3], [-100, 1, 2, 3])] * 2, TrainConfig(batch_size=2), progress=False)
    assert not [w for w in seen if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in seen]
