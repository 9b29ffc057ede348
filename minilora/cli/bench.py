"""Benchmark minilora: against PyTorch (same Llama, same weights, same threads), LoRA against full
fine-tuning, merged and unmerged latency, the KV cache, param-calc's startup. One run, medians.

Examples:
    minilora bench --json bench.json                # the full run: a few minutes on 2 cores
    minilora bench --preset tiny --json smoke.json  # a smoke run in seconds
    minilora bench --no-torch                       # skip PyTorch even if it is installed
    minilora bench --threads 2 --json bench2.json   # two BLAS threads (PyTorch gets two as well)
    python -m minilora.bench --json bench.json      # the same as `minilora bench`

The ratios are explained in docs/performance.md. PyTorch is optional: without it the two
train_step_vs_torch ratios are null and everything else still runs.
"""
from __future__ import annotations

from minilora.errors import MiniLoraError

NAME = "bench"
HELP = "benchmark against PyTorch, LoRA vs full fine-tuning, latency, KV cache (writes --json)"


def add_arguments(p):
    p.add_argument("--json", metavar="FILE", default=None, help="write the results to this JSON file")
    p.add_argument("--preset", choices=("full", "tiny"), default="full",
                   help="full: the issue's small and medium configs (default); tiny: a smoke run")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS threads; PyTorch gets the same (default 1: the reproducible setting on a "
                   "shared machine, where multi-threaded BLAS timings swing by several times)")
    p.add_argument("--no-torch", action="store_true", help="do not run the PyTorch comparison")
    p.add_argument("--quiet", action="store_true", help="print only the ratios table")


def run(args) -> int:
    if args.threads < 1:
        raise MiniLoraError(f"--threads must be >= 1, got {args.threads}")
    from minilora.bench import format_ratios, run_bench
    from minilora.io.atomic import write_json
    from minilora.io.destination import check_output_location

    if args.json:                                        # before the benchmark, not after it
        check_output_location(args.json, "file", what=f"--json {args.json}")

    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    result = run_bench(args.preset, use_torch=not args.no_torch, threads=args.threads, log=log)
    print(format_ratios(result))
    if args.json:
        write_json(args.json, result)
        log(f"wrote {args.json} ({result['wall_seconds']:.0f} s)")
    return 0
