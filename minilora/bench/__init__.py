"""The benchmark: harness (ratios measured in one run), its models, timing tools, the PyTorch reference."""
from minilora.bench.harness import format_ratios, run_bench

__all__ = ["format_ratios", "run_bench"]
