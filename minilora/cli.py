"""The `minilora` command line.

Examples:
    minilora demo                                   # the main job: fine-tune the tiny Llama with LoRA
    minilora demo --quick                           # a shorter run of the same steps
    minilora demo-linear                            # one LoRA layer learns a planted low-rank update
    minilora train --config configs/finetune_configs.json --run sentiment_tiny_8bits_r8

Bad input prints one line on stderr and exits with code 2.
"""
from __future__ import annotations

import argparse
import sys

from .errors import MiniLoraError


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise MiniLoraError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="minilora", description="LoRA from scratch in NumPy.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser("demo", help="fine-tune the tiny Llama: LoRA vs full fine-tuning, merge, save")
    d.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    d.add_argument("--quick", action="store_true", help="fewer rows and ranks: a smoke run")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")

    d = sub.add_parser("demo-linear", help="one LoRA layer learns a planted low-rank update")
    d.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    t = sub.add_parser("train", help="run a FinLoRA-style config: LoRA fine-tuning, then save the adapter")
    t.add_argument("--config", required=True, help="path of a finetune_configs.json")
    t.add_argument("--run", required=True, help="name of the run in that file")
    t.add_argument("--out", default=None, help="adapter output folder (default out/<run>)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _demo(args) -> int:
    from .demo import run_demo

    kw = dict(max_train=480, max_test=90, ranks=(2,)) if args.quick else {}
    run_demo(out_dir=args.out, progress=not args.no_progress, **kw)
    return 0


def _demo_linear(args) -> int:
    from .demo_linear import run_linear_demo

    if args.steps < 1:
        raise MiniLoraError(f"--steps must be >= 1, got {args.steps}")
    out = run_linear_demo(steps=args.steps, seed=args.seed)
    ok = out["zero_at_init"] and out["losses"][-1] < out["losses"][0] and out["merge_err"] < 1e-10
    return 0 if ok else 1


def _train(args) -> int:
    from .demo import train_run

    train_run(args.config, args.run, args.out, progress=not args.no_progress)
    return 0


COMMANDS = {"demo": _demo, "demo-linear": _demo_linear, "train": _train}


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return COMMANDS[args.command](args)
    except MiniLoraError as e:
        print(f"minilora: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("minilora: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
