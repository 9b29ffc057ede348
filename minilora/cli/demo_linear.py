"""One LoRA layer learns a planted low-rank update: the smallest end-to-end check.

Example:
    minilora demo-linear --steps 300 --seed 0
"""
from __future__ import annotations

from minilora.errors import MiniLoraError

NAME = "demo-linear"
HELP = "one LoRA layer learns a planted low-rank update"


def add_arguments(p):
    p.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args) -> int:
    from minilora.runs.demo_linear import run_linear_demo

    if args.steps < 1:
        raise MiniLoraError(f"--steps must be >= 1, got {args.steps}")
    if args.seed < 0:
        raise MiniLoraError(f"--seed must be >= 0, got {args.seed}")
    out = run_linear_demo(steps=args.steps, seed=args.seed)
    ok = out["zero_at_init"] and out["losses"][-1] < out["losses"][0] and out["merge_err"] < 1e-10
    return 0 if ok else 1
