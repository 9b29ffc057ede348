"""The `minilora` command line.

Examples:
    minilora demo                       # the main job: fine-tune a tiny Llama with LoRA
    minilora demo-linear                # one LoRA layer learns a planted low-rank update

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
    for name in ("demo", "demo-linear"):
        d = sub.add_parser(name, help="one LoRA layer learns a planted low-rank update")
        d.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
        d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p


def _demo_linear(args) -> int:
    from .demo_linear import run_linear_demo

    if args.steps < 1:
        raise MiniLoraError(f"--steps must be >= 1, got {args.steps}")
    out = run_linear_demo(steps=args.steps, seed=args.seed)
    ok = out["zero_at_init"] and out["losses"][-1] < out["losses"][0] and out["merge_err"] < 1e-10
    return 0 if ok else 1


COMMANDS = {"demo": _demo_linear, "demo-linear": _demo_linear}


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
