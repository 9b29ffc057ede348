"""The main job: fine-tune the tiny Llama with LoRA (r = 1, 2, 4, 8) and fully, merge, save, compare.

Examples:
    minilora demo                   # the whole table, about 2.5 minutes on 2 cores
    minilora demo --quick           # a shorter run of the same steps
"""
from __future__ import annotations

from minilora.errors import MiniLoraError

NAME = "demo"
HELP = "fine-tune the tiny Llama: LoRA vs full fine-tuning, merge, save"


def add_arguments(p):
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--quick", action="store_true", help="fewer rows and ranks: a smoke run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--workers", type=int, default=None,
                   help="fine-tunes run in parallel, one process each (default: the number of cores, at most 5)")


def run(args) -> int:
    from minilora.io.destination import check_output_location
    from minilora.runs.demo import run_demo

    if args.workers is not None and args.workers < 1:
        raise MiniLoraError(f"--workers must be >= 1, got {args.workers}")
    check_output_location(args.out, "folder", what=f"--out {args.out}")     # a folder, writable: before the work
    kw = dict(max_train=480, max_test=90, ranks=(2,)) if args.quick else {}
    run_demo(out_dir=args.out, progress=not args.no_progress, workers=args.workers, **kw)
    return 0
