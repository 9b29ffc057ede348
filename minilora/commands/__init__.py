"""Subcommands of `minilora`: each module defines NAME, HELP, add_arguments(parser) and run(args) -> int.

Modules import their heavy dependencies inside run(), so `minilora --help` stays fast.
"""
