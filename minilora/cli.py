"""The `minilora` command line.

Examples:
    minilora demo                                   # the main job: fine-tune the tiny Llama with LoRA
    minilora demo --quick                           # a shorter run of the same steps
    minilora demo-linear                            # one LoRA layer learns a planted low-rank update
    minilora train --config configs/finetune_configs.json --run sentiment_tiny_8bits_r8
    minilora train --config configs/finetune_configs.json --run sentiment_tiny_8bits_r8 \
        --resume out/sentiment_tiny_8bits_r8.ckpt        # continue after Ctrl-C, exactly

Bad input prints one line on stderr and exits with code 2.
"""
from __future__ import annotations

import argparse
import os
import sys

from .errors import MiniLoraError


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise MiniLoraError(message)

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = super().parse_known_args(args, namespace)
        for a in self._actions:           # Python < 3.12 turns `X -- --` into X=[] for a one-value positional
            if not a.option_strings and a.nargs is None and isinstance(getattr(ns, a.dest, None), list):
                self.error(f"argument {a.metavar or a.dest}: expected one argument")
        return ns, rest


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="minilora", description="LoRA from scratch in NumPy.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser("demo", help="fine-tune the tiny Llama: LoRA vs full fine-tuning, merge, save")
    d.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    d.add_argument("--quick", action="store_true", help="fewer rows and ranks: a smoke run")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.add_argument("--workers", type=int, default=None,
                   help="fine-tunes run in parallel, one process each (default: the number of cores, at most 5)")

    d = sub.add_parser("demo-linear", help="one LoRA layer learns a planted low-rank update")
    d.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    t = sub.add_parser("train", help="run a FinLoRA-style config: LoRA fine-tuning, then save the adapter")
    t.add_argument("--config", required=True, help="path of a finetune_configs.json")
    t.add_argument("--run", required=True, help="name of the run in that file")
    t.add_argument("--out", default=None, help="adapter output folder (default out/<run>)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--checkpoint-dir", default=None,
                   help="resumable checkpoint folder, saved every --checkpoint-every steps, at the end and "
                        "on Ctrl-C (default <out>.ckpt, or the --resume folder)")
    t.add_argument("--checkpoint-every", type=int, default=50,
                   help="optimizer steps between checkpoints (default 50; 0: only at the end and on Ctrl-C)")
    t.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the run from this checkpoint folder, exactly where it stopped")

    for mod in _command_modules():
        c = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(c)
        COMMANDS[mod.NAME] = mod.run
    return p


def _command_modules():
    """The subcommand modules under minilora/commands (merge, generate, analyze, bench, ...)."""
    import importlib
    import pkgutil

    from . import commands

    return [importlib.import_module(f"{commands.__name__}.{m.name}")
            for m in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name)]


def _demo(args) -> int:
    from .demo import run_demo

    if args.workers is not None and args.workers < 1:
        raise MiniLoraError(f"--workers must be >= 1, got {args.workers}")
    kw = dict(max_train=480, max_test=90, ranks=(2,)) if args.quick else {}
    run_demo(out_dir=args.out, progress=not args.no_progress, workers=args.workers, **kw)
    return 0


def _demo_linear(args) -> int:
    from .demo_linear import run_linear_demo

    if args.steps < 1:
        raise MiniLoraError(f"--steps must be >= 1, got {args.steps}")
    out = run_linear_demo(steps=args.steps, seed=args.seed)
    ok = out["zero_at_init"] and out["losses"][-1] < out["losses"][0] and out["merge_err"] < 1e-10
    return 0 if ok else 1


def _train(args) -> int:
    import os

    from .demo import train_run

    if args.checkpoint_every < 0:
        raise MiniLoraError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    if args.resume is not None and not os.path.isdir(args.resume):
        raise MiniLoraError(f"--resume {args.resume}: no such checkpoint folder")
    out = args.out or os.path.join("out", args.run)
    ckpt = args.checkpoint_dir or args.resume or out.rstrip("/\\") + ".ckpt"
    train_run(args.config, args.run, out, progress=not args.no_progress, checkpoint_dir=ckpt,
              checkpoint_every=args.checkpoint_every, resume_from=args.resume)
    return 0


COMMANDS = {"demo": _demo, "demo-linear": _demo_linear, "train": _train}


def main(argv=None) -> int:
    # One BLAS thread per process unless the caller chose otherwise: minilora's matrices are small,
    # where a second OpenBLAS thread mostly spins, and the demo runs one process per core. This must
    # happen before numpy is first imported (nothing above imports it).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return COMMANDS[args.command](args)
    except MiniLoraError as e:
        msg = " ".join(str(e).split())       # one line, even when an argument holds a newline
        print(f"minilora: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        detail = " ".join(str(e).split())          # a training run says where its checkpoint went
        print(f"minilora: interrupted{'; ' + detail if detail else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
