"""param-calc: exact LoRA parameter counts, memory and adapter size, as PEFT would report them.

Examples:
    param-calc --model llama-3.1-70b --rank 4 --targets q_proj,k_proj,v_proj
    param-calc --config path/config.json --rank 8 --targets all-linear --json
    param-calc --finlora-config finetune_configs.json --run sentiment_llama_3_1_8b_8bits_r8
    param-calc --model gpt2 --targets c_proj --rank 16            # attn.c_proj and mlp.c_proj
    param-calc --model llama-3.1-8b --targets all-linear --rank-pattern down_proj=32
    param-calc --model qwen2.5-7b --ranks 1,2,4,8,16,64 --plot sweep.png
    param-calc --model llama-3.1-8b --quant-bits 4 --json --out count.json
    param-calc --list-models
    param-calc explain              # the seed's derivation and the LoRA paper's GPT-3 figures
    python -m param_calc --help

A bad argument prints one line on stderr and exits with code 2. No numpy is imported; matplotlib
only with --plot.
"""
from __future__ import annotations

import argparse
import json
import sys

from param_calc.errors import ParamCalcError

DEFAULT_SWEEP = (1, 2, 4, 8, 16, 32, 64)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as an exception, so main can print one line."""

    def error(self, message):
        raise _UsageError(message)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return v


def _rank_list(text: str) -> list:
    ranks = [_positive_int(t.strip()) for t in text.split(",") if t.strip()]
    if not ranks:
        raise argparse.ArgumentTypeError("expected ranks like 1,2,4,8")
    return sorted(set(ranks))


def _name_list(text: str) -> list:
    names = [t.strip() for t in text.split(",")]
    if not names or any(not t for t in names):
        raise argparse.ArgumentTypeError(f"expected comma-separated module names, got {text!r}")
    return names


def _rank_pattern(text: str) -> dict:
    out = {}
    for item in text.split(","):
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"expected NAME=RANK[,NAME=RANK...], got {text!r}")
        out[key.strip()] = _positive_int(val.strip())
    return out


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="param-calc", description=__doc__.split("\n")[0],
                epilog="Subcommand: 'param-calc explain [--topic seed|gpt3|all]' recomputes the seed "
                       "document's (FinLoRA's \"Vanilla LoRA\" page) derivation and the LoRA paper's GPT-3 figures.",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("model (choose one)")
    src.add_argument("--model", metavar="NAME",
                     help="a preset name or Hugging Face id, e.g. llama-3.1-70b, meta-llama/Llama-3.1-8B-Instruct")
    src.add_argument("--config", metavar="PATH", help="a Hugging Face config.json (llama, mistral, qwen2, gpt2)")
    src.add_argument("--finlora-config", metavar="PATH",
                     help="a FinLoRA finetune_configs.json; its run sets base model, rank, alpha, quant_bits")
    src.add_argument("--run", metavar="NAME", help="the run in --finlora-config (optional if it has one run)")
    src.add_argument("--list-models", action="store_true", help="list the presets and their base counts")
    lora = p.add_argument_group("LoRA configuration (PEFT LoraConfig)")
    lora.add_argument("--rank", "-r", type=_positive_int, metavar="R",
                      help="LoRA rank r (default 8 as in PEFT, or the FinLoRA run's lora_r)")
    lora.add_argument("--alpha", type=_positive_float, metavar="A",
                      help="lora_alpha, shown as the scale alpha/r; counts do not depend on it "
                           "(default 8 as in PEFT, or the run's lora_alpha)")
    tg = lora.add_mutually_exclusive_group()
    tg.add_argument("--targets", "-t", type=_name_list, metavar="LIST",
                    help="comma-separated module names matched like PEFT (a name matches every module path "
                         "ending in it), or all-linear (every linear but the output head); default: "
                         "PEFT's default for the model type (q_proj,v_proj; GPT-2 c_attn)")
    tg.add_argument("--target-regex", metavar="REGEX",
                    help="one regular expression that must match a whole module path (PEFT's str form)")
    lora.add_argument("--exclude", type=_name_list, metavar="LIST",
                      help="module names to leave out, matched like --targets (PEFT exclude_modules)")
    lora.add_argument("--rank-pattern", type=_rank_pattern, metavar="NAME=R,...",
                      help="per-module rank overrides as PEFT's rank_pattern, e.g. q_proj=16,layers.0.mlp.up_proj=4")
    lora.add_argument("--dora", action="store_true", help="DoRA: add a magnitude vector (out_features) per module")
    mem = p.add_argument_group("memory estimate")
    mem.add_argument("--quant-bits", type=int, choices=(16, 8, 4),
                     help="bits of the frozen base weights (default 16, or the run's quant_bits)")
    mem.add_argument("--adapter-dtype", choices=("fp32", "bf16", "fp16"), default="fp32",
                     help="dtype of LoRA weights, gradients and the adapter file (default fp32, PEFT's choice)")
    mem.add_argument("--optimizer", choices=("adamw", "adamw-8bit"),
                     help="optimizer states: adamw (8 bytes per LoRA parameter) or adamw-8bit (2); "
                          "default adamw, or adamw-8bit for a FinLoRA run as FinLoRA trains")
    out = p.add_argument_group("output")
    out.add_argument("--ranks", type=_rank_list, metavar="LIST", help="rank sweep, e.g. 1,2,4,8,16,64")
    out.add_argument("--plot", metavar="FILE.png",
                     help="write the rank-sweep chart (png, svg or pdf; needs matplotlib); "
                          f"sweeps {','.join(map(str, DEFAULT_SWEEP))} unless --ranks is given")
    out.add_argument("--json", action="store_true",
                     help="print JSON (base_params, lora_params, peft_all_params, ratio, trainable_percent, "
                          "per_module, memory, ...) instead of the table")
    out.add_argument("--out", "-o", metavar="FILE", help="write the report or JSON to FILE (atomically) "
                                                         "instead of standard output")
    return p


def build_explain_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="param-calc explain",
                description="Recompute the seed document's (FinLoRA's \"Vanilla LoRA\" page) Llama-3.1-70B derivation "
                            "and the LoRA paper's "
                            "GPT-3 trainable-parameter and checkpoint-size figures, with the differences.")
    p.add_argument("--topic", choices=("seed", "gpt3", "all"), default="all",
                   help="which derivation to show (default all)")
    p.add_argument("--out", "-o", metavar="FILE", help="write the text to FILE (atomically)")
    return p


def _check_out(path: str | None) -> None:
    """Before any work: --out is a writable place for a file (never a folder, link, device or FIFO)."""
    from minilora.io.console import check_stdout
    from minilora.io.destination import check_output_location

    if path:
        check_output_location(path, "file", what=f"--out {path}")
    else:
        check_stdout()


def _emit(text: str, path: str | None) -> None:
    if path:
        from minilora.io.atomic import write_text
        write_text(path, text if text.endswith("\n") else text + "\n")
    else:
        from minilora.io.console import finish_stdout
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        finish_stdout()


def _list_models(as_json: bool) -> str:
    from param_calc.architectures import build_architecture
    from param_calc.presets import PRESETS
    from param_calc.report import describe_arch

    rows, docs = [], []
    for name, (hf_id, cfg) in PRESETS.items():
        arch = build_architecture(cfg, name)
        docs.append({"name": name, "hf_id": hf_id, "model_type": arch.model_type,
                     "base_params": arch.base_params, "config": arch.config})
        rows.append([name, hf_id, f"{arch.base_params:,}", describe_arch(arch)])
    if as_json:
        return json.dumps(docs, indent=2)
    from param_calc.fmt import table
    return "\n".join(table(["preset", "source", "base params", "shape"], rows, right={2}))


def _run(args) -> str:
    from param_calc.counting import count_lora, max_rank
    from param_calc.inputs import from_config_json, from_finlora, from_preset
    from param_calc.report import render, to_json

    chosen = [o for o, v in (("--model", args.model), ("--config", args.config),
                             ("--finlora-config", args.finlora_config)) if v]
    if len(chosen) != 1:
        raise ParamCalcError("choose one model with --model, --config or --finlora-config" if not chosen
                             else f"choose only one of {', '.join(chosen)}")
    if args.run and not args.finlora_config:
        raise ParamCalcError("--run needs --finlora-config")
    if args.plot:
        from param_calc.plot import check_plot_path
        check_plot_path(args.plot)
    if args.model:
        source = from_preset(args.model)
    elif args.config:
        source = from_config_json(args.config)
    else:
        source = from_finlora(args.finlora_config, args.run)
    rank = args.rank or source.rank or 8
    alpha = args.alpha or source.alpha or 8
    quant_bits = args.quant_bits or source.quant_bits or 16
    optimizer = args.optimizer or ("adamw-8bit" if source.run else "adamw")
    targets = args.targets if args.targets is not None else (args.target_regex or source.targets)
    if targets is not None and not isinstance(targets, str) and len(targets) == 1 \
            and targets[0].lower() in ("all-linear", "default"):
        targets = targets[0].lower()
    if targets == "default":
        targets = None
    count = count_lora(source.arch, rank, targets, args.rank_pattern, args.exclude, args.dora or source.dora)
    if args.ranks is None and args.plot:       # the default sweep stops at the largest rank the modules take
        top = max_rank(source.arch, targets, args.exclude)
        ranks = sorted({r for r in DEFAULT_SWEEP if r <= top} | {rank})
    else:
        ranks = args.ranks
    doc = to_json(count, hf_id=source.hf_id, alpha=alpha, quant_bits=quant_bits, adapter_dtype=args.adapter_dtype,
                  optimizer=optimizer, ranks=ranks, run=source.run)
    if args.plot:
        from param_calc.plot import plot_sweep
        title = f"{count.arch.name}: LoRA on {doc['square_formula']['L']} modules " \
                f"({', '.join(dict.fromkeys(r['module'] for r in doc['per_module']))})"
        plot_sweep(doc["sweep"], title, args.plot)
    text = json.dumps(doc, indent=2) if args.json else render(doc, count)
    if args.plot and not args.json:
        text += f"\n\nchart written to {args.plot}"
    return text


def main(argv=None) -> int:
    """Entry point of param-calc; returns the exit code (0 ok, 2 bad input)."""
    from minilora.errors import MiniLoraError
    from minilora.io.console import stdout_error

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "explain":
            args = build_explain_parser().parse_args(argv[1:])
            from param_calc.explain import explain_text
            _check_out(args.out)
            _emit(explain_text(args.topic), args.out)
            return 0
        args = build_parser().parse_args(argv)
        _check_out(args.out)
        if args.list_models:
            _emit(_list_models(args.json), args.out)
            return 0
        _emit(_run(args), args.out)
        return 0
    except (_UsageError, ParamCalcError, MiniLoraError) as e:
        return _fail(str(e))
    except OSError as e:
        err = stdout_error(e)
        return _fail(str(err) if err else f"{e.strerror or e}: {e.filename or ''}".rstrip(": "))
    except SystemExit as e:      # --help and --version exit through argparse
        return e.code if isinstance(e.code, int) else 0


def _fail(message: str) -> int:
    print(f"param-calc: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
