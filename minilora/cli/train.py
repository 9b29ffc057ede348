"""A FinLoRA-style run: LoRA fine-tuning, then the adapter written in PEFT's format.

Examples:
    minilora train --config configs/finetune_configs.json --run sentiment_tiny_8bits_r8
    minilora train --config configs/finetune_configs.json --run sentiment_tiny_8bits_r8 \\
        --resume out/sentiment_tiny_8bits_r8.ckpt        # continue after Ctrl-C, exactly
"""
from __future__ import annotations

import os

from minilora.errors import MiniLoraError

NAME = "train"
HELP = "run a FinLoRA-style config: LoRA fine-tuning, then save the adapter"


def add_arguments(p):
    p.add_argument("--config", required=True, help="path of a finetune_configs.json")
    p.add_argument("--run", required=True, help="name of the run in that file")
    p.add_argument("--out", default=None, help="adapter output folder (default out/<run>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--checkpoint-dir", default=None,
                   help="resumable checkpoint folder, saved every --checkpoint-every steps, at the end and "
                        "on Ctrl-C (default <out>.ckpt, or the --resume folder)")
    p.add_argument("--checkpoint-every", type=int, default=50,
                   help="optimizer steps between checkpoints (default 50; 0: only at the end and on Ctrl-C)")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the run from this checkpoint folder, exactly where it stopped")


def check_destinations(config, run_name, out, ckpt, resume=None):
    """Before any work: --out (an adapter folder) and the checkpoint folder may be written, differ
    from each other and from every input (minilora.io.destination's rule, real paths compared)."""
    from minilora.io.destination import check_output_location
    from minilora.runs.finlora import get_run
    from minilora.runs.registry import resolve_base

    run = get_run(config, run_name)
    try:
        base = resolve_base(run.base_model, fetch_missing=False)
    except MiniLoraError:
        base = None                                  # train_run says what is wrong with it
    inputs = [config, run.dataset_path, run.test_dataset_path, base]
    check_output_location(out, "adapter", inputs=inputs + [resume], what=f"--out {out}")
    check_output_location(ckpt, "checkpoint", inputs=inputs, what=f"checkpoint folder {ckpt}")
    a, b = os.path.realpath(out), os.path.realpath(ckpt)
    if a == b or b.startswith(a + os.sep) or a.startswith(b + os.sep):
        raise MiniLoraError(f"--out {out} and the checkpoint folder {ckpt} must be separate folders")


def run(args) -> int:
    from minilora.io.atomic import recover_if_missing
    from minilora.runs.recipes import train_run

    if args.checkpoint_every < 0:
        raise MiniLoraError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    if args.resume is not None:
        recover_if_missing(args.resume)              # a save killed between its renames: finish it
        if not os.path.isdir(args.resume):
            raise MiniLoraError(f"--resume {args.resume}: no such checkpoint folder")
    out = args.out or os.path.join("out", args.run)
    ckpt = args.checkpoint_dir or args.resume or out.rstrip("/\\") + ".ckpt"
    check_destinations(args.config, args.run, out, ckpt, args.resume)
    train_run(args.config, args.run, out, progress=not args.no_progress, checkpoint_dir=ckpt,
              checkpoint_every=args.checkpoint_every, resume_from=args.resume)
    return 0
