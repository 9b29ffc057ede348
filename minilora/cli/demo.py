"""The main job: fine-tune the tiny Llama with LoRA (r = 1, 2, 4, 8) and fully, merge, save, compare;
or, with --model, LoRA on a real pretrained model (SmolLM2-135M-Instruct) over a quantized base.

Examples:
    minilora demo                                  # the tiny Llama's whole table, about 2.5 minutes on 2 cores
    minilora demo --quick                          # a shorter run of the same steps
    minilora demo --model smollm2-135m-instruct    # the real model (fetched if needed): zero-shot vs LoRA,
                                                   # answers before/after, merge check, PEFT adapter
    minilora demo --model smollm2-135m-instruct --quick
"""
from __future__ import annotations

import os

from minilora.errors import MiniLoraError

NAME = "demo"
HELP = "fine-tune with LoRA: the tiny Llama (LoRA vs full fine-tuning), or a real model with --model"


def add_arguments(p):
    which = p.add_mutually_exclusive_group()
    which.add_argument("--tiny", action="store_true", help="the tiny Llama demo (the default)")
    which.add_argument("--model", metavar="NAME", default=None,
                       help="a real model: registry name (smollm2-135m-instruct, fetched if needed), .gguf or "
                            "Hugging Face folder")
    p.add_argument("--out", default=None, help="output folder (default demo_out, or demo_real_out with --model)")
    p.add_argument("--quick", action="store_true", help="fewer rows (and ranks): a smoke run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--workers", type=int, default=None,
                   help="tiny demo: fine-tunes run in parallel, one process each (default: the number of cores)")


def blas_threads(args) -> int:
    """BLAS threads for this run (OPENBLAS_NUM_THREADS, when the caller has not set it).

    The tiny demo: one per process (its worker processes fill the cores). The real model: every core
    when the machine is otherwise idle (its matrices are large enough for threads to pay), else one:
    measured on a shared 2-core machine at load average 6.5, a SmolLM2 training step took 3.7 s of
    CPU (7.3 s wall) with one thread and 12.7 s of CPU (24 s wall) with two, whose threads spin
    while waiting for a core.
    """
    if not args.model:
        return 1
    cores = os.cpu_count() or 1
    try:
        idle = os.getloadavg()[0] < 0.5 * cores
    except OSError:                                        # no load average on this platform
        idle = True
    return cores if idle else 1


def run(args) -> int:
    if args.workers is not None and args.workers < 1:
        raise MiniLoraError(f"--workers must be >= 1, got {args.workers}")
    from minilora.io.destination import check_output_location

    out = args.out or ("demo_real_out" if args.model else "demo_out")
    check_output_location(out, "folder", what=f"--out {out}")     # a folder, writable: before the work
    if args.model:
        from minilora.runs.real_demo import run_real_demo

        kw = dict(max_train=48, max_test=12) if args.quick else {}
        run_real_demo(args.model, out_dir=out, progress=not args.no_progress, **kw)
        return 0
    from minilora.runs.demo import run_demo

    kw = dict(max_train=480, max_test=90, ranks=(2,)) if args.quick else {}
    run_demo(out_dir=out, progress=not args.no_progress, workers=args.workers, **kw)
    return 0
