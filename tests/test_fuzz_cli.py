"""Fuzzing (hypothesis): random argument lists at `param-calc` and every `minilora` subcommand, random
bytes and mutated JSON at the loaders. Every case ends with exit 0 or 2 (the library: success or
MiniLoraError) and at most one line of message on stderr, never a traceback.

The CLIs run in-process through their main(argv). Work that would start a real run (training, the
demo, the benchmark, the labs, generation, any model forward) is replaced by a stub that raises
`WouldRun`: everything up to that point - parsing, validation, loading files - is fuzzed, and a
case that reaches the stub counts as accepted input. The files the arguments name live in a
temporary folder, which is also the working directory (default output folders land there).
"""
import contextlib
import io
import json
import os
import signal
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minilora.errors import MiniLoraError

SCALE = float(os.environ.get("MINILORA_FUZZ_SCALE", "1"))       # e.g. 20 for a long bug hunt
FUZZ = settings(max_examples=int(300 * SCALE), deadline=None, suppress_health_check=list(HealthCheck))
LOADER = settings(max_examples=int(100 * SCALE), deadline=None, suppress_health_check=list(HealthCheck))


class WouldRun(BaseException):
    """Raised by the stubs in place of a real run (a BaseException, so no `except Exception` hides it)."""


def _stub(*a, **kw):
    raise WouldRun


SANDBOX = [("minilora.runs.demo", "run_demo"), ("minilora.runs.demo", "fit"), ("minilora.training.loop", "fit"),
           ("minilora.runs.demo_linear", "run_linear_demo"), ("minilora.bench", "run_bench"),
           ("minilora.analysis", "intrinsic_rank_lab"), ("minilora.analysis", "precision_lab"),
           ("minilora.analysis.compare", "compare_ranks"), ("minilora.inference.generate", "generate"),
           ("minilora.model", "LlamaForCausalLM.forward"), ("minilora.model", "LlamaForCausalLM.hidden_states"),
           ("minilora.model", "LlamaForCausalLM.loss_and_grads")]


@contextlib.contextmanager
def sandbox():
    """Replace the entry points of real runs by _stub (those that exist in this version)."""
    import importlib

    for module in ("minilora.analysis.compare", "minilora.runs.recipes", "minilora.runs.demo"):
        importlib.import_module(module)     # imported first: a `from ... import fit` must not bind the stub
    with pytest.MonkeyPatch.context() as mp:
        for module, attr in SANDBOX:
            try:
                obj = importlib.import_module(module)
            except ImportError:
                continue
            *owner, name = attr.split(".")
            for part in owner:
                obj = getattr(obj, part)
            if hasattr(obj, name):
                mp.setattr(obj, name, _stub)
        yield


def _tree(root) -> dict:
    out = {}
    for folder, _, files in os.walk(root):
        for f in files:
            path = os.path.join(folder, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = fh.read()
    return out


class World(dict):
    """The paths the fuzzed arguments may name. A CLI may well be told to write over one of them
    (`--out <a config file>`), so restore() puts the input folder back after every example."""

    def __init__(self, paths, root, pristine):
        super().__init__(paths)
        self.root, self.pristine, self.snapshot = root, pristine, _tree(root)

    def restore(self):
        import shutil

        if _tree(self.root) == self.snapshot:
            return
        for entry in os.listdir(self.root):
            path = os.path.join(self.root, entry)
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
        for entry in os.listdir(self.pristine):
            src, dst = os.path.join(self.pristine, entry), os.path.join(self.root, entry)
            shutil.copytree(src, dst) if os.path.isdir(src) else shutil.copyfile(src, dst)
        assert _tree(self.root) == self.snapshot


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Files for the arguments to name (a tiny base, an adapter, FinLoRA configs, data) in <tmp>/in,
    with <tmp>/work as the working directory."""
    import shutil

    from minilora.adapters import LoraConfig, add_lora
    from minilora.config import LlamaConfig
    from minilora.data import write_jsonl
    from minilora.io import save_pretrained
    from minilora.io.peft import save_adapter
    from minilora.model import LlamaForCausalLM

    top = tmp_path_factory.mktemp("fuzz")
    tmp = top / "in"                         # the inputs; the working directory is top / "work"
    tmp.mkdir()
    (top / "work").mkdir()
    cfg = LlamaConfig(vocab_size=259, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM.init(cfg, seed=0)
    save_pretrained(model, tmp / "base")
    add_lora(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    save_adapter(model, tmp / "adapter")
    rows = [{"context": f"headline {i}", "target": ("negative", "neutral", "positive")[i % 3]} for i in range(6)]
    write_jsonl(tmp / "train.jsonl", rows)
    run = {"base_model": str(tmp / "base"), "dataset_path": "train.jsonl", "lora_r": 2, "quant_bits": 16,
           "learning_rate": 0.01, "num_epochs": 1, "batch_size": 2, "gradient_accumulation_steps": 1}
    (tmp / "runs.json").write_text(json.dumps({"r1": run, "r8": {**run, "quant_bits": 8}}))
    (tmp / "hub_runs.json").write_text(json.dumps({"r1": {**run, "base_model": "meta-llama/Llama-3.1-8B"}}))
    (tmp / "garbage.json").write_bytes(b'{"r1": {"lora_r": 8,\xff')
    (tmp / "list.json").write_text("[1, 2, 3]")
    (tmp / "empty.jsonl").write_text("")
    (tmp / "a_dir").mkdir()
    paths = {"base": tmp / "base", "adapter": tmp / "adapter", "runs": tmp / "runs.json",
             "hub_runs": tmp / "hub_runs.json", "garbage": tmp / "garbage.json", "list": tmp / "list.json",
             "config": tmp / "base" / "config.json", "weights": tmp / "base" / "model.safetensors",
             "jsonl": tmp / "train.jsonl", "empty": tmp / "empty.jsonl", "dir": tmp / "a_dir"}
    shutil.copytree(tmp, top / "pristine")
    old_cwd = os.getcwd()
    os.chdir(top / "work")
    try:
        yield World({k: str(v) for k, v in paths.items()}, str(tmp), str(top / "pristine"))
    finally:
        os.chdir(old_cwd)


def _alarm(signum, frame):
    raise WouldRun("slow")


def call(main, argv, prog):
    """Run main(argv) in-process: (exit code or 'ran', stdout, stderr); fails on any traceback."""
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, 20.0)                 # a stub missed: count it as a real run
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings(record=True):
            try:
                code = main(list(argv))
            except WouldRun:
                code = "ran"
            except SystemExit as e:                           # argparse's --help
                code = e.code if e.code is not None else 0
                assert code == 0 and any(a in ("-h", "--help") for a in argv), (argv, e.code)
            except Exception as e:  # noqa: BLE001 - report it with its argv
                pytest.fail(f"{prog} {argv!r} raised {type(e).__name__}: {e}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return code, out.getvalue(), err.getvalue()


def check_outcome(code, out, err, argv, prog):
    lines = err.strip().splitlines()
    assert "Traceback" not in err, (argv, err)
    if code == 2:
        if lines:
            assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), (argv, err)
        else:                                                  # no subcommand: the usage on stdout
            assert "usage:" in out, (argv, out)
    else:
        assert code in (0, "ran"), (argv, code, err)
        assert len(lines) <= 1 or prog == "minilora", (argv, err)


# ---- argument lists ------------------------------------------------------------------------------
NUMBERS = ["0", "-1", "1", "2", "4", "8", "16", "3.5", "1e9", "nan", "inf", "-inf", "x", "", "99999999999999999999"]
WORDS = ["q_proj", "q_proj,v_proj", "all-linear", "default", ",", "q_proj,,v_proj", "(", ".*", "q_proj=16",
         "=3", "q_proj=x", "1,2,4", "1,,2", "fp32", "bf16", "adamw", "adamw-8bit", "llama-3.1-70b", "llama-3.1-8b",
         "gpt2", "qwen2.5-7b", "meta-llama/Llama-3.1-8B-Instruct", "no-such-model", "r1", "r8", "nope",
         "float32", "float64", "bfloat16", "tiny", "full", "seed", "gpt3", "all", "-", "--", "é", "x.txt",
         "/nonexistent/dir/out.png", "minilora/tiny-sentiment-base", "sentiment_tiny_8bits_r8"]


def _values(world):
    return st.sampled_from(NUMBERS + WORDS + list(world.values()) + [world["dir"] + "/new_out",
                                                                     world["dir"] + "/new.json"])


def argv_strategy(flags, world, heads=()):
    flag = st.sampled_from(flags)
    value = _values(world)
    token = st.one_of(flag.map(lambda f: [f]), st.tuples(flag, value).map(list), value.map(lambda v: [v]),
                      st.text(max_size=6).map(lambda s: [s]))
    body = st.lists(token, max_size=6).map(lambda parts: [a for p in parts for a in p])
    if not heads:
        return body
    return st.tuples(st.sampled_from(heads), body).map(lambda hb: [a for a in hb[0]] + hb[1])


def _option_strings(parser):
    out = []
    for action in parser._actions:
        out += list(action.option_strings)
        if action.choices and not isinstance(action.choices, dict):
            out += [str(c) for c in action.choices]
    return out


def test_fuzz_param_calc(world):
    from param_calc.cli import build_explain_parser, build_parser, main

    flags = sorted(set(_option_strings(build_parser()) + _option_strings(build_explain_parser())) - {"--plot"})
    flags += ["--plot"]                     # only ever with the values above: none of them is a writable .png
    seen = {0: 0, 2: 0}

    @FUZZ
    @given(argv_strategy(flags, world, heads=([], [], ["explain"])))
    def run(argv):
        if "--plot" in argv:                 # a valid chart path would start matplotlib: keep it invalid
            argv = [a for a in argv if not a.endswith((".png", ".svg", ".pdf"))]
        code, out, err = call(main, argv, "param-calc")
        world.restore()
        check_outcome(code, out, err, argv, "param-calc")
        seen[code] = seen.get(code, 0) + 1

    with sandbox():
        run()
    print("param-calc outcomes:", seen)
    assert seen[0] > 0 and seen[2] > 0, seen        # the fuzzer reached both outcomes


def test_fuzz_minilora(world):
    from minilora.cli.main import build_parser, main

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    heads = [[]] + [[name] for name in sub.choices]
    flags = sorted({f for p in sub.choices.values() for f in _option_strings(p)} | {"-h", "--help"})
    seen = {}

    @FUZZ
    @given(argv_strategy(flags, world, heads=tuple(heads)))
    def run(argv):
        code, out, err = call(main, argv, "minilora")
        world.restore()
        check_outcome(code, out, err, argv, "minilora")
        key = (argv[0] if argv and argv[0] in sub.choices else "-", code)
        seen[key] = seen.get(key, 0) + 1

    with sandbox():
        run()
    print("minilora outcomes:", dict(sorted(seen.items(), key=str)))
    seen = {code: sum(n for (_, c), n in seen.items() if c == code) for _, code in seen}
    assert seen.get(2, 0) > 0 and seen.get("ran", 0) + seen.get(0, 0) > 0, seen


@pytest.mark.parametrize("argv", [
    ["train", "--config", "{runs}", "--run", "r1"],
    ["train", "--config", "{runs}", "--run", "r8", "--checkpoint-every", "0"],
    ["demo", "--quick"],
    ["demo-linear", "--steps", "5"],
])
def test_valid_arguments_reach_the_run(world, argv):
    """The sandbox is not hiding errors: valid argument lists get as far as the (stubbed) run."""
    from minilora.cli import main

    argv = [a.format(**world) for a in argv]
    with sandbox():
        code, out, err = call(main, argv, "minilora")
    assert code == "ran", (argv, code, err)


# ---- loaders: random bytes and mutated JSON -----------------------------------------------------
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**70), st.sampled_from([0, 1, 2, 4, 8, 16, -1]),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                      st.sampled_from(["llama", "q_proj", "all-linear", "LORA", "gaussian", "float32", "BF16"]))
JSON_VALUE = st.recursive(JSON_LEAF, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c,
                                                                                        max_size=3), max_leaves=6)


@st.composite
def mutated(draw, doc):
    """doc with a few keys deleted, replaced by random JSON, or added (nested objects too)."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, 3))):
        target = doc
        while isinstance(target, dict) and target and draw(st.booleans()):
            inner = [k for k, v in target.items() if isinstance(v, dict)]
            if not inner:
                break
            target = target[draw(st.sampled_from(sorted(inner)))]
        if not isinstance(target, dict):
            break
        op = draw(st.sampled_from(["delete", "replace", "replace", "add"]))
        keys = sorted(target)
        if op == "delete" and keys:
            del target[draw(st.sampled_from(keys))]
        elif op == "replace" and keys:
            target[draw(st.sampled_from(keys))] = draw(JSON_VALUE)
        else:
            target[draw(st.text(max_size=6))] = draw(JSON_VALUE)
    return doc


@st.composite
def mangled_text(draw, text):
    """text truncated, with bytes flipped, or with random bytes spliced in."""
    raw = text.encode() if isinstance(text, str) else text
    op = draw(st.sampled_from(["truncate", "flip", "splice"]))
    if op == "truncate":
        return raw[:draw(st.integers(0, max(0, len(raw) - 1)))]
    raw = bytearray(raw)
    if op == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] = draw(st.integers(0, 255))
        return bytes(raw)
    i = draw(st.integers(0, len(raw)))
    return bytes(raw[:i]) + draw(st.binary(max_size=16)) + bytes(raw[i:])


def expect_ok_or_error(fn, *args):
    """fn(*args) either succeeds or raises MiniLoraError with one line; anything else fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn(*args)
        except MiniLoraError as e:
            msg = str(e)
            assert msg and "\n" not in msg, msg
            return None


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else json.dumps(data).encode())
    return path


def _safetensors_bytes(tensors):
    from safetensors.numpy import save

    return save(tensors)


@st.composite
def safetensors_files(draw):
    """Random bytes, a valid file mangled, or a hand-made header (random JSON) over random data."""
    valid = _safetensors_bytes({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.int64)})
    kind = draw(st.sampled_from(["random", "mangled", "header", "header"]))
    if kind == "random":
        return draw(st.binary(max_size=200))
    if kind == "mangled":
        return draw(mangled_text(valid))
    entry = {"dtype": draw(st.sampled_from(["F32", "F16", "F64", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "X"])),
             "shape": draw(st.lists(st.integers(-1, 4), max_size=3)),
             "data_offsets": draw(st.lists(st.integers(-2, 40), min_size=0, max_size=3))}
    header = draw(mutated({"t": entry, "__metadata__": {"format": "pt"}}))
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    return len(body).to_bytes(8, "little") + body + draw(st.binary(min_size=0, max_size=48))


def test_fuzz_safetensors_loader(world, tmp_path_factory):
    from minilora.io import load_safetensors

    p = str(tmp_path_factory.mktemp("st") / "x.safetensors")

    @LOADER
    @given(safetensors_files())
    def run(data):
        out = expect_ok_or_error(load_safetensors, _write(p, data))
        if out is not None:
            assert all(isinstance(v, np.ndarray) for v in out.values())

    run()


def test_fuzz_config_json(world, tmp_path_factory):
    """A mutated config.json either fails with MiniLoraError or yields a config whose model builds and runs."""
    from minilora.io import read_json
    from minilora.io.hf_config import config_from_hf
    from minilora.model import LlamaForCausalLM

    good = json.loads(open(world["config"]).read())
    p = str(tmp_path_factory.mktemp("cfg") / "config.json")

    def load_and_run(path):
        config = config_from_hf(read_json(path), path)
        n = sum(int(np.prod(s)) for s in config.param_shapes().values())
        if n < 200_000:                                        # small enough to build and run here
            logits = LlamaForCausalLM.init(config).forward(np.array([[0, 1, 0]]))
            assert logits.shape == (1, 3, config.vocab_size)
        return config

    @LOADER
    @given(st.one_of(mutated(good), mangled_text(json.dumps(good))))
    def run(doc):
        expect_ok_or_error(load_and_run, _write(p, doc))

    run()


def test_fuzz_adapter_config_json(world, tmp_path_factory):
    """A mutated adapter_config.json (or mangled weights) either loads onto the base or raises MiniLoraError,
    and a failed load leaves the model without an adapter."""
    import shutil

    from minilora.io import from_pretrained
    from minilora.io.peft import load_adapter

    good = json.loads(open(os.path.join(world["adapter"], "adapter_config.json")).read())
    weights = open(os.path.join(world["adapter"], "adapter_model.safetensors"), "rb").read()
    d = tmp_path_factory.mktemp("adapter")
    base = from_pretrained(world["base"])
    params = set(base.params)

    @LOADER
    @given(st.one_of(mutated(good), mangled_text(json.dumps(good))), st.booleans(), st.data())
    def run(doc, mangle_weights, data):
        shutil.copyfile(os.path.join(world["adapter"], "adapter_model.safetensors"), d / "adapter_model.safetensors")
        _write(d / "adapter_config.json", doc)
        if mangle_weights:
            _write(d / "adapter_model.safetensors", data.draw(mangled_text(weights)))
        model = from_pretrained(world["base"])
        if expect_ok_or_error(load_adapter, model, str(d)) is None:
            assert set(model.params) == params and not model.adapters.modules and not model.trainable

    run()
    assert set(base.params) == params


def test_fuzz_finetune_configs_json(world, tmp_path_factory):
    """A mutated FinLoRA config either raises MiniLoraError or gives runs that build a LoraConfig and a
    TrainConfig (what `minilora train` does next) without any other error."""
    from minilora.adapters import LoraConfig
    from minilora.runs.finlora import load_runs
    from minilora.runs.recipes import train_config

    good = json.loads(open(world["runs"]).read())
    p = str(tmp_path_factory.mktemp("runs") / "finetune_configs.json")

    def load_and_build(path):
        for run in load_runs(path).values():
            LoraConfig(r=run.lora_r, lora_alpha=run.lora_alpha, target_modules=run.target_modules,
                       lora_dropout=run.lora_dropout, use_rslora=run.peft_use_rslora)
            train_config(run)

    @LOADER
    @given(st.one_of(mutated(good), mangled_text(json.dumps(good))))
    def run(doc):
        expect_ok_or_error(load_and_build, _write(p, doc))

    run()


def test_fuzz_jsonl_loader(world, tmp_path_factory):
    from minilora.data import load_jsonl

    good = open(world["jsonl"], "rb").read()
    p = str(tmp_path_factory.mktemp("jsonl") / "rows.jsonl")
    line = st.one_of(JSON_VALUE.map(json.dumps), st.text(max_size=20))

    @LOADER
    @given(st.one_of(mangled_text(good), st.binary(max_size=100),
                     st.lists(line, max_size=4).map(lambda ls: "\n".join(ls).encode())))
    def run(data):
        rows = expect_ok_or_error(load_jsonl, _write(p, data))
        if rows is not None:
            assert rows and all(isinstance(r["context"], str) and isinstance(r["target"], str) for r in rows)

    run()


def test_fuzz_checkpoint_state(world, tmp_path_factory):
    """A mutated state.json of a training checkpoint: resuming either works or raises MiniLoraError."""
    import shutil

    import minilora.training.loop as train_mod
    from minilora.adapters import LoraConfig, add_lora
    from minilora.config import LlamaConfig
    from minilora.model import LlamaForCausalLM
    from minilora.training.checkpoint import load_checkpoint

    cfg = LlamaConfig(vocab_size=259, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    ex = [([256, 1 + i, 2, 3], [-100, -100, 2, 3]) for i in range(4)]
    tcfg = train_mod.TrainConfig(batch_size=2)

    def fresh():
        m = LlamaForCausalLM.init(cfg, seed=0)
        add_lora(m, LoraConfig(r=1, target_modules=["q_proj"]))
        return m

    src = tmp_path_factory.mktemp("ck") / "src"
    train_mod.fit(fresh(), ex, tcfg, progress=False, checkpoint_dir=src)
    good = json.loads((src / "state.json").read_text())
    dst = tmp_path_factory.mktemp("ck") / "dst"

    @LOADER
    @given(st.one_of(mutated(good), mangled_text(json.dumps(good))))
    def run(doc):
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
        _write(dst / "state.json", doc)
        expect_ok_or_error(load_checkpoint, str(dst))
        expect_ok_or_error(lambda: train_mod.fit(fresh(), ex, tcfg, progress=False, resume_from=dst))

    run()
