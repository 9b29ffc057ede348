"""The `minilora` command line.

Each subcommand is one module beside this one (NAME, HELP, add_arguments(parser), run(args) -> int);
modules import their heavy dependencies inside run(), so `minilora --help` stays fast.

Examples:
    minilora demo                                   # the main job: fine-tune the tiny Llama with LoRA
    minilora train --config configs/finetune_configs.json --run sentiment_tiny_8bits_r8
    minilora generate MODEL --prompt "Hello"

Bad input prints one line on stderr and exits with code 2.
"""
from __future__ import annotations

import argparse
import os
import sys

from minilora.errors import MiniLoraError


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

    for mod in _command_modules():
        c = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(c)
        COMMANDS[mod.NAME] = mod.run
        if hasattr(mod, "blas_threads"):
            THREADS[mod.NAME] = mod.blas_threads
    return p


def _command_modules():
    """The subcommand modules beside this one in minilora/cli (demo, train, merge, generate, ...)."""
    import importlib
    import pkgutil

    from minilora import cli

    return [importlib.import_module(f"{cli.__name__}.{m.name}")
            for m in sorted(pkgutil.iter_modules(cli.__path__), key=lambda m: m.name) if m.name != "main"]


COMMANDS: dict = {}     # NAME -> run, filled by build_parser from the subcommand modules
THREADS: dict = {}      # NAME -> blas_threads(args), for the modules that define one


def main(argv=None) -> int:
    # One BLAS thread per process unless the caller or the command chose otherwise: minilora's tiny
    # matrices are small, where a second OpenBLAS thread mostly spins, and the tiny demo runs one
    # process per core; a command module may ask for more (blas_threads(args), e.g. the real-model
    # demo). This must happen before numpy is first imported: parsing imports no numpy.
    from minilora.io.console import check_stdout, finish_stdout, stdout_error

    parser = build_parser()
    try:
        check_stdout()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(THREADS.get(args.command, lambda a: 1)(args)))
        code = COMMANDS[args.command](args)
        finish_stdout()
        return code
    except MiniLoraError as e:
        return _fail(e)
    except OSError as e:                     # a file or standard output that could not be written
        return _fail(stdout_error(e) or MiniLoraError(f"{e.filename + ': ' if e.filename else ''}"
                                                      f"{e.strerror or e}"))
    except KeyboardInterrupt as e:
        detail = " ".join(str(e).split())          # a training run says where its checkpoint went
        print(f"minilora: interrupted{'; ' + detail if detail else ''}", file=sys.stderr)
        return 130


def _fail(e: MiniLoraError) -> int:
    msg = " ".join(str(e).split())           # one line, even when an argument holds a newline
    print(f"minilora: error: {msg}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
