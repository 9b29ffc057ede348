"""What a LoRA adapter learned (Hu et al., 2021, section 7), and two labs.

Examples:
    minilora analyze out/adapter --out report            # spectra, effective ranks
    minilora analyze out/a --vs out/b --out report       # + phi heatmaps (Figures 3-4)
    minilora analyze out/a --base path/to/hf_model --out report   # + amplification (Table 7)
    minilora analyze --lab intrinsic-rank --out lab      # loss and phi against the LoRA rank
    minilora analyze --lab precision --out lab           # merge error in float64/32/16, 8/4-bit
    minilora analyze --compare-ranks 8,64 --out cmp      # train r=8, r=64 and a 2nd seed, compare

An adapter is a PEFT folder (adapter_config.json + adapter_model.safetensors), from minilora or
from PEFT. --base defaults to the shipped tiny base when the adapter's base_model_name_or_path is
minilora/tiny-sentiment-base. Every mode writes summary.json, summary.md and PNG plots into --out.
"""
from __future__ import annotations

import os
import time

from minilora.errors import MiniLoraError

NAME = "analyze"
HELP = "spectra, subspace similarity (phi) and amplification of LoRA adapters; the labs"
LABS = ("intrinsic-rank", "precision")


def add_arguments(p):
    p.add_argument("adapter", nargs="?", metavar="ADAPTER_DIR", help="a PEFT adapter folder")
    p.add_argument("--out", required=True, help="output folder for plots and summaries")
    p.add_argument("--vs", metavar="OTHER_ADAPTER_DIR", help="compare subspaces with this adapter")
    p.add_argument("--base", metavar="DIR", help="the base model (Hugging Face folder) for the "
                   "amplification table (default: the shipped tiny base if the adapter names it)")
    p.add_argument("--lab", choices=LABS, help="run a lab instead of analyzing an adapter")
    p.add_argument("--compare-ranks", metavar="R1,R2", help="train LoRA at ranks R1 and R2 (and R1 "
                   "with a second seed) on the tiny model, then compare their subspaces")
    p.add_argument("--seeds", default="0,1", help="the two seeds of --compare-ranks (default 0,1)")
    p.add_argument("--targets", default="q_proj,v_proj",
                   help="target modules of --compare-ranks (default q_proj,v_proj, as the paper)")
    p.add_argument("--config", default=None, help="finetune_configs.json for --compare-ranks "
                   "(default: the shipped one)")
    p.add_argument("--run", default="sentiment_tiny_8bits_r8",
                   help="run of that config whose data and hyperparameters are used")
    p.add_argument("--max-train", type=int, default=480,
                   help="training rows for --compare-ranks (default 480; 0: all)")
    p.add_argument("--epochs", type=int, default=1, help="epochs for --compare-ranks (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the labs (default 0)")
    p.add_argument("--max-plots", type=int, default=8, help="modules shown per plot (default 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    modes = [m for m in (args.adapter, args.lab, args.compare_ranks) if m is not None]
    if len(modes) != 1:
        raise MiniLoraError("give exactly one of ADAPTER_DIR, --lab or --compare-ranks")
    if args.adapter is None and (args.vs or args.base):
        raise MiniLoraError("--vs and --base go with ADAPTER_DIR")
    if args.max_plots < 1:
        raise MiniLoraError(f"--max-plots must be >= 1, got {args.max_plots}")
    from numpy.linalg import LinAlgError

    from minilora.io.destination import check_output_location

    check_output_location(args.out, "folder", what=f"--out {args.out}")     # a writable folder, before the work
    try:
        if args.lab:
            return _lab(args)
        if args.compare_ranks:
            return _compare(args)
        return _adapter(args)
    except OSError as e:                                # a write that failed: one line, exit 2
        raise MiniLoraError(f"cannot write {e.filename or args.out}: {e.strerror}") from None
    except LinAlgError as e:                            # an SVD or QR that did not converge
        raise MiniLoraError(f"the analysis failed: {e}") from None


def _base_weights(adapter, base):
    """(weights, where, why-not) for the amplification table."""
    from minilora.io import load_weights
    from minilora.runs.recipes import BASE_NAME, base_dir

    if base is None and adapter.base_model == BASE_NAME:
        base = base_dir()
    if base is None:
        return None, None, (f"no --base given and base_model_name_or_path "
                            f"{adapter.base_model!r} is not {BASE_NAME!r}")
    if not os.path.isdir(base):
        raise MiniLoraError(f"--base {base}: no such folder")
    return load_weights(base), base, None


def _adapter(args) -> int:
    from minilora.analysis.report import analyze_adapter, write_report
    from minilora.io.peft import read_adapter_factors

    adapter = read_adapter_factors(args.adapter)
    other = read_adapter_factors(args.vs) if args.vs else None
    weights, base, why = _base_weights(adapter, args.base)
    summary, grids = analyze_adapter(adapter, other, weights, base)
    if why:
        summary["amplification_skipped"] = why
    write_report(args.out, summary, grids, args.max_plots)
    _print_adapter(summary)
    print(f"wrote {args.out}/summary.json, summary.md and {len(summary['files'])} other file(s)")
    return 0


def _print_adapter(summary):
    for row in summary["spectra"]:
        print(f"{row['module']}: r={row['r']} |dW|_F={row['fro']:.4g} entropy rank "
              f"{row['entropy_rank']:.2f}, 90%-energy rank {row['energy_rank_0.9']}")
    for row in (summary["vs"] or {}).get("rows", []):
        vals = ", ".join(f"{k} {row[k]['phi_11']:.3f}" for k in ("A", "right", "left") if row[k])
        print(f"{row['module']}: phi(1,1) {vals} (chance 1/d_in = {1 / row['d_in']:.4f})")
    for row in (summary["amplification"] or {}).get("rows", []):
        print(f"{row['module']}: amplification {row['amplification']:.3g} "
              f"(|dW|_F {row['delta_fro']:.3g}, |U^T W V|_F {row['proj_delta']:.3g})")
    if summary.get("amplification_skipped"):
        print(f"amplification skipped: {summary['amplification_skipped']}")


def _lab(args) -> int:
    from minilora.analysis import intrinsic_rank_lab, precision_lab, save_intrinsic_rank_lab, save_precision_lab
    from minilora.analysis.labs_report import intrinsic_rank_markdown, precision_markdown
    from minilora.io.atomic import write_json, write_text

    t0, j = time.perf_counter(), os.path.join
    if args.lab == "intrinsic-rank":
        res = intrinsic_rank_lab(seed=args.seed)
        plot, md = save_intrinsic_rank_lab(res, j(args.out, "intrinsic_rank.png")), intrinsic_rank_markdown(res)
    else:
        res = precision_lab(seed=args.seed)
        plot, md = save_precision_lab(res, j(args.out, "precision.png")), precision_markdown(res)
    res = {"lab": args.lab, "command": f"minilora analyze --lab {args.lab} --seed {args.seed}",
           **res, "seconds": time.perf_counter() - t0, "files": [os.path.basename(plot)]}
    write_json(j(args.out, "summary.json"), res)
    write_text(j(args.out, "summary.md"), md)
    print(md, end="")
    print(f"wrote {plot}, {j(args.out, 'summary.json')}, summary.md ({res['seconds']:.1f}s)")
    return 0


def _ints(text, what, n=2):
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != n or len(set(vals)) != n:
        raise MiniLoraError(f"{what} must be {n} different integers separated by a comma, got {text!r}")
    return vals


def _compare(args) -> int:
    from dataclasses import replace

    from minilora.analysis.compare import compare_ranks
    from minilora.runs.finlora import get_run
    from minilora.runs.recipes import default_config_path, resolve_base, train_config

    ranks = _ints(args.compare_ranks, "--compare-ranks")
    seeds = _ints(args.seeds, "--seeds")
    if min(ranks) < 1:
        raise MiniLoraError(f"--compare-ranks must be positive, got {args.compare_ranks}")
    if args.max_train < 0 or args.epochs < 1:
        raise MiniLoraError("--max-train must be >= 0 and --epochs >= 1")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets:
        raise MiniLoraError("--targets is empty")
    run = get_run(args.config or default_config_path(), args.run)
    cfg = replace(train_config(run), num_epochs=args.epochs)
    compare_ranks(args.out, ranks, seeds, targets, run, resolve_base(run.base_model), cfg,
                  max_train=args.max_train or None, max_plots=args.max_plots,
                  progress=not args.no_progress)
    return 0
