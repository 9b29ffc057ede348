"""FinLoRA's run configs: a `finetune_configs.json` object of named runs.

    "sentiment_tiny_8bits_r8": {
      "base_model": "minilora/tiny-sentiment-base",   # or a folder path
      "dataset_path": "data/sentiment_train.jsonl",   # relative to the config file
      "lora_r": 8, "lora_alpha": 16, "quant_bits": 8,
      "learning_rate": 0.001, "num_epochs": 2, "batch_size": 8, "gradient_accumulation_steps": 2,
      "lora_dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj"], "peft_use_rslora": false
    }

This is the one parser of the format: `minilora train` and the demos use it with training=True,
`param-calc --finlora-config` with training=False (a parameter count needs only base_model,
quant_bits and the LoRA settings, so upstream configs without training keys count too).

Required keys: base_model and quant_bits; with training=True also dataset_path, learning_rate,
num_epochs, batch_size and gradient_accumulation_steps. lora_r defaults to 8 and lora_alpha to 16,
as in FinLoRA's finetune.py; target_modules defaults to q_proj, k_proj, v_proj (finetune.py's
fixed choice) and a run may set it. Every key is checked (type and range) and a bad one raises
MiniLoraError naming the run and the key. quant_bits 16 means an unquantized (float) base; 8 and 4
quantize the frozen weights, in minilora's optional quant_format (absmax by default; nf4, the GGUF
blocks q8_0 / q4_0 / q4_1, or gguf: keep a .gguf base's own blocks). peft_use_dora is read
(param-calc counts DoRA's magnitude vectors) but minilora does not train DoRA. train_on_inputs
(default false) makes the prompt tokens training targets too (by default the loss covers the
answer tokens only, see minilora.data.formats). Only the run asked for is parsed: a broken run
elsewhere in the file does not block it.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from minilora.errors import MiniLoraError

REQUIRED = ("base_model", "quant_bits")
TRAINING = ("dataset_path", "learning_rate", "num_epochs", "batch_size", "gradient_accumulation_steps")
OPTIONAL = {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj"],
            "peft_use_rslora": False, "peft_use_dora": False, "test_dataset_path": None, "seed": 0,
            "warmup_ratio": 0.1, "quant_format": "absmax", "train_on_inputs": False}
# minilora's own key: how quant_bits 8 / 4 store the frozen base (minilora.quant.formats, and "gguf":
# keep a .gguf base's own blocks). Spelled out here so that param-calc's path stays free of numpy.
QUANT_FORMATS = {"absmax": (4, 8), "nf4": (4,), "q8_0": (8,), "q4_0": (4,), "q4_1": (4,), "gguf": (4, 8)}


@dataclass
class FinLoraRun:
    name: str
    base_model: str
    quant_bits: int
    dataset_path: str | None = None               # the TRAINING keys are None only with training=False
    learning_rate: float | None = None
    num_epochs: int | None = None
    batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    lora_r: int = 8
    lora_alpha: float = 16
    lora_dropout: float = 0.0
    target_modules: object = ("q_proj", "k_proj", "v_proj")
    peft_use_rslora: bool = False
    peft_use_dora: bool = False
    test_dataset_path: str | None = None
    seed: int = 0
    warmup_ratio: float = 0.1
    quant_format: str = "absmax"                   # absmax, nf4, q8_0, q4_0, q4_1 or gguf (QUANT_FORMATS)
    train_on_inputs: bool = False                  # False: the loss covers the answer tokens only


def _num(run, key, value, kind, positive=True):
    ok = isinstance(value, kind) and not isinstance(value, bool) and (isinstance(value, int) or math.isfinite(value))
    if not ok or (positive and not value > 0):
        what = "a positive integer" if kind is int else "a positive finite number"
        raise MiniLoraError(f"run {run!r}: {key} must be {what}, got {value!r}")
    return value


def parse_run(name: str, d: dict, base_dir: str = ".", training: bool = True) -> FinLoraRun:
    """Validate one run's dict; paths are resolved against base_dir (the config file's folder).

    training=False (param-calc) does not require the training keys, but checks those present.
    """
    if not isinstance(d, dict):
        raise MiniLoraError(f"run {name!r}: expected an object, got {type(d).__name__}")
    missing = [k for k in REQUIRED + (TRAINING if training else ()) if k not in d]
    if missing:
        raise MiniLoraError(f"run {name!r}: missing key(s) {', '.join(missing)}")
    unknown = sorted(set(d) - set(REQUIRED) - set(TRAINING) - set(OPTIONAL))
    if unknown:
        raise MiniLoraError(f"run {name!r}: unknown key(s) {', '.join(map(repr, unknown))}")
    v = {**OPTIONAL, **{k: None for k in TRAINING}, **d}
    _check_numbers(name, v, training)
    _check_flags_and_names(name, v, training)
    for k in ("dataset_path", "test_dataset_path"):
        if v[k] and not os.path.isabs(v[k]):
            v[k] = os.path.normpath(os.path.join(base_dir, v[k]))
    return FinLoraRun(name=name, **v)


def _check_numbers(name: str, v: dict, training: bool):
    """Ranks, counts, rates and ratios: type and range (a training key may be absent unless training)."""
    for k in ("lora_r", "num_epochs", "batch_size", "gradient_accumulation_steps"):
        if v[k] is not None or training:
            _num(name, k, v[k], int)
    for k in ("learning_rate", "lora_alpha"):
        if v[k] is not None or training:
            _num(name, k, v[k], (int, float))
    if type(v["quant_bits"]) is not int or v["quant_bits"] not in (4, 8, 16):
        raise MiniLoraError(f"run {name!r}: quant_bits must be 4, 8 or 16, got {v['quant_bits']!r}")
    fmt = v["quant_format"]
    if not isinstance(fmt, str) or fmt not in QUANT_FORMATS:
        raise MiniLoraError(f"run {name!r}: quant_format must be one of {', '.join(QUANT_FORMATS)}, got {fmt!r}")
    if v["quant_bits"] != 16 and v["quant_bits"] not in QUANT_FORMATS[fmt]:
        raise MiniLoraError(f"run {name!r}: quant_format {fmt} stores {QUANT_FORMATS[fmt][0]} bits, "
                            f"but quant_bits is {v['quant_bits']}")
    for k in ("lora_dropout", "warmup_ratio"):
        if not isinstance(v[k], (int, float)) or isinstance(v[k], bool) or not 0 <= v[k] < 1:
            raise MiniLoraError(f"run {name!r}: {k} must be in [0, 1), got {v[k]!r}")
    if type(v["seed"]) is not int or v["seed"] < 0:
        raise MiniLoraError(f"run {name!r}: seed must be a non-negative integer, got {v['seed']!r}")


def _check_flags_and_names(name: str, v: dict, training: bool):
    """Booleans, target_modules and the path strings."""
    for k in ("peft_use_rslora", "peft_use_dora", "train_on_inputs"):
        if not isinstance(v[k], bool):
            raise MiniLoraError(f"run {name!r}: {k} must be true or false, got {v[k]!r}")
    if training and v["peft_use_dora"]:
        raise MiniLoraError(f"run {name!r}: peft_use_dora is true, but minilora trains plain LoRA only "
                            "(param-calc counts DoRA runs)")
    t = v["target_modules"]
    if not (isinstance(t, str) and t) and not (isinstance(t, list) and t and all(isinstance(x, str) and x for x in t)):
        raise MiniLoraError(f"run {name!r}: target_modules must be a non-empty list of module names, "
                            f"'all-linear' or a regex, got {t!r}")
    for k in ("base_model", "dataset_path"):
        if (v[k] is not None or training) and (not isinstance(v[k], str) or not v[k]):
            raise MiniLoraError(f"run {name!r}: {k} must be a non-empty string, got {v[k]!r}")
    if v["test_dataset_path"] is not None and (not isinstance(v["test_dataset_path"], str)
                                               or not v["test_dataset_path"]):
        raise MiniLoraError(f"run {name!r}: test_dataset_path must be a non-empty string or null, "
                            f"got {v['test_dataset_path']!r}")


def _read_runs(path) -> dict:
    from minilora.io.jsonfile import read_json

    d = read_json(path)
    if not d:
        raise MiniLoraError(f"{path}: no runs defined")
    return d


def load_runs(path, training: bool = True) -> dict:
    """{run name: FinLoraRun} for every run of a finetune_configs.json file (each must be valid)."""
    base = os.path.dirname(os.path.abspath(path))
    return {name: parse_run(name, run, base, training) for name, run in _read_runs(path).items()}


def run_names(path) -> list:
    """The run names of a finetune_configs.json file, in file order (nothing parsed)."""
    return list(_read_runs(path))


def get_run(path, name: str, training: bool = True) -> FinLoraRun:
    """One run of the file, parsed and checked; the other runs are not parsed."""
    d = _read_runs(path)
    if name not in d:
        names = list(d)
        more = f" ... ({len(names)} runs)" if len(names) > 8 else ""
        raise MiniLoraError(f"{path}: no run named {name!r}; available: {', '.join(sorted(names)[:8])}{more}")
    return parse_run(name, d[name], os.path.dirname(os.path.abspath(path)), training)
